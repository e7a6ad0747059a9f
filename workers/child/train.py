"""The default trainer: ``train(request, on_epoch) -> dict`` (see ``docs/contracts.md``).

Compiles like the tutorial (SGD, ``SparseCategoricalCrossentropy(from_logits=True)``, sparse
categorical accuracy), trains with ``model.fit`` and reports every epoch through ``on_epoch``.
Written against ``import keras``; TensorFlow-only calls are guarded by the backend name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from sweep.errors import TrialError
from workers.child.data import ImageData, load_dataset
from workers.child.epochs import METRIC_KEYS, SPARSITY_THRESHOLD, EpochReporter
from workers.child.model import build_classifier, placement_layers
from workers.child.probe import EpochProbe
from workers.child.regularizers import RegularizerSet

# One definition shared with the worker loop, which must not import Keras (see that module).
from workers.child.request import TrainRequest

__all__ = ["TrainRequest", "train", "METRIC_KEYS", "SPARSITY_THRESHOLD"]

logger = logging.getLogger(__name__)

_PROBE_SIZE = 32
#: Validation batch = this x the training batch. Inference keeps no activations for a backward
#: pass, so it stays well under the memory training itself needs.
VAL_BATCH_FACTOR = 4
# Same defaults as sweep.spec.model.TrainingSetup, for callers that pass a partial setup.
_DEFAULTS: dict[str, Any] = {
    "dataset": "digits", "input_size": 32, "width": 0.25, "bn_momentum": 0.9, "conv_bias": False,
    "epochs": 5, "batch_size": 64, "optimizer": "sgd", "learning_rate": 0.05, "momentum": 0.9,
    "seed": 0, "val_fraction": 0.2, "limit": None, "mixed_precision": "auto", "jit_compile": "auto",
    "steps_per_epoch": None, "steps_per_execution": 1,
}


def _choice(setup: dict[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = setup[key]
    if value not in allowed:
        raise TrialError(f"Invalid training.{key}: expected one of {list(allowed)}, received {key}={value!r}")
    return value


def _device() -> tuple[bool, str]:
    """Return ``(is_gpu, device name)``; on TensorFlow also turn on GPU memory growth."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return False, "cpu"
        for gpu in gpus:
            try:
                # Without growth TF grabs all GPU memory at start-up, starving anything else there.
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:  # already initialized in this process: keep its setting
                pass
        return True, str(tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name))
    if backend == "jax":
        import jax

        dev = jax.devices()[0]
        return (dev.platform == "gpu", dev.device_kind if dev.platform == "gpu" else "cpu")
    if backend == "torch":
        import torch

        return (True, torch.cuda.get_device_name(0)) if torch.cuda.is_available() else (False, "cpu")
    return False, "cpu"


def _jit(setting: str, gpu: bool) -> bool:
    if setting != "auto":
        return setting == "on"
    # TF's XLA was measured 4-7x slower on CPU; on JAX jit is the only compiled path.
    return gpu or keras.backend.backend() == "jax"


def _optimizer(setup: dict[str, Any]) -> keras.optimizers.Optimizer:
    name = _choice(setup, "optimizer", ("sgd", "momentum", "adam"))
    lr = setup["learning_rate"]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise TrialError(f"Invalid training.learning_rate: expected a positive float, received learning_rate={lr!r}")
    if name == "adam":
        return keras.optimizers.Adam(lr)
    return keras.optimizers.SGD(lr, momentum=float(setup["momentum"]) if name == "momentum" else 0.0)


def _count(key: str, value: Any) -> int:
    """``value`` of ``training.key`` checked as a count of steps: an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TrialError(f"Invalid training.{key}: expected an int >= 1, received {key}={value!r}")
    return value


def _steps_per_epoch(setup: dict[str, Any]) -> int | None:
    steps = setup.get("steps_per_epoch")
    return None if steps is None else _count("steps_per_epoch", steps)


def _steps_per_execution(setup: dict[str, Any], steps_per_epoch: int | None) -> int:
    """Optimizer steps per call into the compiled train function, never changing an epoch's steps."""
    wanted = _count("steps_per_execution", setup.get("steps_per_execution", 1))
    if steps_per_epoch is None:
        return wanted  # one pass: Keras ends the pass's last call early
    # A set epoch length is rounded up to whole calls (10 steps at 16 a call ran 16): a divisor keeps it.
    return max(d for d in range(1, min(wanted, steps_per_epoch) + 1) if steps_per_epoch % d == 0)


