"""A trial's end is one transaction: its last attrs, its state and value, and its budget slot.

Real PostgreSQL and SQLite (``storage_url``); the storage is the one ``open_storage`` opens.
"""

from __future__ import annotations

import time
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from sweep.errors import StorageError
from sweep.storage.engine import engine_of, open_storage
from sweep.storage.finish import EndingStorage, TrialEnd
from sweep.study import budget
from workers.parent.recorder import Recorder


def _study(url: str, name: str, total: int = 3) -> optuna.Study:
    storage = open_storage(url)
    assert isinstance(storage, EndingStorage)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    budget.ensure_budget(engine_of(storage), name, total)
    return study


def _state(study: optuna.Study) -> tuple[int, int]:
    state = budget.budget_state(engine_of(study._storage), study.study_name)
    assert state is not None
    return state.claimed, state.settled


def test_attrs_tell_and_settle_land_together(storage_url: str, study_name: str) -> None:
    study = _study(storage_url, study_name)
    assert budget.claim(engine_of(study._storage), study_name) == 1
    trial = study.ask()
    recorder = Recorder(study, engine_of(study._storage), before_tell=[])
    recorder.defer(trial, {"result": {"val_accuracy": 0.9}})
    recorder.tell(trial, TrialState.COMPLETE, 0.9)
    done = study.trials[0]
    assert done.state == TrialState.COMPLETE and done.value == 0.9
    assert done.user_attrs["result"] == {"val_accuracy": 0.9}
    assert _state(study) == (1, 1)


def test_a_trial_that_does_not_count_gives_its_slot_back(storage_url: str, study_name: str) -> None:
    study = _study(storage_url, study_name)
    budget.claim(engine_of(study._storage), study_name)
    trial = study.ask()
    trial.set_user_attr("dedup_of", 0)  # reused another trial's result: no model trained
    Recorder(study, engine_of(study._storage), before_tell=[]).tell(trial, TrialState.COMPLETE, 0.5)
    assert _state(study) == (0, 0)


def test_a_failing_step_leaves_the_trial_running_and_nothing_written(storage_url: str, study_name: str) -> None:
    study = _study(storage_url, study_name)
    budget.claim(engine_of(study._storage), study_name)
    trial = study.ask()
    storage = study._storage._backend  # type: ignore[attr-defined]

    def broken(conn: Any, state: TrialState, attrs: Any) -> None:
        budget.settle_on(conn, study_name)
        raise RuntimeError("disk full")

    with storage.ending(TrialEnd(trial._trial_id, {"result": 1}, broken)), pytest.raises(RuntimeError, match="disk"):
        study.tell(trial, 0.7)
    fresh = open_storage(storage_url).get_trial(trial._trial_id)
    assert fresh.state == TrialState.RUNNING and "result" not in fresh.user_attrs
    assert _state(study) == (1, 0)


def test_a_trial_ended_elsewhere_gets_neither_attrs_nor_a_settle(storage_url: str, study_name: str) -> None:
    study = _study(storage_url, study_name)
    budget.claim(engine_of(study._storage), study_name)
    trial = study.ask()
    # Another process fails it as stale (and its callback would release the slot).
    open_storage(storage_url).set_trial_state_values(trial._trial_id, TrialState.FAIL)
    Recorder(study, engine_of(study._storage), before_tell=[]).tell(trial, TrialState.COMPLETE, 0.8)
    fresh = open_storage(storage_url).get_trial(trial._trial_id)
    assert fresh.state == TrialState.FAIL and fresh.value is None
    assert _state(study) == (1, 0)


def test_other_threads_and_trials_end_the_plain_way(storage_url: str, study_name: str) -> None:
    study = _study(storage_url, study_name)
    first, second = study.ask(), study.ask()
    storage = study._storage._backend  # type: ignore[attr-defined]
    with storage.ending(TrialEnd(first._trial_id, {"staged": True})):
        study.tell(second, 0.1)  # not the staged trial: Optuna's own path, nothing extra
    study.tell(first, 0.2)  # outside the block: nothing staged any more
    by_number = {t.number: t for t in study.trials}
    assert "staged" not in by_number[0].user_attrs and "staged" not in by_number[1].user_attrs
    assert [by_number[0].value, by_number[1].value] == [0.2, 0.1]


