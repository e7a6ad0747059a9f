"""Resume on retry: epoch checkpoints stored as Optuna artifacts.

After each epoch the trainer saves the full model (optimizer state included) to a local file;
the worker writes it to the artifact store (a volume shared by all workers; two alternating
files per trial, written with the store's own ``write`` so they are not listed as trial
artifacts) and records ``checkpoint = {"artifact_id", "epoch", ...}`` on the trial. When a
worker dies or is stopped, the re-queued copy of the trial carries its user attrs, so whichever
worker picks the copy up finds the checkpoint, downloads it and resumes at the next epoch
instead of training from scratch.

Checkpoints exist only for that: when a trial ends for good (COMPLETE, PRUNED, failed, cut at
the deadline) :meth:`Checkpoints.finish` deletes its files and those it inherited (about 2.7 MB
each for the quick preset's model). With ``keep_models`` (``sweep-worker --keep-models``, env
``SWEEP_KEEP_MODELS=1``) a COMPLETE trial's last checkpoint — its trained model at the last
epoch — is kept as the one listed artifact ``trial-N-model.keras`` (user attr ``model``).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts.exceptions import ArtifactNotFound

from sweep.storage.engine import db_call
from sweep.storage.trial_record import Attr, TrialRecord

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
        keep_models: Keep the trained model of each COMPLETE trial (see the module docstring).
    """

    def __init__(self, store: Any, local_dir: str | None = None, keep_models: bool = False) -> None:
        self.store = store
        self.keep_models = keep_models
        self.local_dir = Path(local_dir or tempfile.mkdtemp(prefix="regsweep-ckpt-"))
        self.local_dir.mkdir(parents=True, exist_ok=True)

    def local_path(self, trial_number: int) -> str:
        """Where the trainer writes this trial's checkpoint."""
        return str(self.local_dir / f"trial-{trial_number}.keras")

    def upload(
        self, study: optuna.Study, trial: optuna.Trial, epoch: int, previous: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """Store the checkpoint of ``epoch``; returns the new ``checkpoint`` record.

        Two files per trial alternate: each epoch overwrites the one the record does *not*
        point to, then moves the record, so a crash mid-write never corrupts the checkpoint in use.
        """
        path = self.local_path(trial.number)
        if not os.path.exists(path):
            return previous
        slots = dict((previous or {}).get("slots", {}))
        slot = "b" if (previous or {}).get("slot") == "a" else "a"
        # Not upload_artifact: its metadata (listed in the dashboard, copied to re-queued trials)
        # can never be deleted, and these files are deleted when the trial ends.
        slots.setdefault(slot, f"regsweep-checkpoint-{uuid.uuid4().hex}")
        with open(path, "rb") as handle:
            self.store.write(slots[slot], handle)
        record = {"artifact_id": slots[slot], "epoch": epoch, "slot": slot, "slots": slots}
        db_call(lambda: trial.set_user_attr(Attr.CHECKPOINT, record), what="record the checkpoint")
        return record

    def resume_point(self, trial: optuna.Trial) -> ResumePoint | None:
        """The checkpoint inherited by a retried trial, downloaded locally; None if there is none."""
        stored = TrialRecord(db_call(lambda: trial.user_attrs, what="read trial attrs"))
        record = stored.checkpoint
        if record is None:
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
        curves = {k: list(v)[:initial] for k, v in stored.curves.items()}
        system = db_call(lambda: trial.study._storage.get_trial_system_attrs(trial._trial_id), what="read trial attrs")
        _logger.info("Trial %d resumes at epoch %d from the checkpoint of trial %s",
                     trial.number, initial + 1, system.get("failed_trial"))
        return ResumePoint(path=target, initial_epoch=initial, curves=curves, from_trial=system.get("failed_trial"))

    def remove(self, record: dict[str, Any] | None) -> int:
        """Delete the files of a ``checkpoint`` record from the store; returns how many were there."""
        removed = 0
        for artifact_id in set((record or {}).get("slots", {}).values()) | {(record or {}).get("artifact_id")} - {None}:
            try:
                self.store.remove(artifact_id)
                removed += 1
            except (ArtifactNotFound, OSError):  # already gone (another worker cleaned up)
                pass
        return removed

    def finish(self, study: optuna.Study, trial: optuna.Trial, own: dict[str, Any] | None,
               inherited: dict[str, Any] | None, *, complete: bool) -> None:
        """A trial ended for good: keep its model if asked, delete every checkpoint file it used.

        Must run before the trial is told (attrs and artifacts cannot be added afterwards).

        Args:
            study: The study.
            trial: The trial, still RUNNING.
            own: Its latest ``checkpoint`` record (None if it wrote none).
            inherited: The record it started with (a re-queued copy's parent's), if any.
            complete: Whether it ends COMPLETE (only then is a model kept).
        """
        path = self.local_path(trial.number)
        if complete and self.keep_models and own is not None and os.path.exists(path):
            named = self.local_dir / f"trial-{trial.number}-model.keras"
            shutil.copyfile(path, named)
            try:
                model_id = db_call(
                    lambda: optuna.artifacts.upload_artifact(
                        artifact_store=self.store, file_path=str(named), study_or_trial=trial,
                        mimetype="application/octet-stream",
                    ),
                    what="upload the trained model",
                )
            finally:
                named.unlink(missing_ok=True)
            db_call(lambda: trial.set_user_attr(Attr.MODEL, {"artifact_id": model_id, "epoch": own.get("epoch")}),
                    what="record the model")
        removed = self.remove(own) + (self.remove(inherited) if inherited and inherited != own else 0)
        if own is not None or inherited is not None:
            db_call(lambda: trial.set_user_attr(Attr.CHECKPOINT, None), what="clear the checkpoint record")
        _logger.debug("Trial %d: %d checkpoint file(s) deleted", trial.number, removed)

    def discard(self, trial_number: int) -> None:
        """Delete this worker's local file of a trial (the store's copy stays for a retry)."""
        try:
            os.remove(self.local_path(trial_number))
        except FileNotFoundError:
            pass
