"""Resume on retry: epoch checkpoints stored as Optuna artifacts.

After each epoch the trainer saves the full model (optimizer state included) to a local file;
the worker writes it to the artifact store (a volume shared by all workers; two alternating
artifacts per trial) and records ``checkpoint = {"artifact_id", "epoch", ...}`` on the trial.
The last one of a COMPLETE trial is its trained model, downloadable from the dashboard. When a worker dies, Optuna's retry callback re-queues a copy of the trial *with
its user attrs*, so whichever worker picks the copy up finds the checkpoint, downloads it and
resumes at the next epoch instead of training from scratch.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts.exceptions import ArtifactNotFound

from sweep.storage import db_call

__all__ = ["ResumePoint", "Checkpoints"]

_logger = logging.getLogger(__name__)


@dataclass
class ResumePoint:
    """Where a retried trial picks up: a local checkpoint and the curves of the epochs before it."""

    path: str
    initial_epoch: int
    curves: dict[str, list[float]] = field(default_factory=dict)
    from_trial: int | None = None


class Checkpoints:
    """Uploads per-epoch checkpoints and finds resume points.

    Args:
        store: The artifact store shared by workers (``FileSystemArtifactStore`` on a volume).
        local_dir: Scratch directory for this worker's checkpoint files.
    """

    def __init__(self, store: Any, local_dir: str | None = None) -> None:
        self.store = store
        self.local_dir = Path(local_dir or tempfile.mkdtemp(prefix="regsweep-ckpt-"))
        self.local_dir.mkdir(parents=True, exist_ok=True)

    def local_path(self, trial_number: int) -> str:
        """Where the trainer writes this trial's checkpoint."""
        return str(self.local_dir / f"trial-{trial_number}.keras")

    def upload(self, study: optuna.Study, trial: optuna.Trial, epoch: int, previous: dict[str, Any] | None) -> dict[str, Any] | None:
        """Store the checkpoint of ``epoch``; returns the new ``checkpoint`` record.

        Two artifacts per trial alternate: each epoch overwrites the one the record does *not*
        point to, then moves the record. A crash mid-write never corrupts the checkpoint in use,
        and the trial lists just two checkpoint artifacts (Optuna cannot delete artifact metadata).
        """
        path = self.local_path(trial.number)
        if not os.path.exists(path):
            return previous
        slots = dict((previous or {}).get("slots", {}))
        slot = "b" if (previous or {}).get("slot") == "a" else "a"
        if slot in slots:
            with open(path, "rb") as handle:
                self.store.write(slots[slot], handle)
        else:
            named = self.local_dir / f"trial-{trial.number}-checkpoint-{slot}.keras"
            shutil.copyfile(path, named)
            try:
                slots[slot] = db_call(
                    lambda: optuna.artifacts.upload_artifact(
                        artifact_store=self.store, file_path=str(named), study_or_trial=trial,
                        mimetype="application/octet-stream",
                    ),
                    what="upload a checkpoint",
                )
            finally:
                named.unlink(missing_ok=True)
        record = {"artifact_id": slots[slot], "epoch": epoch, "slot": slot, "slots": slots}
        db_call(lambda: trial.set_user_attr("checkpoint", record), what="record the checkpoint")
        return record

    def resume_point(self, trial: optuna.Trial) -> ResumePoint | None:
        """The checkpoint inherited by a retried trial, downloaded locally; None if there is none."""
        attrs = db_call(lambda: trial.user_attrs, what="read trial attrs")
        record = attrs.get("checkpoint")
        if not record:
            return None
        target = self.local_path(trial.number)
        try:
            with self.store.open_reader(record["artifact_id"]) as reader, open(target, "wb") as out:
                shutil.copyfileobj(reader, out)
        except (ArtifactNotFound, OSError) as error:
            _logger.warning("Trial %d: checkpoint %s unavailable (%s); training from scratch",
                            trial.number, record.get("artifact_id"), error)
            return None
        initial = int(record["epoch"]) + 1
        curves = {k: list(v)[:initial] for k, v in (attrs.get("curves") or {}).items()}
        system = db_call(lambda: trial.study._storage.get_trial_system_attrs(trial._trial_id), what="read trial attrs")
        _logger.info("Trial %d resumes at epoch %d from the checkpoint of trial %s",
                     trial.number, initial + 1, system.get("failed_trial"))
        return ResumePoint(path=target, initial_epoch=initial, curves=curves, from_trial=system.get("failed_trial"))

    def discard(self, trial_number: int) -> None:
        """Delete the local file of a finished trial (the artifact stays for a later retry)."""
        try:
            os.remove(self.local_path(trial_number))
        except FileNotFoundError:
            pass
