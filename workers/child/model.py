"""The MobileNetV2 "bottleneck" classifier the sweep regularizes.

Same topology as the tutorial (``get_mobilenetV2`` + ``bottleneck``) and, at ``width=1.0``, the
same parameter count as ``keras.applications.MobileNetV2(weights=None)``. What is added:
a width multiplier, configurable BatchNormalization momentum, optional conv biases, stable layer
names (``stem_*``, ``block_<i>_*``, ``head_*``, ``logits``) and the placement rules of
``docs/placements.md``.
"""

from __future__ import annotations

import re
from typing import Any

import keras
from keras import layers

from workers.child.regularizers import Float32Activity, RegularizerSet

__all__ = ["BLOCKS", "build_classifier", "make_divisible", "placement_layers", "block_of", "kernel_layers"]

#: (expansion-block output channels, stride) for blocks 1..16; block 0 is 32 -> 16, stride 1.
BLOCKS: tuple[tuple[int, int], ...] = (
    (24, 2), (24, 1),
    (32, 2), (32, 1), (32, 1),
    (64, 2), (64, 1), (64, 1), (64, 1),
    (96, 1), (96, 1), (96, 1),
    (160, 2), (160, 1), (160, 1),
    (320, 1),
)
_EXPANSION = 6
_MIN_INPUT = 31  # five stride-2 stages; below this block 13's 'valid' 3x3 has nothing to slide over
_BLOCK_RE = re.compile(r"^(block_\d+|stem|head)_")


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor`` exactly like ``keras.applications.MobileNetV2``.

    Args:
        v: Unrounded channel count.
        divisor: Multiple to round to.
        min_value: Lower bound (defaults to ``divisor``).

    Returns:
        The rounded channel count, never more than 10% below ``v``.
    """
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class _Builder:
    """Creates layers with the placement rules applied in one place."""

    def __init__(self, regs: RegularizerSet, bn_momentum: float, conv_bias: bool) -> None:
        self.regs = regs
        self.bn_momentum = bn_momentum
        self.conv_bias = conv_bias
        activity = regs.activity
        # Mixed precision: activity penalties see float16 outputs; sum them in float32.
        if activity is not None and keras.mixed_precision.global_policy().compute_dtype != "float32":
            activity = Float32Activity(activity)
        self.activity = activity

    def bias_kwargs(self, use_bias: bool) -> dict[str, Any]:
        # Only layers that have a bias get a bias regularizer: placement_layers counts layers
        # whose regularizer is actually applied, and Keras would silently ignore the others.
        return {"use_bias": use_bias, "bias_regularizer": self.regs.bias if use_bias else None}

    def conv(self, x: Any, filters: int, name: str, kernel_size: int = 1, strides: int = 1) -> Any:
        return layers.Conv2D(
            filters, kernel_size, strides=strides, padding="same", name=name,
            kernel_regularizer=self.regs.kernel, **self.bias_kwargs(self.conv_bias),
        )(x)

    def depthwise(self, x: Any, name: str, strides: int) -> Any:
        # Keras' DepthwiseConv2D ignores kernel_regularizer: its kernel is depthwise_kernel.
        return layers.DepthwiseConv2D(
            3, strides=strides, padding="same" if strides == 1 else "valid", name=name,
            depthwise_regularizer=self.regs.kernel, **self.bias_kwargs(self.conv_bias),
        )(x)

    def bn(self, x: Any, name: str, activity: bool = False) -> Any:
        return layers.BatchNormalization(
            momentum=self.bn_momentum, epsilon=1e-3, name=name,
            activity_regularizer=self.activity if activity else None,
        )(x)

    def block(self, x: Any, block_id: int, out_channels: int, strides: int, expand: bool) -> Any:
        prefix = f"block_{block_id}_"
        inputs = x
        in_channels = x.shape[-1]
        if expand:
            x = self.conv(x, _EXPANSION * in_channels, prefix + "expand")
            x = self.bn(x, prefix + "expand_bn")
            x = layers.ReLU(6.0, name=prefix + "expand_relu")(x)
        if strides == 2:
            # The tutorial's padding; equals keras.applications' correct_pad for even sizes.
            x = layers.ZeroPadding2D(((0, 1), (0, 1)), name=prefix + "pad")(x)
        x = self.depthwise(x, prefix + "depthwise", strides)
        x = self.bn(x, prefix + "depthwise_bn")
        x = layers.ReLU(6.0, name=prefix + "depthwise_relu")(x)
        x = self.conv(x, out_channels, prefix + "project")
        residual = strides == 1 and in_channels == out_channels
        x = self.bn(x, prefix + "project_bn", activity=not residual)
        if residual:
            x = layers.Add(name=prefix + "add", activity_regularizer=self.activity)([x, inputs])
        return x


def build_classifier(
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    width: float = 1.0,
    bn_momentum: float = 0.9,
    conv_bias: bool = False,
    regularizers: RegularizerSet | None = None,
) -> keras.Model:
    """Build the MobileNetV2 bottleneck classifier (logits output).

    Args:
        input_shape: ``(height, width, channels)``; both sides at least 31 pixels.
        num_classes: Number of output logits (>= 2).
        width: Width multiplier (``alpha``); channels are rounded with :func:`make_divisible`.
        bn_momentum: BatchNormalization momentum. Keras' 0.99 keeps the moving statistics
            near their initial values for the few hundred steps of a small-data trial, so
            validation sits at chance; 0.9 does not.
        conv_bias: Give Conv2D/DepthwiseConv2D layers a bias (the tutorial has none).
        regularizers: Penalties per placement, see ``docs/placements.md``.

    Returns:
        An uncompiled functional ``keras.Model`` named ``mobilenetv2_bottleneck``.

    Raises:
        ValueError: If an argument is out of range.
    """
    if len(input_shape) != 3 or min(input_shape[:2]) < _MIN_INPUT or input_shape[2] < 1:
        raise ValueError(
            f"Invalid input_shape: expected (height, width, channels) with sides >= {_MIN_INPUT}, "
            f"received input_shape={tuple(input_shape)!r}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"Invalid num_classes: expected an int >= 2, received num_classes={num_classes!r}")
    if not isinstance(width, (int, float)) or not 0 < width <= 4:
        raise ValueError(f"Invalid width: expected a float in (0, 4], received width={width!r}")
    if not isinstance(bn_momentum, (int, float)) or not 0 <= bn_momentum < 1:
        raise ValueError(f"Invalid bn_momentum: expected a float in [0, 1), received bn_momentum={bn_momentum!r}")
    b = _Builder(regularizers or RegularizerSet(), float(bn_momentum), bool(conv_bias))

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = b.conv(inputs, make_divisible(32 * width), "stem_conv", kernel_size=3, strides=2)
    x = b.bn(x, "stem_bn")
    x = layers.ReLU(6.0, name="stem_relu")(x)
    # Block 0 has no expansion conv (expansion 1), as in the paper and keras.applications.
    x = b.block(x, 0, make_divisible(int(16 * width)), 1, expand=False)
    for block_id, (channels, strides) in enumerate(BLOCKS, start=1):
        x = b.block(x, block_id, make_divisible(int(channels * width)), strides, expand=True)
    # No width on the last conv unless widening, as in the paper and keras.applications.
    x = b.conv(x, make_divisible(1280 * width) if width > 1.0 else 1280, "head_conv")
    x = b.bn(x, "head_bn")
    x = layers.ReLU(6.0, name="head_relu")(x)
    x = layers.GlobalAveragePooling2D(name="head_pool")(x)
    # float32 logits even under mixed_float16: softmax cross-entropy in float16 is unstable.
    outputs = layers.Dense(
        num_classes, name="logits", dtype="float32", use_bias=True,
        kernel_regularizer=b.regs.at_head("kernel"), bias_regularizer=b.regs.at_head("bias"),
        activity_regularizer=None if "activity" in b.regs.off_head else b.activity,
    )(x)
    return keras.Model(inputs, outputs, name="mobilenetv2_bottleneck")


def block_of(layer_name: str) -> str:
    """Map a layer name to its diagnostic group: ``stem``, ``block_<i>``, ``head`` or ``logits``."""
    match = _BLOCK_RE.match(layer_name)
    return match.group(1) if match else layer_name


def kernel_layers(model: keras.Model) -> list[tuple[str, Any]]:
    """Return ``(layer_name, kernel_variable)`` for every kernel the kernel placement can reach."""
    # DepthwiseConv2D stores its depthwise kernel as `.kernel` too (regularized by
    # depthwise_regularizer); Conv2D and DepthwiseConv2D share no base class below Layer.
    return [
        (layer.name, layer.kernel)
        for layer in model.layers
        if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D, layers.Dense))
    ]


def block_outputs(model: keras.Model) -> list[tuple[str, Any]]:
    """Return ``(group, layer)`` for the last layer of each diagnostic group, in network order.

    For blocks that is the residual ``add`` or the ``project_bn``: the block's output, where the
    activity placement puts its penalty.
    """
    last: dict[str, Any] = {}
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        last[block_of(layer.name)] = layer  # dicts keep first-insertion order: network order
    return list(last.items())


def placement_layers(model: keras.Model) -> dict[str, int]:
    """Count the layers each placement actually reaches in ``model``.

    Args:
        model: A model from :func:`build_classifier` (or any Keras model).

    Returns:
        ``{"kernel": n, "bias": n, "activity": n}``; 0 means the placement has no effect.
    """
    counts = {"kernel": 0, "bias": 0, "activity": 0}
    for layer in model.layers:
        if isinstance(layer, layers.DepthwiseConv2D):
            kernel_reg = layer.depthwise_regularizer
        else:
            kernel_reg = getattr(layer, "kernel_regularizer", None)
        counts["kernel"] += kernel_reg is not None
        has_bias = getattr(layer, "use_bias", False) and getattr(layer, "bias", None) is not None
        counts["bias"] += bool(has_bias and getattr(layer, "bias_regularizer", None) is not None)
        counts["activity"] += layer.activity_regularizer is not None
    return counts
