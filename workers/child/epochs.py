"""The trainer's per-epoch side in the child: the Keras callback that times an epoch, checks its
loss, measures the regularizer diagnostics (:mod:`workers.child.probe`), saves the checkpoint and
asks ``on_epoch`` what next."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import keras

from sweep.errors import TrialDiverged
from workers.child.probe import SPARSITY_THRESHOLD, EpochProbe, Measurement

__all__ = ["METRIC_KEYS", "SPARSITY_THRESHOLD", "EpochReporter", "save_atomically"]

logger = logging.getLogger("workers.child.train")

#: Keys of each ``on_epoch`` call and of the returned ``history``.
METRIC_KEYS: tuple[str, ...] = (
    "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "reg_loss", "epoch_seconds", "images_per_second",
)


def save_atomically(model: keras.Model, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # model.save insists on a .keras suffix; os.replace makes the switch atomic, so a crash
    # mid-save leaves the previous checkpoint intact.
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class EpochReporter(keras.callbacks.Callback):
    """Times the training part of each epoch, checks the loss and asks ``on_epoch`` what next."""

    def __init__(self, on_epoch: Callable[[dict[str, Any]], str], probe: EpochProbe, n_train: int,
                 checkpoint_path: str | None) -> None:
        super().__init__()
        self.on_epoch = on_epoch
        self.probe = probe
        self.n_train = n_train
        self.checkpoint_path = checkpoint_path
        self.history: dict[str, list[float]] = {key: [] for key in METRIC_KEYS}
        self.diagnostics: list[dict[str, Any]] = []
        self.stopped: str | None = None
        #: The last epoch's probe: the weights training ends with, unless no epoch ran.
        self.last: Measurement | None = None
        self._start = self._train_end = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start, self._train_end = time.perf_counter(), 0.0

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        # fit runs validation through evaluate(callbacks=...): training of this epoch is over.
        self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        seconds = (self._train_end or time.perf_counter()) - self._start
        for key in ("loss", "val_loss"):
            if not math.isfinite(float(logs.get(key, math.nan))):
                raise TrialDiverged(f"Training diverged at epoch {epoch}: {key}={logs.get(key)!r}")
        measured = self.last = self.probe.measure()
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "loss": float(logs["loss"]),
            "accuracy": float(logs["accuracy"]),
            "val_loss": float(logs["val_loss"]),
            "val_accuracy": float(logs["val_accuracy"]),
            "reg_loss": measured.reg_loss,
            "epoch_seconds": seconds,
            "images_per_second": self.n_train / seconds if seconds > 0 else 0.0,
        }
        for key in METRIC_KEYS:
            self.history[key].append(metrics[key])
        # Regularizer diagnostics over epochs: how the penalty reshapes weights and activations.
        self.diagnostics.append({"sparsity": measured.sparsity, "blocks": measured.blocks})
        metrics["diagnostics"] = self.diagnostics[-1]
        logger.info("epoch %d: %s", epoch, ", ".join(f"{k}={metrics[k]:.4g}" for k in METRIC_KEYS if k != "epoch"))
        if self.checkpoint_path:
            save_atomically(self.model, self.checkpoint_path)
        answer = self.on_epoch(dict(metrics))
        if answer in ("prune", "stop"):
            self.stopped = answer
            self.model.stop_training = True
        elif answer != "continue":
            raise ValueError(f"Invalid on_epoch answer: expected 'continue', 'prune' or 'stop', received {answer!r}")
