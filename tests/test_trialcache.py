"""The worker's incremental read of finished trials sees what a full read sees, on the real Postgres."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from workers.parent.trialcache import FinishedTrials


def _full(study: optuna.Study) -> list[tuple[int, TrialState, float | None]]:
    return [(t.number, t.state, t.value) for t in study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))]


def _cached(cache: FinishedTrials) -> list[tuple[int, TrialState, float | None]]:
    return [(t.number, t.state, t.value) for t in cache.get()]


def test_incremental_read_matches_a_full_read(pg_url: str, study_name: str) -> None:
    study = optuna.create_study(study_name=study_name, storage=pg_url)
    cache = FinishedTrials(study)
    assert cache.get() == []
    done = study.ask()
    study.tell(done, 1.0)
    running = study.ask()  # seen unfinished, finishes after the first read
    pruned = study.ask()
    study.tell(pruned, state=TrialState.PRUNED)
    assert _cached(cache) == _full(study) and len(_full(study)) == 2
    study.tell(running, 0.5)  # an older trial finishing after it was read as RUNNING
    later = study.ask()
    study.tell(later, state=TrialState.FAIL)  # failed ones are not evidence
    newest = study.ask()
    study.tell(newest, 2.0)
    assert _cached(cache) == _full(study) and len(_full(study)) == 4
    assert _cached(cache) == _full(study)  # nothing new: same answer
    assert [t.number for t in cache.get((TrialState.COMPLETE,))] == [done.number, running.number, newest.number]
