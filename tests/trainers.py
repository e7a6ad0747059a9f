"""Trainers for fault tests: the synthetic trainer, plus one fault on chosen trial numbers.

``training.trainer_options``: ``fault`` (raise | segv | hang | nan | sleep), ``on_trials`` (list of
trial numbers, as a comma-separated string), ``at_epoch`` (the epoch at which the fault happens).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

from sweep.errors import TrialDiverged
from workers.child import synthetic
from workers.child.request import TrainRequest


def faulty(request: TrainRequest, on_epoch: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    """Synthetic training that misbehaves on the trials named in its options."""
    options = request.setup.get("trainer_options", {})
    targets = {int(x) for x in str(options.get("on_trials", "")).split(",") if x.strip()}
    if request.trial_number not in targets:
        return synthetic.train(request, on_epoch)
    at_epoch = int(options.get("at_epoch", 0))
    fault = options.get("fault", "raise")

    def on_epoch_with_fault(metrics: dict[str, Any]) -> str:
        if metrics["epoch"] == at_epoch:
            if fault == "raise":
                raise ValueError(f"objective exploded on trial {request.trial_number}")
            if fault == "nan":
                raise TrialDiverged(f"loss became nan at epoch {at_epoch + 1}")
            if fault == "segv":
                os.kill(os.getpid(), signal.SIGSEGV)
            if fault == "hang":
                time.sleep(3600)
        return on_epoch(metrics)

    return synthetic.train(request, on_epoch_with_fault)


def with_tensorflow(request: TrainRequest, on_epoch: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    """Synthetic training after really importing TensorFlow and running one op (its native logging)."""
    import logging

    import tensorflow as tf

    tf.constant(1.0) + 1.0
    logging.getLogger("tests.trainers").info("trial %d: tensorflow %s imported", request.trial_number, tf.__version__)
    return synthetic.train(request, on_epoch)


def cyclic_garbage(request: TrainRequest, on_epoch: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    """Synthetic training that leaves 40 MB behind in a reference cycle (as a Keras model's graph
    of layers does): only a garbage collection after the trial frees it."""
    node: dict[str, Any] = {"payload": bytearray(b"\x01") * (40 << 20)}
    node["self"] = node
    return synthetic.train(request, on_epoch)


def imported_modules(request: TrainRequest, on_epoch: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    """Reports, as its one epoch's metrics, the top-level and regsweep modules this child has imported."""
    import sys

    names = sorted(n for n in sys.modules if "." not in n or n.startswith(("workers.", "sweep.", "tests.")))
    on_epoch({"epoch": 0, "val_accuracy": 0.5, "modules": names})
    return {"epochs_run": 1}