def _inputs(data: ImageData, batch_size: int, seed: int, steps_per_epoch: int | None) -> dict[str, Any]:
    """Return ``model.fit`` keyword arguments: tf.data with prefetch on TF, arrays elsewhere.

    With ``steps_per_epoch`` an epoch is that many optimizer steps, cycling through freshly
    shuffled passes over the training images, however many that takes (what a small bundled
    data set needs to give a penalty as many steps x learning rate per epoch as a large one).

    Validation runs in batches of :data:`VAL_BATCH_FACTOR` x ``batch_size``: fewer steps, the same
    numbers (inference-mode BatchNorm treats images one by one; Keras weights each batch's loss by
    its size and divides activity penalties by it).
    """
    val_batch = batch_size * VAL_BATCH_FACTOR
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        train = tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train)).shuffle(
            len(data.x_train), seed=seed, reshuffle_each_iteration=True)
        if steps_per_epoch is not None:
            train = train.repeat()
        train = train.batch(batch_size).prefetch(tf.data.AUTOTUNE)
        val = tf.data.Dataset.from_tensor_slices((data.x_val, data.y_val)).batch(val_batch).prefetch(tf.data.AUTOTUNE)
        # The dataset shuffles itself; fit's shuffle would only warn.
        return {"x": train, "validation_data": val, "shuffle": False, "steps_per_epoch": steps_per_epoch}
    # JAX / torch: arrays; x and y must be passed separately, or Keras sees two model inputs.
    x, y = data.x_train, data.y_train
    if steps_per_epoch is not None:
        # Arrays cannot repeat themselves: tile them to one epoch's worth (fit shuffles them).
        copies = -(-steps_per_epoch * batch_size // len(x))
        x, y = np.concatenate([x] * copies), np.concatenate([y] * copies)
    return {"x": x, "y": y, "validation_data": (data.x_val, data.y_val), "batch_size": batch_size,
            "validation_batch_size": val_batch, "shuffle": True, "steps_per_epoch": steps_per_epoch}


def train(request: TrainRequest, on_epoch: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    """Train one trial and return its JSON-able result.

    Args:
        request: What to train (``workers.child.request.TrainRequest``, re-exported here).
            ``request.seed`` seeds weight init and shuffling; the train/validation split uses
            ``setup["seed"]`` so every trial and finalist seed is scored on the same split. When
            ``resume_path`` is set the checkpoint's model (and its regularizers) is used as is.
        on_epoch: Called after each epoch with the metrics (keys :data:`METRIC_KEYS`); answers
            ``"continue"``, ``"prune"`` or ``"stop"`` (the last two end training).

    Returns:
        ``epochs_run`` (epochs completed, counting resumed ones), ``history`` (this call's
        epochs), ``stopped``, ``sparsity``, ``block_norms``, ``placement_layers``,
        ``param_count``, ``optimizer_steps``, ``device``, ``backend``, ``jit_compile``, ``policy``.

    Raises:
        TrialDiverged: If the loss becomes NaN or infinite.
        TrialError: If the config or setup is invalid.
        DataError: If the dataset cannot be loaded.
    """
    setup = {**_DEFAULTS, **(request.setup or {})}
    regs = RegularizerSet.from_config(request.config)
    mixed = _choice(setup, "mixed_precision", ("auto", "on", "off"))
    jit_setting = _choice(setup, "jit_compile", ("auto", "on", "off"))
    epochs, batch_size = int(setup["epochs"]), int(setup["batch_size"])
    steps_per_epoch = _steps_per_epoch(setup)
    steps_per_execution = _steps_per_execution(setup, steps_per_epoch)
    if epochs < 1 or batch_size < 1:
        raise TrialError(
            f"Invalid training: epochs and batch_size must be >= 1, received epochs={epochs}, batch_size={batch_size}"
        )

    gpu, device = _device()  # first: memory growth must be set before TF touches the GPU
    previous_policy = keras.mixed_precision.global_policy()
    _fresh_session(mixed, gpu)
    keras.utils.set_random_seed(int(request.seed))
    try:
        optimizer = _optimizer(setup)  # before loading data: a bad setup should fail fast
        data = load_dataset(
            setup["dataset"], image_size=int(setup["input_size"]), val_fraction=float(setup["val_fraction"]),
            seed=int(setup["seed"]), limit=setup["limit"],
        )
        model = _model(request, setup, data, regs, optimizer, _jit(jit_setting, gpu), steps_per_execution)
        # Shuffle seed moves with initial_epoch so a resumed run does not replay epoch 0's order.
        fit_kwargs = _inputs(data, batch_size, int(request.seed) + request.initial_epoch, steps_per_epoch)
        images_per_epoch = steps_per_epoch * batch_size if steps_per_epoch else len(data.x_train)
        probe = EpochProbe(model, data.x_train[:_PROBE_SIZE])
        reporter = EpochReporter(on_epoch, probe, images_per_epoch, request.checkpoint_path)
        logger.info("Trial %d: %s params on %s (%s, jit_compile=%s, policy=%s)", request.trial_number,
                    f"{model.count_params():,}", device, keras.backend.backend(), model.jit_compile,
                    keras.mixed_precision.global_policy().name)
        model.fit(epochs=epochs, initial_epoch=request.initial_epoch,
                  callbacks=[reporter], verbose=0, **fit_kwargs)
        return _result(request, model, reporter, device)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _fresh_session(mixed: str, gpu: bool) -> None:
    """Clear Keras' state and set this trial's dtype policy (mixed float16 on GPU with ``auto``)."""
    keras.backend.clear_session()  # also resets the dtype policy; set it right after
    keras.mixed_precision.set_global_policy(
        "mixed_float16" if mixed == "on" or (mixed == "auto" and gpu) else "float32"
    )
    if mixed == "on" and not gpu:
        logger.warning("mixed_precision='on' on CPU: float16 is emulated there and slow")


def _model(request: TrainRequest, setup: dict[str, Any], data: ImageData, regs: RegularizerSet,
           optimizer: keras.optimizers.Optimizer, jit: bool, steps_per_execution: int) -> keras.Model:
    """The compiled classifier: built afresh, or the checkpoint's when the trial resumes."""
    if request.resume_path:
        model = keras.models.load_model(request.resume_path)  # compiled, optimizer state included
        logger.info("Trial %d resumes from %s at epoch %d", request.trial_number, request.resume_path,
                    request.initial_epoch)
    else:
        model = build_classifier(
            input_shape=data.x_train.shape[1:], num_classes=data.num_classes, width=float(setup["width"]),
            bn_momentum=float(setup["bn_momentum"]), conv_bias=bool(setup["conv_bias"]), regularizers=regs,
        )
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            jit_compile=jit,
            steps_per_execution=steps_per_execution,
        )
    model.jit_compile = jit  # a loaded model keeps the saving machine's choice
    return model


def _result(request: TrainRequest, model: keras.Model, reporter: EpochReporter, device: str) -> dict[str, Any]:
    """The trainer's JSON-able result (keys in :func:`train`'s docstring)."""
    final = reporter.last or reporter.probe.measure()  # fit ends with the last epoch's weights
    return {
        "epochs_run": request.initial_epoch + len(reporter.history["epoch"]),
        "history": reporter.history,
        "stopped": reporter.stopped,
        "sparsity": final.sparsity,
        "block_norms": final.block_norms(),
        "diagnostics_by_epoch": reporter.diagnostics,
        "placement_layers": placement_layers(model),
        "param_count": int(model.count_params()),
        # Steps taken, resumed ones included: what a penalty's pull scales with (x learning rate).
        "optimizer_steps": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        "device": device,
        "backend": keras.backend.backend(),
        # What "auto" resolved to on this device (benchmarks compare against the other choices).
        "jit_compile": bool(model.jit_compile),
        "policy": keras.mixed_precision.global_policy().name,
    }
