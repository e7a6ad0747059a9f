"""Predict how long the next trial will take, so no trial starts that cannot finish by the deadline.

Evidence is the wall time of trials that ran all their epochs on the same GPU type (falling back to
per-epoch time scaled to the full epoch count, then to any device). The estimate is deliberately
pessimistic — the larger of 1.25x the median and the 90th percentile — because a median alone is
exceeded by half of all trials. A night's first trials have no evidence in their own study, so the
previous nights' studies of the same sweep (``NAME-YYYY-MM-DD``) stand in.
"""

from __future__ import annotations

import functools
import re
import statistics
from collections.abc import Callable, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweep.storage.engine import db_call
from sweep.storage.trial_record import TrialRecord

__all__ = ["DurationEvidence", "predict_duration", "estimate", "sibling_trials"]

_DATED = re.compile(r"^(?P<prefix>.+)-\d{4}-\d{2}-\d{2}$")


def estimate(durations: Sequence[float]) -> float:
    """A pessimistic duration from samples: max(1.25 x median, 90th percentile)."""
    ordered = sorted(durations)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return max(1.25 * statistics.median(ordered), p90)


class DurationEvidence:
    """Wall times of finished trials, each read once: a worker checks before every trial, and
    re-reading every trial's attrs there grew with the study (10 ms a trial at 5,000 trials).

    Args:
        gpu: This worker's GPU name (``"cpu"`` without one).
        epochs: Epochs a trial trains.
    """

    def __init__(self, gpu: str, epochs: int) -> None:
        self.gpu = gpu
        self.epochs = epochs
        self._same: list[float] = []  # full runs on this GPU type
        self._other: list[float] = []  # full runs elsewhere
        self._per_epoch: list[float] = []  # partial runs on this GPU type, per epoch
        self._seen: set[int] = set()  # trial ids already counted (finished trials do not change)

    def add(self, trials: Sequence[FrozenTrial]) -> DurationEvidence:
        """Count the finished trials among ``trials`` not counted yet; returns ``self``."""
        for t in trials:
            if t._trial_id in self._seen or not t.state.is_finished():
                continue
            self._seen.add(t._trial_id)
            record = TrialRecord(t.user_attrs)
            if t.state not in (TrialState.COMPLETE, TrialState.PRUNED) or record.dedup_of is not None:
                continue
            duration, ran = record.duration_s, record.epochs_run
            if not duration or not ran:
                continue
            on_same = record.worker.get("gpu") == self.gpu
            if ran >= self.epochs:
                (self._same if on_same else self._other).append(float(duration))
            elif on_same:
                self._per_epoch.append(float(duration) / ran)
        return self

    def seconds(self) -> float:
        """A trial's expected seconds: from full runs on this GPU type, else its per-epoch times,
        else any device's full runs; 0.0 with no evidence."""
        if self._same:
            return estimate(self._same)
        if self._per_epoch:
            return estimate(self._per_epoch) * self.epochs
        if self._other:
            return estimate(self._other)
        return 0.0


def sibling_trials(study: optuna.Study, limit: int = 3) -> list[FrozenTrial]:
    """Trials of the previous nights of a dated study (``NAME-YYYY-MM-DD``), newest first."""
    match = _DATED.match(study.study_name)
    if match is None:
        return []
    storage = study._storage
    # Names only: get_all_study_summaries reads every trial of every study in the storage to count
    # them (33 s for a worker's first ask on a database of 146 studies).
    all_names = db_call(lambda: optuna.get_all_study_names(storage), what="list studies")
    names = sorted(
        (name for name in all_names
         if name != study.study_name and (m := _DATED.match(name)) and m["prefix"] == match["prefix"]),
        reverse=True,
    )[:limit]
    trials: list[FrozenTrial] = []
    for name in names:
        trials += db_call(functools.partial(_trials_of, name, storage), what=f"read trials of {name!r}")
    return trials


def predict_duration(study: optuna.Study, gpu: str, epochs: int,
                     siblings: Callable[[], Sequence[FrozenTrial]] | None = None,
                     evidence: DurationEvidence | None = None) -> float:
    """Seconds the next trial is expected to take on ``gpu`` (0.0 when nothing is known at all).

    Args:
        study: The study whose finished trials are the evidence.
        gpu: This worker's GPU name (``"cpu"`` without one).
        epochs: Epochs a trial trains.
        siblings: The previous nights' trials (default: read now with :func:`sibling_trials`); a
            worker passes them read once per process, as finished nights do not change.
        evidence: This study's evidence so far, to add only the trials finished since (a worker
            keeps one across its trials); default: counted afresh.
    """
    # Incremental in a worker: Optuna's _CachedStorage (every study on an RDBStorage) keeps finished
    # trials and reads only newer or unfinished ones.
    own = db_call(lambda: study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)),
                  what="read trials")
    predicted = (evidence or DurationEvidence(gpu, epochs)).add(own).seconds()
    if predicted > 0:
        return predicted
    return DurationEvidence(gpu, epochs).add(siblings() if siblings is not None else sibling_trials(study)).seconds()


def _trials_of(name: str, storage: optuna.storages.BaseStorage) -> list[FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
