"""kill -9 mid-trial (optuna#1641/#3215): a dead worker's trial is failed and re-run, a dead
training child fails only its trial, and the budget still holds."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from optuna.trial import TrialState

from sweep.storage.engine import engine_of, open_storage
from sweep.study.budget import budget_state
from tests.reliability.support import (
    FINISHED,
    Worker,
    alive,
    by_state,
    create_synthetic,
    start_worker,
    tails,
    trainer_child,
    trials_of,
    wait_for,
    wait_workers,
    worker_group,
)

HEARTBEAT = ("--heartbeat-interval", "1", "--grace-period", "3")
GRACE_S = 3


def _running_trial_of(url: str, study: str, worker: Worker) -> int | None:
    """Number of a trial ``worker`` runs that has reported at least one epoch."""
    for t in trials_of(url, study):
        if (
            t.state == TrialState.RUNNING
            and t.intermediate_values
            and t.user_attrs.get("worker", {}).get("pid") == worker.pid
        ):
            return t.number
    return None


def test_killed_worker_trial_is_failed_requeued_and_completed(pg_url: str, study_name: str, tmp_path: Path) -> None:
    """SIGKILL one of two workers mid-trial; its trial goes FAIL, a copy is re-queued and completed."""
    budget = 4
    # 8 epochs x 0.5 s: a trial lasts about 4 s, long enough to be killed in the middle.
    create_synthetic(pg_url, tmp_path, study_name, trials=budget, epochs=8, epoch_seconds=0.5, dedup=False)
    with worker_group() as workers:
        workers.append(start_worker(pg_url, study_name, tmp_path / "logs", 0, *HEARTBEAT))
        victim_worker = workers[0]
        wait_for(lambda: _running_trial_of(pg_url, study_name, victim_worker), 90, "worker 0 to start a trial")
        # The survivor starts second, so worker 0 surely has a trial; it is busy with its own when 0 dies.
        workers.append(start_worker(pg_url, study_name, tmp_path / "logs", 1, *HEARTBEAT))
        wait_for(lambda: _running_trial_of(pg_url, study_name, workers[1]), 90, "worker 1 to start a trial")
        victim = wait_for(lambda: _running_trial_of(pg_url, study_name, victim_worker), 30,
                          "worker 0 to be in the middle of a trial")
        child = trainer_child(victim_worker.pid)
        os.kill(victim_worker.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        victim_worker.proc.wait(timeout=10)
        assert child is not None, "worker 0 had no training child"
        wait_for(lambda: not alive(child), 10, f"the killed worker's training child {child} to die with it")

        def victim_failed() -> bool:
            return any(t.number == victim and t.state == TrialState.FAIL for t in trials_of(pg_url, study_name))

        wait_for(victim_failed, 60, f"trial {victim} of the killed worker to become FAIL")
        time_to_fail = time.monotonic() - killed_at
        wait_workers(workers[1:], timeout=120)
        assert workers[1].proc.returncode == 0, tails(workers)

    trials = trials_of(pg_url, study_name)
    copies = [t for t in trials if t.system_attrs.get("failed_trial") == victim]
    assert len(copies) == 1, f"expected one re-queued copy of trial {victim}: {by_state(trials)}"
    assert copies[0].state == TrialState.COMPLETE, copies[0].state
    assert copies[0].params == trials[victim].params
    assert copies[0].user_attrs["worker"]["pid"] == workers[1].pid
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == budget, f"budget {budget}, finished {by_state(trials)}"
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)], by_state(trials)
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [victim]
    state = budget_state(engine_of(open_storage(pg_url)), study_name)
    assert state is not None and (state.claimed, state.settled) == (budget, budget), state
    print(f"\n[killed worker] trial {victim} FAIL {time_to_fail:.1f}s after kill -9 (grace {GRACE_S}s), "
          f"re-run as trial {copies[0].number}; {len(finished)}/{budget} finished, {by_state(trials)}")


def test_killed_training_child_fails_only_its_trial(pg_url: str, study_name: str, tmp_path: Path) -> None:
    """SIGKILL only the training child: that trial fails with the signal named, the worker goes on."""
    budget = 3
    create_synthetic(pg_url, tmp_path, study_name, trials=budget, epochs=6, epoch_seconds=0.5, dedup=False)
    with worker_group() as workers:
        workers.append(start_worker(pg_url, study_name, tmp_path / "logs", 0, *HEARTBEAT))
        worker = workers[0]
        victim = wait_for(
            lambda: _running_trial_of(pg_url, study_name, worker), 90, "a trial in the middle of training"
        )
        child = wait_for(lambda: trainer_child(worker.pid), 10, "the worker's training child")
        os.kill(child, signal.SIGKILL)
        wait_workers(workers, timeout=120)
        assert worker.proc.returncode == 0, tails(workers)

    trials = trials_of(pg_url, study_name)
    failed = trials[victim]
    assert failed.state == TrialState.FAIL
    reason = failed.user_attrs.get("fail_reason", "")
    assert reason.startswith("training process died (killed by signal 9"), reason
    assert by_state(trials) == {"COMPLETE": budget - 1, "FAIL": 1}, by_state(trials)  # the failure counts
    later = [t for t in trials if t.number > victim]
    assert later and later[0].user_attrs["diagnostics"]["trainer_trials"] == 1, (
        "the next trial did not get a fresh child"
    )
    print(f"\n[killed child] trial {victim}: {reason!r}; worker went on: {by_state(trials)}")
