"""Writing a trial's record and ending it: attrs, tell, and the budget slot settled or given back.

The keys are those of :class:`sweep.storage.trial_record.Attr`; whether an ended trial counts is
decided by :func:`sweep.study.budget.counts_toward_budget` alone (settle when it counts, release
when it does not).

Attrs written together go in one transaction (:meth:`Recorder.set_many`): each ``set_user_attr``
is its own transaction, and a trial used to cost about 15 of them. Attrs of a trial's end (result,
failure reason) are deferred (:meth:`Recorder.defer`) and written with the record, the tell and
the budget slot in the tell's own transaction (:mod:`sweep.storage.finish`). The per-epoch record (curves
and diagnostics by epoch, which grow with the epochs) is staged during training and written once,
just before the tell: as a JSON artifact with a small ``record`` attr pointing to it when there is
an artifact store, else as the ``curves`` and ``diagnostics_by_epoch`` attrs (see
:mod:`workers.parent.artifacts`). Every worker's sampler and the dashboard load all trials' attrs,
so keeping the bulky part out of them keeps that cost flat as the epochs grow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import TrialState

from sweep.storage import finish
from sweep.storage.engine import db_call
from sweep.storage.finish import TrialEnd, ending_storage_of
from sweep.storage.trial_record import Attr, StopCause
from sweep.study import budget
from workers.parent.artifacts import record_store_path, upload_record

__all__ = ["Recorder", "TrialHook"]

_logger = logging.getLogger(__name__)
TrialHook = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


class Recorder:
    """Writes trial attrs and ends trials of one study.

    Args:
        study: The study (loaded with this worker's sampler and pruner, from the storage
            :func:`sweep.storage.open_storage` returns).
        engine: The storage's engine, for the budget table.
        before_tell: Hooks called with each trial's final attrs just before it is told (plots).
        store: The artifact store the per-epoch record goes to (None: it stays in the attrs).
    """

    def __init__(self, study: optuna.Study, engine: sa.engine.Engine, before_tell: list[TrialHook],
                 store: Any = None) -> None:
        self.study = study
        self.storage = ending_storage_of(study)
        self.engine = engine
        self.before_tell = before_tell
        self.store = store
        self.requeued: list[int] = []  # trials given back (stopped, environment)
        self._staged: dict[int, dict[str, Any]] = {}  # trial id -> per-epoch record, written at the tell
        self._curves_written: set[int] = set()  # trial ids with a curves attr written during training
        self._pending: dict[int, dict[str, Any]] = {}  # trial id -> attrs deferred to the tell

    def set(self, trial: optuna.Trial, key: str, value: Any) -> None:
        """Write one user attr (retried like every database call).

        Args:
            trial: The running trial.
            key: An :class:`Attr` key.
            value: A JSON-able value.
        """
        self.set_many(trial, {key: value})

    def set_many(self, trial: optuna.Trial, attrs: dict[str, Any]) -> None:
        """Write several user attrs in one transaction (retried as a whole like every database call).

        Args:
            trial: The running trial.
            attrs: :class:`Attr` keys and JSON-able values.
        """
        if not attrs:
            return
        db_call(lambda: self.storage.set_trial_user_attrs(trial._trial_id, attrs),
                what=f"write trial attrs {sorted(attrs)!r}")

    def defer(self, trial: optuna.Trial, attrs: dict[str, Any]) -> None:
        """Write ``attrs`` with the trial's end, in the one transaction :meth:`tell` writes before telling.

        Args:
            trial: The running trial (told by this recorder next).
            attrs: :class:`Attr` keys and JSON-able values.
        """
        self._pending.setdefault(trial._trial_id, {}).update(attrs)

    def stage(self, trial: optuna.Trial, curves: dict[str, list[float]], by_epoch: list[dict[str, Any]], *,
              curves_in_attrs: bool = False) -> None:
        """Hold a trial's per-epoch record until it is told (then written once, see the module doc).

        Args:
            trial: The running trial.
            curves: Per-epoch metric lists (inherited epochs of a resumed trial included).
            by_epoch: Per-epoch diagnostics.
            curves_in_attrs: Whether a ``curves`` attr was written during training (with checkpoints),
                to be cleared once the record is an artifact.
        """
        if curves_in_attrs:
            self._curves_written.add(trial._trial_id)
        record: dict[str, Any] = {}
        if curves:
            record[Attr.CURVES] = {k: list(v) for k, v in curves.items()}
        if by_epoch:
            record[Attr.DIAGNOSTICS_BY_EPOCH] = list(by_epoch)
        self._staged[trial._trial_id] = record

    def fail(self, trial: optuna.Trial, reason: str, tb: str | None, started: float,
             cause: StopCause = StopCause.TRIAL_ERROR) -> None:
        """Fail a trial with its reason (and traceback); a trial error uses its slot.

        Args:
            trial: The running trial.
            reason: One line for people.
            tb: The traceback, if any.
            started: ``time.monotonic()`` when the trial started.
            cause: Why it ended (only ``TRIAL_ERROR`` counts toward the budget).
        """
        _logger.warning("Trial %d failed: %s", trial.number, reason)
        self.defer(trial, {**self._why(cause, reason, tb), Attr.DURATION_S: round(time.monotonic() - started, 3)})
        self.tell(trial, TrialState.FAIL)

    def give_back(self, trial: optuna.Trial, cause: StopCause, reason: str, tb: str | None = None) -> None:
        """Fail a trial that did not get to count, release its slot and re-queue a copy.

        Args:
            trial: The running trial.
            cause: ``SHUTDOWN`` or ``ENVIRONMENT``.
            reason: One line for people.
            tb: The traceback, if any.
        """
        self.defer(trial, self._why(cause, reason, tb))
        self.tell(trial, TrialState.FAIL, keep_curves=True)  # the re-queued copy resumes with them
        frozen = db_call(lambda: self.study._storage.get_trial(trial._trial_id), what="read trial")
        why = "was stopped with its worker" if cause == StopCause.SHUTDOWN else f"could not run here ({cause.value})"
        budget.requeue_copy(self.study, frozen, why)
        self.requeued.append(trial.number)

    @staticmethod
    def _why(cause: StopCause, reason: str, tb: str | None) -> dict[str, Any]:
        attrs: dict[str, Any] = {Attr.FAIL_REASON: reason[:2000], Attr.STOP_CAUSE: cause.value}
        if tb:
            attrs[Attr.TRACEBACK] = tb[-8000:]
        return attrs

    def tell(self, trial: optuna.Trial, state: TrialState, value: float | None = None, *,
             keep_curves: bool = False) -> None:
        """Run the hooks, then write the per-epoch record, tell the trial's end and settle or release its slot.

        Args:
            trial: The running trial.
            state: COMPLETE, PRUNED or FAIL.
            value: The objective value of a COMPLETE trial.
            keep_curves: Leave a ``curves`` attr written during training in place (a trial given
                back: its re-queued copy inherits the attrs and resumes with them).
        """
        def _do() -> None:
            try:
                # Skipped if another process ended it (failed as stale) meanwhile.
                finish.tell(self.study, trial, value if state == TrialState.COMPLETE else None, state)
            except RuntimeError as error:  # tell retried after a commit that did land
                if "finished" not in str(error):
                    raise

        pending = self._pending.pop(trial._trial_id, {})
        record = self._staged.pop(trial._trial_id, {})
        self._run_hooks(trial, {**pending, **record})
        attrs = {**pending, **self._record_attrs(trial, record, keep_curves)}
        # The deferred attrs, the tell and the budget slot: one transaction. A trial another process
        # already ended (failed as stale) gets none of them: that process released its slot and
        # re-queued it.
        name = self.study.study_name
        end = TrialEnd(trial._trial_id, attrs, lambda conn, s, a: budget.end_slot_on(conn, name, s, a))
        with self.storage.ending(end):
            db_call(_do, what=f"tell trial {trial.number}", attempts=20)

    def _record_attrs(self, trial: optuna.Trial, record: dict[str, Any], keep_curves: bool) -> dict[str, Any]:
        """The attrs of the staged per-epoch record: its artifact's ``record`` pointer (uploaded
        here), else, with no store, the record itself."""
        if not record:
            return {}
        if self.store is None:
            return record
        try:
            # Retried as a whole like every database call (a retry may leave an unused file behind).
            artifact_id = db_call(lambda: upload_record(self.store, self.study, trial, record),
                                  what=f"store the record of trial {trial.number}")
        except (OSError, ArtifactNotFound) as error:  # the store is unwritable: keep the data in the attrs
            _logger.warning("Trial %d: per-epoch record not stored as an artifact (%s); kept in attrs",
                            trial.number, error)
            return record
        attrs: dict[str, Any] = {Attr.RECORD: {"artifact_id": artifact_id,
                                               "store": record_store_path(self.store)}}
        written = trial._trial_id in self._curves_written
        self._curves_written.discard(trial._trial_id)
        if not keep_curves and written:
            attrs[Attr.CURVES] = None  # written during training for a resume; the artifact has them now
        return attrs

    def _run_hooks(self, trial: optuna.Trial, record: dict[str, Any]) -> None:
        if not self.before_tell:
            return
        # Artifacts cannot be attached to a finished trial: hooks see its final attrs first,
        # with the staged per-epoch record in them as the attrs used to hold it.
        snapshot = db_call(lambda: self.study._storage.get_trial(trial._trial_id), what="read trial")
        snapshot.user_attrs = {**snapshot.user_attrs, **record}
        for hook in self.before_tell:
            try:
                hook(self.study, snapshot)
            except Exception as error:  # hooks are extras (plots): never fail the loop or the trial
                _logger.warning("before-tell hook %s failed: %s", getattr(hook, "__name__", hook), error)