def test_a_recorder_needs_the_storage_open_storage_returns(pg_url: str, study_name: str) -> None:
    study = optuna.create_study(study_name=study_name, storage=optuna.storages.RDBStorage(pg_url))
    with pytest.raises(StorageError, match=r"needs the storage sweep.storage.open_storage returns.*RDBStorage"):
        Recorder(study, engine_of(study._storage), before_tell=[])


def _heartbeat_rows(study: optuna.Study) -> dict[int, int]:
    """Heartbeat rows per trial id of ``study`` (read with plain SQL, not through Optuna)."""
    import sqlalchemy as sa

    with engine_of(study._storage).connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT h.trial_id, count(*) FROM trial_heartbeats h JOIN trials t ON t.trial_id = h.trial_id "
            "JOIN studies s ON s.study_id = t.study_id WHERE s.study_name = :name GROUP BY h.trial_id"),
            {"name": study.study_name})
        return {int(trial_id): int(n) for trial_id, n in rows}


def test_with_heartbeats_a_trial_starts_with_its_first_beat(storage_url: str, study_name: str) -> None:
    """Asked fresh or taken from the queue: the heartbeat row is there as soon as the trial runs,
    so a worker killed right after its ask leaves a trial that turns stale (not RUNNING for good)."""
    from sweep.storage.engine import StorageConfig

    storage = open_storage(storage_url, StorageConfig(heartbeat_interval=1, grace_period=1))
    assert isinstance(storage, EndingStorage) and storage.beats_at_start
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize")
    fresh = study.ask()
    study.enqueue_trial({"x": 1.0})
    assert _heartbeat_rows(study) == {fresh._trial_id: 1}, "the enqueued (WAITING) trial must not beat"
    queued = study.ask()
    assert queued.suggest_float("x", 0, 2) == 1.0  # the enqueued one
    assert _heartbeat_rows(study) == {fresh._trial_id: 1, queued._trial_id: 1}
    storage.record_heartbeat(queued._trial_id)  # later beats update the one row
    assert _heartbeat_rows(study)[queued._trial_id] == 1
    # Nobody beats them: both turn stale and are failed.
    time.sleep(2.5)
    optuna.storages.fail_stale_trials(study)
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.FAIL]


def test_without_heartbeats_nothing_beats(storage_url: str, study_name: str) -> None:
    study = _study(storage_url, study_name)
    assert not study._storage._backend.beats_at_start  # type: ignore[attr-defined]
    study.ask()
    assert _heartbeat_rows(study) == {}


@pytest.mark.parametrize("heartbeats", [False, True], ids=["plain", "heartbeats"])
def test_a_worker_s_ask_claims_its_slot_in_the_same_transaction(storage_url: str, study_name: str,
                                                                heartbeats: bool) -> None:
    """Asked fresh or taken from the queue, a trial and its slot exist together; with no slot
    left, the ask creates or takes no trial and claims nothing."""
    from sweep.errors import BudgetSpent
    from sweep.storage.engine import StorageConfig

    config = StorageConfig(heartbeat_interval=60, grace_period=120) if heartbeats else StorageConfig()
    storage = open_storage(storage_url, config)
    assert isinstance(storage, EndingStorage)
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize")
    budget.ensure_budget(engine_of(storage), study_name, 2)
    slots: list[int] = []

    def claim(conn: Any) -> None:
        slots.append(budget.claim_on_or_raise(conn, study_name))

    with storage.starting(claim):
        fresh = study.ask()
        study.enqueue_trial({"x": 1.0})
        queued = study.ask()
        assert slots == [1, 2] and _state(study) == (2, 0)
        study.enqueue_trial({"x": 0.5})
        with pytest.raises(BudgetSpent, match=repr(study_name)):
            study.ask()
    assert queued.suggest_float("x", 0, 2) == 1.0
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING, TrialState.RUNNING, TrialState.WAITING]
    assert _state(study) == (2, 0)
    expected = {fresh._trial_id: 1, queued._trial_id: 1} if heartbeats else {}
    assert _heartbeat_rows(study) == expected
    # Outside the block an ask claims nothing (the plain Optuna way).
    study.ask()
    assert _state(study) == (2, 0) and len(study.get_trials()) == 3


