"""The MobileNetV2 bottleneck builder and the regularizer placements (no training)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from sweep.errors import TrialError
from workers.child.model import block_of, build_classifier, placement_layers
from workers.child.regularizers import Float32Activity, RegularizerSet, ScaledCallable, make_regularizer

SMALL = {"input_shape": (32, 32, 3), "num_classes": 10, "width": 0.25}


def abs_max(w):
    """A custom penalty no built-in regularizer computes (used through its import path)."""
    return keras.ops.max(keras.ops.abs(w))


def _weights(model: keras.Model, name: str) -> list[np.ndarray]:
    """All variables called ``name`` ("kernel" covers Conv2D, DepthwiseConv2D and Dense)."""
    return [keras.ops.convert_to_numpy(v) for v in model.weights if v.name == name]


def _total(losses: list) -> float:
    return float(sum(float(keras.ops.convert_to_numpy(x)) for x in losses))


def _randomize_biases(model: keras.Model, seed: int = 0) -> None:
    # Biases start at zero, where every penalty is 0 and a wrong placement would go unnoticed.
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if v.name == "bias":
            v.assign(rng.normal(size=v.shape).astype("float32"))


@pytest.mark.parametrize("width", [1.0, 0.5, 1.4])
def test_param_count_matches_keras_applications(width):
    ours = build_classifier(input_shape=(224, 224, 3), num_classes=1000, width=width)
    reference = keras.applications.MobileNetV2(weights=None, alpha=width, input_shape=(224, 224, 3))
    assert ours.count_params() == reference.count_params()
    assert ours.output_shape == (None, 1000)


PENALTIES = {
    "l1": ({"kind": "l1", "l1": 1e-3}, lambda w: 1e-3 * np.abs(w).sum()),
    "l2": ({"kind": "l2", "l2": 1e-3}, lambda w: 1e-3 * np.square(w).sum()),
    "l1_l2": ({"kind": "l1_l2", "l1": 1e-3, "l2": 2e-3}, lambda w: 1e-3 * np.abs(w).sum() + 2e-3 * np.square(w).sum()),
}


@pytest.mark.parametrize("kind", sorted(PENALTIES))
def test_kernel_placement_equals_numpy(kind):
    penalty, numpy_penalty = PENALTIES[kind]
    model = build_classifier(**SMALL, regularizers=RegularizerSet.from_config({"kernel": penalty}))
    kernels = _weights(model, "kernel")
    depthwise = [w for w in kernels if w.ndim == 4 and w.shape[3] == 1 and w.shape[:2] == (3, 3)]
    assert len(depthwise) == 17  # one per block: they must be among the penalized kernels
    expected = sum(numpy_penalty(w) for w in kernels)
    assert _total(model.losses) == pytest.approx(expected, rel=1e-5)
    assert placement_layers(model) == {"kernel": 53, "bias": 0, "activity": 0}


@pytest.mark.parametrize("conv_bias, n_bias_layers", [(True, 53), (False, 1)])
def test_bias_placement_equals_numpy(conv_bias, n_bias_layers):
    model = build_classifier(
        **SMALL, conv_bias=conv_bias, regularizers=RegularizerSet.from_config({"bias": {"kind": "l2", "l2": 1e-2}})
    )
    _randomize_biases(model)
    biases = _weights(model, "bias")
    # BatchNormalization's beta is not a bias: with conv_bias off only the Dense head has one.
    assert len(biases) == n_bias_layers
    assert _total(model.losses) == pytest.approx(sum(1e-2 * np.square(b).sum() for b in biases), rel=1e-5)
    assert placement_layers(model) == {"kernel": 0, "bias": n_bias_layers, "activity": 0}


def test_a_penalty_that_leaves_out_the_head_spares_the_dense_layer():
    """``"head": false`` (the tutorial's L1 run): every conv and depthwise kernel, not the Dense head."""
    l1 = {"kind": "l1", "l1": 1e-3, "head": False}
    regularizers = RegularizerSet.from_config({"kernel": l1, "bias": l1, "activity": l1})
    everywhere = build_classifier(**SMALL, regularizers=regularizers)
    logits = everywhere.get_layer("logits")
    assert logits.kernel_regularizer is None and logits.bias_regularizer is None and logits.activity_regularizer is None
    assert placement_layers(everywhere) == {"kernel": 52, "bias": 0, "activity": 17}
    model = build_classifier(**SMALL, regularizers=RegularizerSet.from_config({"kernel": l1}))
    _randomize_biases(model)
    kernels = [keras.ops.convert_to_numpy(layer.kernel) for layer in model.layers if hasattr(layer, "kernel")]
    head = keras.ops.convert_to_numpy(model.get_layer("logits").kernel)
    expected = sum(1e-3 * np.abs(w).sum() for w in kernels) - 1e-3 * np.abs(head).sum()
    assert _total(model.losses) == pytest.approx(expected, rel=1e-5)
    # The same penalty with the head: one more kernel.
    on_head = RegularizerSet.from_config({"kernel": {"kind": "l1", "l1": 1e-3}})
    with_head = build_classifier(**SMALL, regularizers=on_head)
    assert placement_layers(with_head) == {"kernel": 53, "bias": 0, "activity": 0}
    with pytest.raises(TrialError, match=r"^Invalid kernel.head: expected true or false, received head='no'$"):
        RegularizerSet.from_config({"kernel": {"kind": "l1", "l1": 1e-3, "head": "no"}})


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_activity_placement_equals_numpy_of_block_outputs(kind):
    penalty, numpy_penalty = PENALTIES[kind]
    model = build_classifier(**SMALL, regularizers=RegularizerSet.from_config({"activity": penalty}))
    names = {layer.name for layer in model.layers}
    # The output layer of block i is its residual Add, or its projection BN when there is none.
    outputs = [f"block_{i}_add" if f"block_{i}_add" in names else f"block_{i}_project_bn" for i in range(17)]
    outputs.append("logits")
    assert sorted(layer.name for layer in model.layers if layer.activity_regularizer is not None) == sorted(outputs)
    assert "block_2_add" in names and "block_1_add" not in names  # 24->24 residual, 16->24 s2 not

    probe = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    probe_model = keras.Model(model.input, [model.get_layer(n).output for n in outputs])
    values = [keras.ops.convert_to_numpy(v) for v in probe_model(probe, training=False)]
    # Keras divides activity penalties by the batch size.
    expected = sum(numpy_penalty(v) for v in values) / len(probe)
    model(probe, training=False)
    assert _total(model.losses) == pytest.approx(expected, rel=1e-4)
    assert placement_layers(model) == {"kernel": 0, "bias": 0, "activity": 18}


def test_custom_callable_regularizer_and_checkpoint_round_trip(tmp_path):
    fn = f"{__name__}:abs_max"
    model = build_classifier(**SMALL, conv_bias=True, regularizers=RegularizerSet.from_config(
        {"kernel": {"kind": "custom", "fn": fn, "scale": 2.0}, "bias": {"kind": "custom", "fn": fn, "scale": 0.5}}
    ))
    _randomize_biases(model)
    expected = sum(2.0 * np.abs(w).max() for w in _weights(model, "kernel"))
    expected += sum(0.5 * np.abs(b).max() for b in _weights(model, "bias"))
    assert _total(model.losses) == pytest.approx(expected, rel=1e-5)

    path = str(tmp_path / "custom.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("block_5_depthwise").depthwise_regularizer, ScaledCallable)
    assert _total(loaded.losses) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "fn, fragment",
    [
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        ("math:no_such_fn", "has no attribute 'no_such_fn'"),
        ("math:pi", "is not callable"),
        ("math.sqrt", "expected 'package.module:callable'"),
    ],
)
def test_custom_regularizer_errors_name_the_fn(fn, fragment):
    with pytest.raises(TrialError, match=fragment) as info:
        make_regularizer({"kind": "custom", "fn": fn, "scale": 1.0}, placement="kernel")
    assert repr(fn) in str(info.value)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"kernel": {"kind": "l2", "l2": -1}}, "Invalid kernel.l2: expected a non-negative float, received l2=-1"),
        ({"bias": {"kind": "l3"}}, "Invalid bias.kind: expected one of"),
        ({"activity": {"kind": "l1_l2", "l1": 0.1}}, "Invalid activity: kind='l1_l2' needs key(s) ['l2']"),
        ({"depthwise": {"kind": "none"}}, "unknown placement(s) ['depthwise']"),
    ],
)
def test_invalid_penalties_are_trial_errors(config, message):
    with pytest.raises(TrialError) as info:
        RegularizerSet.from_config(config)
    assert message in str(info.value)


