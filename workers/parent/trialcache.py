"""A worker's incremental view of its study's finished trials.

A finished trial never changes, so a worker that needs the finished trials on every loop iteration
(duration prediction) reads each one once: every refresh asks only for trials newer than the
newest it has seen, plus those it saw unfinished (the way Optuna's old ``_CachedStorage`` read).
On a storage other than :class:`optuna.storages.RDBStorage` every refresh reads all trials.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweep.storage.engine import db_call

__all__ = ["FinishedTrials"]


class FinishedTrials:
    """The study's finished trials, read incrementally.

    Args:
        study: The study.
    """

    def __init__(self, study: optuna.Study) -> None:
        self.study = study
        self._finished: dict[int, FrozenTrial] = {}  # trial id -> finished trial
        self._unfinished: set[int] = set()  # ids seen not yet finished
        self._newest = -1  # the largest trial id read

    def get(self, states: tuple[TrialState, ...] = (TrialState.COMPLETE, TrialState.PRUNED)) -> list[FrozenTrial]:
        """The finished trials in ``states``, by number, after reading what changed since the last call."""
        storage = self.study._storage
        if not isinstance(storage, optuna.storages.RDBStorage):
            return db_call(lambda: self.study.get_trials(deepcopy=False, states=states), what="read trials")
        study_id = self.study._study_id
        fresh = db_call(lambda: storage._get_trials(study_id, None, set(self._unfinished), self._newest),
                        what="read new trials")
        for t in fresh:
            self._newest = max(self._newest, t._trial_id)
            if t.state.is_finished():
                self._finished[t._trial_id] = t
                self._unfinished.discard(t._trial_id)
            else:
                self._unfinished.add(t._trial_id)
        return sorted((t for t in self._finished.values() if t.state in states), key=lambda t: t.number)