def test_an_ask_is_rolled_back_whole_when_its_claim_fails(storage_url: str, study_name: str) -> None:
    study = _study(storage_url, study_name, total=1)
    storage = study._storage._backend  # type: ignore[attr-defined]

    def broken_claim(conn: Any) -> None:
        budget.claim_on(conn, study_name)
        raise RuntimeError("connection lost after the claim")

    with storage.starting(broken_claim), pytest.raises(RuntimeError, match="connection lost"):
        study.ask()
    assert study.get_trials() == [] and _state(study) == (0, 0)


def _writes(storage: EndingStorage) -> list[list[str]]:
    """Tables written by each committed transaction on ``storage`` from now on (reads commit too:
    those are left out)."""
    committed: list[list[str]] = []
    pending: list[str] = []

    def statement(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        words = sql.split()
        if words[0] in ("INSERT", "UPDATE"):
            pending.append(words[2] if words[0] == "INSERT" else words[1])

    def commit(conn: Any) -> None:
        if pending:
            committed.append(sorted(set(pending)))
            pending.clear()

    sqlalchemy.event.listen(storage.engine, "before_cursor_execute", statement)
    sqlalchemy.event.listen(storage.engine, "commit", commit)
    return committed


def _params_seen_elsewhere(url: str, name: str, number: int) -> dict[str, Any]:
    """The trial's params as another process reads them (a storage of its own)."""
    return optuna.load_study(study_name=name, storage=open_storage(url)).trials[number].params


def test_a_trial_s_sampled_params_commit_with_its_start_attrs(storage_url: str, study_name: str) -> None:
    study = _study(storage_url, study_name)
    storage = study._storage._backend  # type: ignore[attr-defined]
    trial = study.ask()
    writes = _writes(storage)
    with storage.holding_params(trial._trial_id):
        x = trial.suggest_float("x", 1e-6, 1.0, log=True)
        kind = trial.suggest_categorical("kind", ["l1", "l2"])
        assert writes == [] and _params_seen_elsewhere(storage_url, study_name, 0) == {}
        storage.set_trial_user_attrs(trial._trial_id, {"config": {"kind": kind, "x": x}})
        assert writes == [["trial_params", "trial_user_attributes"]]
        storage.set_trial_user_attrs(trial._trial_id, {"seed": 3})  # the params are written once
    assert writes[1:] == [["trial_user_attributes"]]
    seen = optuna.load_study(study_name=study_name, storage=open_storage(storage_url)).trials[0]
    assert seen.params == {"x": x, "kind": kind}
    assert seen.user_attrs == {"config": {"kind": kind, "x": x}, "seed": 3}
    # Outside the block each param commits on its own again (Optuna's way), for any trial.
    other = study.ask()
    other.suggest_float("x", 1e-6, 1.0, log=True)
    assert writes[2:] == [["trials"], ["trial_params"]] and "x" in _params_seen_elsewhere(storage_url, study_name, 1)


def test_held_params_left_unwritten_by_attrs_are_committed_at_the_block_s_end(storage_url: str,
                                                                                study_name: str) -> None:
    study = _study(storage_url, study_name)
    storage = study._storage._backend  # type: ignore[attr-defined]
    kept, dropped = study.ask(), study.ask()
    with storage.holding_params(kept._trial_id):
        value = kept.suggest_float("x", 0.0, 1.0)
    assert _params_seen_elsewhere(storage_url, study_name, 0) == {"x": value}
    # A start that fails takes its sampled config with it: the trial is failed without params.
    with pytest.raises(RuntimeError, match="start failed"), storage.holding_params(dropped._trial_id):
        dropped.suggest_float("x", 0.0, 1.0)
        raise RuntimeError("start failed")
    assert _params_seen_elsewhere(storage_url, study_name, 1) == {}


def test_a_held_param_that_contradicts_the_study_fails_its_attrs_write_whole(storage_url: str,
                                                                            study_name: str) -> None:
    """Optuna's check that a param keeps its distribution across the study still runs, at the write."""
    study = _study(storage_url, study_name)
    storage = study._storage._backend  # type: ignore[attr-defined]
    study.ask().suggest_float("x", 0.0, 1.0)  # the study's "x" is a float in [0, 1]
    trial = study.ask()
    with pytest.raises(ValueError, match="distribution"), storage.holding_params(trial._trial_id):
        trial.suggest_categorical("x", ["a", "b"])
        storage.set_trial_user_attrs(trial._trial_id, {"config": "a categorical x"})
    seen = optuna.load_study(study_name=study_name, storage=open_storage(storage_url)).trials[1]
    assert seen.params == {} and seen.user_attrs == {}
