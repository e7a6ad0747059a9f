"""A synthetic trainer: the worker's full protocol without Keras, for dry runs and benchmarks.

``trainer = "workers.synthetic:train"`` in a spec runs the whole sweep machinery (budget, sampler,
pruner, heartbeats, reports) against a smooth, deterministic response surface in milliseconds:
useful to check a spec and a deployment before spending GPU hours, and to measure orchestration
overhead. Options (``training.trainer_options``): ``epoch_seconds`` (sleep per epoch, default 0).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from typing import Any

from workers.child.request import TrainRequest

__all__ = ["train", "response"]

_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "reg_loss", "epoch_seconds", "images_per_second")


def _strength(config: dict[str, Any]) -> float:
    kernel = config.get("kernel", {"kind": "none"})
    return float(kernel.get("l2", 0.0)) + 3.0 * float(kernel.get("l1", 0.0))


def response(config: dict[str, Any]) -> float:
    """Peak validation accuracy of a config: best near kernel L2 = 1e-4, worse far from it."""
    strength = _strength(config)
    if strength <= 0:
        return 0.86
    return 0.93 - 0.02 * (math.log10(strength) + 4.0) ** 2


def train(request: TrainRequest, on_epoch: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    """Same signature and result keys as ``workers.child.train.train``."""
    options = request.setup.get("trainer_options", {})
    epoch_seconds = float(options.get("epoch_seconds", 0.0))
    rng = random.Random(f"{request.seed}-{request.config}")
    peak = max(response(request.config), 0.1)
    regularized = any(p.get("kind", "none") != "none" for p in request.config.values())
    history: dict[str, list[float]] = {k: [] for k in _METRICS}
    stopped = None
    epochs = int(request.setup.get("epochs", 5))
    if request.resume_path:
        with open(request.resume_path, encoding="utf-8") as handle:
            saved = json.load(handle)
        if saved["epoch"] != request.initial_epoch - 1:
            raise ValueError(f"checkpoint is of epoch {saved['epoch']}, asked to resume at {request.initial_epoch}")
    for epoch in range(request.initial_epoch, epochs):
        if epoch_seconds:
            time.sleep(epoch_seconds)
        if request.checkpoint_path:  # a stand-in checkpoint, written before on_epoch like Keras'
            with open(request.checkpoint_path + ".tmp", "w", encoding="utf-8") as handle:
                json.dump({"epoch": epoch}, handle)
            os.replace(request.checkpoint_path + ".tmp", request.checkpoint_path)
        val = peak * (1 - math.exp(-(epoch + 1) / 2.0)) + rng.gauss(0, 0.005)
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "loss": 2.3 * math.exp(-(epoch + 1) / 2.0),
            "accuracy": min(val + 0.03, 1.0),
            "val_loss": 2.3 * math.exp(-(epoch + 1) / 2.5),
            "val_accuracy": val,
            "reg_loss": 0.1 / (epoch + 1) if regularized else 0.0,
            "epoch_seconds": epoch_seconds,
            "images_per_second": 0.0,
        }
        for key in _METRICS:
            history[key].append(float(metrics[key]))
        # Diagnostics shaped like the Keras trainer's: stronger penalties shrink the norms.
        shrink = 1.0 / (1.0 + 50.0 * (epoch + 1) * _strength(request.config))
        metrics["diagnostics"] = {
            "sparsity": 1.0 - shrink,
            "blocks": {block: {"l1": 40.0 * scale * shrink, "l2": 4.0 * scale * shrink,
                               "sparsity": 1.0 - shrink, "activation": 0.5 * scale * shrink}
                       for block, scale in (("stem", 1.0), ("block_0", 1.5), ("head", 3.0))},
        }
        answer = on_epoch(metrics)
        if answer in ("prune", "stop"):
            stopped = answer
            break
    return {
        "epochs_run": request.initial_epoch + len(history["val_accuracy"]),
        "history": history,
        "stopped": stopped,
        "sparsity": 0.0,
        "block_norms": {},
        "placement_layers": {"kernel": 1, "bias": 1, "activity": 1},
        "param_count": 0,
        "device": "synthetic",
        "backend": "none",
    }
