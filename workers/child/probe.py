"""What the trainer measures of the penalty's effect after each epoch, in one compiled call.

Per epoch the trainer reports the regularization loss (the tutorial's ``add_n(model.losses)``)
and, per diagnostic block, the kernels' L1 norm, L2 norm and sparsity and the mean ``|activation|``
of the block's output on a fixed probe batch. Measured eagerly these are hundreds of small ops
(one penalty per regularized variable, a forward pass for activity penalties, a copy of every
kernel to NumPy): on a 2-core CPU 60-110 ms an epoch without activity penalties and 260-410 ms
with them, 2-15% of a width-0.25 or width-1.0 epoch at 32x32 (and on a GPU each op is a kernel
launch). :class:`EpochProbe` traces them once into one Keras ``predict`` function (``tf.function``
or ``jax.jit``, whichever backend runs) that returns one short vector: 12-48 ms an epoch there,
for about 0.7 s more tracing in the first epoch than the forward pass alone.

Activity penalties are computed here from the watched layers' outputs, not read back from
``model.losses``: under JAX a ``predict`` step does not collect ``add_loss`` losses. So this
repeats Keras' rule for them (the regularizer of the layer's output, divided by the batch size);
``tests/test_probe.py`` checks the result against Keras' own eager ``model.losses``.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import keras
import numpy as np

from workers.child.model import block_of, block_outputs, kernel_layers

__all__ = ["SPARSITY_THRESHOLD", "EpochProbe", "Measurement"]

#: A weight with ``|w|`` below this counts as zero for ``sparsity``.
SPARSITY_THRESHOLD = 1e-3


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One probe of the model.

    Attributes:
        reg_loss: Weight penalties plus activity penalties on the probe batch (inference mode).
        sparsity: Share of all kernel weights with ``|w|`` below :data:`SPARSITY_THRESHOLD`.
        blocks: Per block ``{"l1", "l2", "sparsity"}`` of its kernels and, for blocks with an
            output, ``"activation"``: mean ``|output|`` on the probe batch.
    """

    reg_loss: float
    sparsity: float
    blocks: dict[str, dict[str, float]]

    def block_norms(self) -> dict[str, dict[str, float]]:
        """``blocks`` without the activations: the kernels' norms and sparsity only."""
        keys = ("l1", "l2", "sparsity")
        return {name: {k: stats[k] for k in keys} for name, stats in self.blocks.items() if "l1" in stats}


class _ProbeModel(keras.Model):
    """Returns ``[reg_loss, l1 by block, sum w^2 by block, small by block, mean |a| by output]``.

    Holds ``target`` as a tracked attribute, so its variables are this model's too: a JAX
    ``predict`` step then passes their current values in rather than baking them in at tracing.
    """

    def __init__(self, target: keras.Model, kernel_groups: list[list[str]], sizes: list[int], watched: list[str],
                 activity: list[str]) -> None:
        super().__init__(name="epoch_probe")
        self.target = target
        names = list(dict.fromkeys([*watched, *activity]))
        self._index = {name: i for i, name in enumerate(names)}
        self.features = keras.Model(target.input, [target.get_layer(name).output for name in names])
        # Layer names, not variables: a list of variables would be tracked a second time here.
        self.kernel_groups = kernel_groups
        self.bounds = [0, *itertools.accumulate(sizes)]  # each block's span of the flat kernel vector
        self.watched = watched
        self.activity = activity
        self.built = True

    def call(self, x: Any) -> Any:
        ops = keras.ops
        outputs = self.features(x, training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        penalties = [ops.cast(v.regularizer(v), "float32") for v in self.target.trainable_weights
                     if getattr(v, "regularizer", None) is not None]
        for name in self.activity:
            output = outputs[self._index[name]]
            loss = ops.cast(self.target.get_layer(name).activity_regularizer(output), "float32")
            penalties.append(loss / ops.cast(ops.shape(output)[0], "float32"))  # as Keras' Layer.__call__
        reg = ops.sum(ops.stack(penalties)) if penalties else ops.zeros((), "float32")
        # Every kernel in one flat vector, block after block, and one split of it by block: the ops to
        # trace grow with the blocks, not with the kernels (tracing is most of this probe's cost).
        kernels = [self.target.get_layer(name).kernel for group in self.kernel_groups for name in group]
        flat = ops.concatenate([ops.reshape(k if k.dtype == "float32" else ops.cast(k, "float32"), (-1,))
                                for k in kernels])
        magnitude = ops.abs(flat)
        rows = ops.stack([magnitude, ops.square(flat), ops.cast(magnitude < SPARSITY_THRESHOLD, "float32")])
        pieces = ops.split(rows, self.bounds[1:-1], axis=1)
        stats = ops.transpose(ops.stack([ops.sum(piece, axis=1) for piece in pieces]))  # l1, sum w^2, small
        means = [ops.mean(ops.abs(ops.cast(outputs[self._index[name]], "float32"))) for name in self.watched]
        return ops.concatenate([ops.reshape(reg, (1,)), ops.reshape(stats, (-1,)),
                                ops.stack(means) if means else ops.zeros((0,), "float32")])


class EpochProbe:
    """Measures a model's regularization loss, kernel norms and activations on a fixed batch.

    Args:
        model: The classifier (from :func:`workers.child.model.build_classifier` or a checkpoint).
        batch: The probe batch of inputs (the same every epoch).
    """

    def __init__(self, model: keras.Model, batch: np.ndarray) -> None:
        self.batch = batch
        groups: dict[str, list[str]] = {}
        sizes: dict[str, int] = {}
        for name, variable in kernel_layers(model):
            block = block_of(name)
            groups.setdefault(block, []).append(name)
            sizes[block] = sizes.get(block, 0) + int(np.prod(variable.shape))
        self._blocks = list(groups)
        self._sizes = [sizes[b] for b in self._blocks]
        outputs = block_outputs(model)
        self._outputs = [group for group, _ in outputs]
        activity = [layer.name for layer in model.layers if getattr(layer, "activity_regularizer", None) is not None]
        watched = [layer.name for _, layer in outputs]
        self._model = _ProbeModel(model, list(groups.values()), self._sizes, watched, activity)

    def measure(self) -> Measurement:
        """One compiled call (traced on the first, about a second)."""
        values = np.asarray(keras.ops.convert_to_numpy(self._model.predict_on_batch(self.batch)), dtype=np.float64)
        n = len(self._blocks)
        l1, squares, small = values[1:1 + n], values[1 + n:1 + 2 * n], values[1 + 2 * n:1 + 3 * n]
        blocks: dict[str, dict[str, float]] = {
            block: {"l1": float(l1[i]), "l2": float(np.sqrt(squares[i])), "sparsity": float(small[i]) / self._sizes[i]}
            for i, block in enumerate(self._blocks)
        }
        for name, mean in zip(self._outputs, values[1 + 3 * n:], strict=True):
            blocks.setdefault(name, {})["activation"] = float(mean)
        total = sum(self._sizes)
        return Measurement(reg_loss=float(values[0]), sparsity=float(small.sum()) / total if total else 0.0,
                           blocks=blocks)
