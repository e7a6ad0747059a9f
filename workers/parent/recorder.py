"""Writing a trial's record and ending it: attrs, tell, and the budget slot settled or given back.

The keys are those of :class:`sweep.storage.trial_record.Attr`; whether an ended trial counts is
decided by :func:`sweep.study.budget.counts_toward_budget` alone (settle when it counts, release
when it does not).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.trial import TrialState

from sweep.storage.engine import db_call
from sweep.storage.trial_record import Attr, StopCause
from sweep.study import budget

__all__ = ["Recorder", "TrialHook"]

_logger = logging.getLogger(__name__)
TrialHook = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


class Recorder:
    """Writes trial attrs and ends trials of one study.

    Args:
        study: The study (loaded with this worker's sampler and pruner).
        engine: The storage's engine, for the budget table.
        before_tell: Hooks called with each trial's final attrs just before it is told (plots).
    """

    def __init__(self, study: optuna.Study, engine: sa.engine.Engine, before_tell: list[TrialHook]) -> None:
        self.study = study
        self.engine = engine
        self.before_tell = before_tell
        self.requeued: list[int] = []  # trials given back (stopped, environment)

    def set(self, trial: optuna.Trial, key: str, value: Any) -> None:
        """Write one user attr (retried like every database call).

        Args:
            trial: The running trial.
            key: An :class:`Attr` key.
            value: A JSON-able value.
        """
        db_call(lambda: trial.set_user_attr(key, value), what=f"write trial attr {key!r}")

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
        self._why(trial, cause, reason, tb)
        self.set(trial, Attr.DURATION_S, round(time.monotonic() - started, 3))
        self.tell(trial, TrialState.FAIL)

    def give_back(self, trial: optuna.Trial, cause: StopCause, reason: str, tb: str | None = None) -> None:
        """Fail a trial that did not get to count, release its slot and re-queue a copy.

        Args:
            trial: The running trial.
            cause: ``SHUTDOWN`` or ``ENVIRONMENT``.
            reason: One line for people.
            tb: The traceback, if any.
        """
        self._why(trial, cause, reason, tb)
        self.tell(trial, TrialState.FAIL)
        frozen = db_call(lambda: self.study._storage.get_trial(trial._trial_id), what="read trial")
        why = "was stopped with its worker" if cause == StopCause.SHUTDOWN else f"could not run here ({cause.value})"
        budget.requeue_copy(self.study, frozen, why)
        self.requeued.append(trial.number)

    def _why(self, trial: optuna.Trial, cause: StopCause, reason: str, tb: str | None) -> None:
        self.set(trial, Attr.FAIL_REASON, reason[:2000])
        self.set(trial, Attr.STOP_CAUSE, cause.value)
        if tb:
            self.set(trial, Attr.TRACEBACK, tb[-8000:])

    def tell(self, trial: optuna.Trial, state: TrialState, value: float | None = None) -> None:
        """Run the hooks, tell the trial's end, then settle or release its budget slot.

        Args:
            trial: The running trial.
            state: COMPLETE, PRUNED or FAIL.
            value: The objective value of a COMPLETE trial.
        """
        def _do() -> None:
            try:
                self.study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
            except RuntimeError as error:  # tell retried after a commit that did land
                if "finished" not in str(error):
                    raise

        self._run_hooks(trial)
        db_call(_do, what=f"tell trial {trial.number}", attempts=20)
        attrs = db_call(lambda: self.study._storage.get_trial_user_attrs(trial._trial_id), what="read trial attrs")
        if budget.counts_toward_budget(state, attrs):
            budget.settle(self.engine, self.study.study_name)
        else:  # the slot buys another trial (see sweep.study.budget.counts_toward_budget)
            budget.release(self.engine, self.study.study_name)

    def _run_hooks(self, trial: optuna.Trial) -> None:
        if not self.before_tell:
            return
        # Artifacts cannot be attached to a finished trial: hooks see its final attrs first.
        snapshot = db_call(lambda: self.study._storage.get_trial(trial._trial_id), what="read trial")
        for hook in self.before_tell:
            try:
                hook(self.study, snapshot)
            except Exception as error:  # hooks are extras (plots): never fail the loop or the trial
                _logger.warning("before-tell hook %s failed: %s", getattr(hook, "__name__", hook), error)
