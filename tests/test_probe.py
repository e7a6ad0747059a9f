"""The compiled per-epoch probe equals Keras' own eager losses and NumPy's norms, on both backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from workers.child.model import block_of, block_outputs, build_classifier, kernel_layers
from workers.child.probe import SPARSITY_THRESHOLD, EpochProbe
from workers.child.regularizers import RegularizerSet

SMALL = {"input_shape": (32, 32, 3), "num_classes": 10, "width": 0.25, "conv_bias": True}
CONFIGS = {
    "none": {},
    "every placement": {"kernel": {"kind": "l1_l2", "l1": 1e-4, "l2": 1e-3}, "bias": {"kind": "l2", "l2": 1e-2},
                        "activity": {"kind": "l1", "l1": 1e-3}},
    "custom kernel": {"kernel": {"kind": "custom", "fn": "tests.test_model:abs_max", "scale": 2.0},
                      "activity": {"kind": "l2", "l2": 1e-4}},
}


def eager_measurement(model: keras.Model, batch: np.ndarray) -> dict:
    """What the probe stands for, computed the slow way: Keras' eager losses, NumPy's norms."""
    model(batch, training=False)  # records the activity penalties of this batch, as the tutorial reads them
    reg = float(sum(float(keras.ops.convert_to_numpy(loss)) for loss in model.losses))
    groups: dict[str, list[np.ndarray]] = {}
    for name, variable in kernel_layers(model):
        groups.setdefault(block_of(name), []).append(np.abs(keras.ops.convert_to_numpy(variable)).ravel())
    blocks, small, total = {}, 0, 0
    for block, arrays in groups.items():
        w = np.concatenate(arrays).astype(np.float64)
        n_small = int((w < SPARSITY_THRESHOLD).sum())
        blocks[block] = {"l1": w.sum(), "l2": np.sqrt((w * w).sum()), "sparsity": n_small / w.size}
        small, total = small + n_small, total + w.size
    outputs = block_outputs(model)
    values = keras.Model(model.input, [layer.output for _, layer in outputs])(batch, training=False)
    for (name, _), value in zip(outputs, values, strict=True):
        blocks.setdefault(name, {})["activation"] = float(np.mean(np.abs(keras.ops.convert_to_numpy(value))))
    return {"reg_loss": reg, "sparsity": small / total, "blocks": blocks}


def compare(config: dict) -> list[str]:
    """Differences between the probe and :func:`eager_measurement`, before and after the weights change."""
    keras.utils.set_random_seed(0)
    model = build_classifier(**SMALL, regularizers=RegularizerSet.from_config(config))
    rng = np.random.default_rng(0)
    for v in model.weights:
        if v.name == "bias":  # biases start at zero, where a bias penalty is 0 whatever it does
            v.assign(rng.normal(size=v.shape).astype("float32"))
    batch = rng.random((8, 32, 32, 3), dtype=np.float32)
    probe = EpochProbe(model, batch)
    problems = []
    for step in ("initial", "after the weights change"):
        got = probe.measure()
        want = eager_measurement(model, batch)
        pairs = [("reg_loss", got.reg_loss, want["reg_loss"]), ("sparsity", got.sparsity, want["sparsity"])]
        assert set(got.blocks) == set(want["blocks"])
        for block, stats in want["blocks"].items():
            assert set(got.blocks[block]) == set(stats), block
            pairs += [(f"{block}.{key}", got.blocks[block][key], value) for key, value in stats.items()]
        problems += [f"{step}: {key} {a!r} != {b!r}" for key, a, b in pairs
                     if not np.isclose(a, b, rtol=2e-5, atol=1e-9)]
        # A traced function that had baked the weights in would answer the same again here.
        for _, variable in kernel_layers(model):
            variable.assign(keras.ops.convert_to_numpy(variable) * 3.0 - 1e-3)
    return problems


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_probe_equals_eager_keras_and_numpy(name):
    assert compare(CONFIGS[name]) == []


def test_probe_reg_loss_is_zero_without_penalties_and_block_norms_drop_activations():
    model = build_classifier(**SMALL)
    measured = EpochProbe(model, np.zeros((2, 32, 32, 3), np.float32)).measure()
    assert measured.reg_loss == 0.0
    norms = measured.block_norms()
    assert set(norms) == {block_of(name) for name, _ in kernel_layers(model)}
    assert all(set(stats) == {"l1", "l2", "sparsity"} for stats in norms.values())


@pytest.mark.slow
def test_probe_equals_eager_keras_under_jax():
    if os.environ.get("CI", "").lower() != "true":  # CI installs the dev extra, which carries jax
        pytest.importorskip("jax")
    code = ("import json, tests.test_probe as t, keras; assert keras.backend.backend() == 'jax'; "
            "print(json.dumps({name: t.compare(config) for name, config in t.CONFIGS.items()}))")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {name: [] for name in CONFIGS}
