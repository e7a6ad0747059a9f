"""One rule decides whether a trial counts toward the budget (`sweep.study.budget.counts_toward_budget`),
on the structured ``stop_cause`` attr; the worker loop, `sweep status` and the night closer agree."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweep.storage.engine import engine_of, open_storage
from sweep.storage.trial_record import StopCause
from sweep.study.budget import budget_state, counts_toward_budget
from tests.helpers import BIN, REPO, run_cli, synthetic_spec, worker_env


@pytest.mark.parametrize(
    ("state", "attrs", "counts"),
    [
        (TrialState.COMPLETE, {}, True),
        (TrialState.PRUNED, {}, True),
        (TrialState.COMPLETE, {"dedup_of": 3}, False),  # reused a result: trained nothing
        (TrialState.COMPLETE, {"dedup_of": 3, "dedup_counted": True}, True),  # the space was exhausted
        (TrialState.FAIL, {"stop_cause": "trial_error", "fail_reason": "ValueError: x"}, True),
        (TrialState.FAIL, {"stop_cause": "shutdown", "fail_reason": "shutdown: worker stopped"}, False),
        (TrialState.FAIL, {"stop_cause": "deadline", "fail_reason": "deadline: stopped between epochs"}, False),
        (TrialState.FAIL, {"stop_cause": "environment", "fail_reason": "environment: DataError: ..."}, False),
        (TrialState.FAIL, {}, False),  # failed as stale: its slot went back when it was re-queued
        # studies written before stop_cause existed: the old text rule, in the same one place
        (TrialState.FAIL, {"fail_reason": "TrialDiverged: loss became nan at epoch 2"}, True),
        (TrialState.FAIL, {"fail_reason": "deadline: no heartbeat for 70s"}, False),
        (TrialState.RUNNING, {}, False),
        (TrialState.WAITING, {"stop_cause": "trial_error"}, False),
    ],
)
def test_counts_toward_budget(state: TrialState, attrs: dict[str, object], counts: bool) -> None:
    assert counts_toward_budget(state, attrs) is counts
    assert counts_toward_budget(state.name, attrs) is counts  # by name too (report data)


def test_stop_causes_are_the_stored_strings() -> None:
    assert [c.value for c in StopCause] == ["trial_error", "shutdown", "deadline", "environment"]


def test_deadline_stop_is_released_and_status_agrees(pg_url: str, study_name: str, tmp_path: Path) -> None:
    """A trial cut at the deadline between epochs: the loop releases its slot (it used to settle it
    while `sweep status` did not count it), and status, budget table and rule all say 0."""
    deadline = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=20)).replace(microsecond=0)
    spec = synthetic_spec(tmp_path, study_name, epochs=30, epoch_seconds=1.0,
                          changes={"budget": {"trials": None, "deadline": deadline.isoformat()}})
    run_cli("create", str(spec), "--storage", pg_url, check=True)
    env = worker_env(pg_url, study_name)
    worker = subprocess.run([str(BIN / "sweep-worker"), "--heartbeat-interval", "1", "--grace-period", "3"],
                            env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert worker.returncode == 0, worker.stderr[-3000:]
    trials = optuna.load_study(study_name=study_name, storage=pg_url).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL], [(t.state, t.user_attrs.get("fail_reason")) for t in trials]
    assert trials[0].user_attrs["stop_cause"] == "deadline"
    assert trials[0].user_attrs["fail_reason"].startswith("deadline: stopped between epochs")
    state = budget_state(engine_of(open_storage(pg_url)), study_name)
    assert state is not None and (state.claimed, state.settled) == (0, 0), state
    status = run_cli("status", study_name, "--json", "--storage", pg_url, check=True)
    shown = json.loads(status.stdout)
    assert shown["counted"] == 0 and shown["budget_claimed"] == 0, shown
