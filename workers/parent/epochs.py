"""The per-epoch callback in the worker: report, record progress, answer continue/prune/stop."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import optuna

from sweep.storage.engine import db_call
from sweep.storage.trial_record import Attr

__all__ = ["EpochHandler", "Verdict"]

_logger = logging.getLogger(__name__)
#: Answers ``(answer, stop reason)`` for the epoch just finished (see ``decisions.epoch_verdict``).
Verdict = Callable[[int], tuple[str, "str | None"]]
#: Saves the epoch's checkpoint: ``(epoch, previous record) -> new record``.
Upload = Callable[[int, "dict[str, Any] | None"], "dict[str, Any] | None"]


class EpochHandler:
    """Called in the worker with each epoch's metrics from the training child.

    Args:
        trial: The running trial (reported to and written on).
        total_epochs: Epochs the trial runs (for the log line).
        verdict: Decides what the trainer does next, given the epoch.
        inherited: Curves of the epochs a resumed trial inherited.
        upload: Stores the epoch checkpoint (None: no checkpoints).
    """

    def __init__(self, trial: optuna.Trial, *, total_epochs: int, verdict: Verdict,
                 inherited: dict[str, list[float]] | None = None, upload: Upload | None = None) -> None:
        self.trial = trial
        self.total_epochs = total_epochs
        self.verdict = verdict
        self.upload = upload
        self.curves: dict[str, list[float]] = {k: list(v) for k, v in (inherited or {}).items()}
        self.diagnostics: list[dict[str, Any]] = []
        self.checkpoint: dict[str, Any] | None = None
        self.stop_reason: str | None = None

    def __call__(self, metrics: dict[str, Any]) -> str:
        epoch = int(metrics["epoch"])
        value = float(metrics.get("val_accuracy", math.nan))
        _logger.info(
            "Trial %d epoch %d/%d: val_accuracy %.4f loss %.4f (%.1fs)",
            self.trial.number, epoch + 1, self.total_epochs, value, metrics.get("loss", math.nan),
            metrics.get("epoch_seconds", 0.0),
        )
        if math.isfinite(value):
            db_call(lambda: self.trial.report(value, epoch), what=f"report trial {self.trial.number}")
        for key, metric in metrics.items():
            if key != "epoch" and isinstance(metric, (int, float)):
                self.curves.setdefault(key, []).append(float(metric))
        if isinstance(metrics.get("diagnostics"), dict):
            self.diagnostics.append({"epoch": epoch, **metrics["diagnostics"]})
        if self.upload is not None:
            # With checkpoints a retried trial resumes, and inherits the curves of its epochs from
            # the attrs. Without them the curves are written once, at the end (the recorder's
            # record); the dashboard's live chart is the reported values.
            db_call(lambda: self.trial.set_user_attr(Attr.CURVES, self.curves), what="write curves")
            self.checkpoint = self.upload(epoch, self.checkpoint)
        answer, self.stop_reason = self.verdict(epoch)
        if answer == "prune":
            _logger.info("Trial %d pruned at epoch %d", self.trial.number, epoch + 1)
        return answer
