"""The custom penalty the README's spec example names, computed by real Keras and applied in a model."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from workers.child.model import build_classifier  # noqa: E402
from workers.child.penalties import orthogonal  # noqa: E402
from workers.child.regularizers import RegularizerSet  # noqa: E402


def test_orthogonal_is_zero_for_orthonormal_filters_and_positive_otherwise() -> None:
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(27, 8)))
    conv = q.reshape(3, 3, 3, 8).astype("float32")
    assert float(keras.ops.convert_to_numpy(orthogonal(conv))) == pytest.approx(0.0, abs=1e-4)
    ones = np.ones((3, 3, 3, 8), dtype="float32")  # 8 equal filters of norm^2 27
    expected = 8 * (27 - 1) ** 2 + 56 * 27**2
    assert float(keras.ops.convert_to_numpy(orthogonal(ones))) == pytest.approx(expected, rel=1e-5)
    depthwise = np.ones((3, 3, 4, 1), dtype="float32")
    assert float(keras.ops.convert_to_numpy(orthogonal(depthwise))) > 0


def test_the_readme_kind_regularizes_every_kernel() -> None:
    """``"workers.penalties:orthogonal"`` as a spec kind: one scaled penalty per kernel of the classifier."""
    model = build_classifier(
        input_shape=(32, 32, 3),
        num_classes=10,
        width=0.25,
        regularizers=RegularizerSet.from_config(
            {"kernel": {"kind": "custom", "fn": "workers.penalties:orthogonal", "scale": 0.5}}
        ),
    )
    kernels = [v for v in model.weights if v.name == "kernel"]
    assert len(model.losses) == len(kernels) == 53
    expected = sum(0.5 * float(keras.ops.convert_to_numpy(orthogonal(k.value))) for k in kernels)
    total = sum(float(keras.ops.convert_to_numpy(x)) for x in model.losses)
    assert total == pytest.approx(expected, rel=1e-4)