def test_none_builds_no_regularizers():
    regs = RegularizerSet.from_config(
        {"kernel": {"kind": "none"}, "bias": {"kind": "none"}, "activity": {"kind": "none"}}
    )
    assert regs.active() == []
    model = build_classifier(**SMALL, regularizers=regs)
    assert placement_layers(model) == {"kernel": 0, "bias": 0, "activity": 0}
    assert model.losses == []


def test_layer_names_group_into_blocks():
    model = build_classifier(**SMALL)
    groups = {block_of(layer.name) for layer in model.layers if layer.weights}
    assert groups == {"stem", "head", "logits"} | {f"block_{i}" for i in range(17)}
    assert model.get_layer("block_3_depthwise").strides == (2, 2)
    assert model.get_layer("block_3_pad").padding == ((0, 1), (0, 1))


def test_bn_momentum_and_conv_bias_are_applied():
    model = build_classifier(**SMALL, bn_momentum=0.8, conv_bias=True)
    assert {layer.momentum for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)} == {0.8}
    assert model.get_layer("block_7_expand").use_bias and model.get_layer("block_7_depthwise").use_bias


def test_mixed_precision_keeps_float32_logits_and_activity_penalty():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_classifier(
            **SMALL, regularizers=RegularizerSet.from_config({"activity": {"kind": "l2", "l2": 1e-3}})
        )
        probe = np.ones((2, 32, 32, 3), dtype=np.float32)
        assert keras.ops.convert_to_numpy(model(probe)).dtype == np.float32
        assert isinstance(model.get_layer("block_1_project_bn").activity_regularizer, Float32Activity)
        assert {keras.backend.standardize_dtype(loss.dtype) for loss in model.losses} == {"float32"}
    finally:
        keras.mixed_precision.set_global_policy(previous)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_shape": (16, 16, 3)}, "Invalid input_shape"),
        ({"num_classes": 1}, "Invalid num_classes: expected an int >= 2, received num_classes=1"),
        ({"width": 0}, "Invalid width"),
        ({"bn_momentum": 1.5}, "Invalid bn_momentum"),
    ],
)
def test_build_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        build_classifier(**{**SMALL, **kwargs})
