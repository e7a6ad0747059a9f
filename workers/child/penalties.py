"""Custom penalties shipped with regsweep, usable as a spec kind ``"workers.penalties:NAME"``.

A custom kind is any importable ``package.module:function`` taking a weight tensor and returning
a scalar; the trainer multiplies it by the trial's ``scale`` (``workers.child.regularizers.ScaledCallable``).
These are examples that also serve real sweeps.
"""

from __future__ import annotations

from typing import Any

import keras

__all__ = ["orthogonal"]


def orthogonal(weights: Any) -> Any:
    """Soft orthogonality: ``||W^T W - I||_F^2`` of the kernel flattened to (fan-in, filters).

    Zero when the filters are orthonormal; it keeps filters decorrelated instead of small
    (what L1/L2 do). A depthwise kernel (one filter per channel) is treated as (fan-in, channels).

    Args:
        weights: A Dense (in, out), Conv2D (h, w, in, out) or DepthwiseConv2D (h, w, channels, 1) kernel.
    """
    shape = tuple(weights.shape)
    if len(shape) == 4 and shape[-1] == 1:  # depthwise: each channel is its own filter
        flat = keras.ops.reshape(weights, (shape[0] * shape[1], shape[2]))
    else:
        flat = keras.ops.reshape(weights, (-1, shape[-1]))
    gram = keras.ops.matmul(keras.ops.transpose(flat), flat)
    eye = keras.ops.eye(gram.shape[0], dtype=gram.dtype)
    return keras.ops.sum(keras.ops.square(gram - eye))
