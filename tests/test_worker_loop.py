"""The worker loop on real Postgres with real worker processes (synthetic and faulty trainers)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from sweep.storage.engine import engine_of, open_storage
from sweep.study.budget import budget_state, counts_toward_budget
from tests.helpers import BIN, REPO, run_cli, synthetic_spec, worker_env


def _worker(pg_url: str, study: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = worker_env(pg_url, study, **(env or {}))
    return subprocess.Popen([str(BIN / "sweep-worker"), *extra], env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=REPO)


def _create(pg_url: str, tmp_path: Path, name: str, **kw: object) -> optuna.Study:
    run_cli("create", str(synthetic_spec(tmp_path, name, **kw)), "--storage", pg_url, check=True)
    return optuna.load_study(study_name=name, storage=pg_url)



def _faulty_spec(
    tmp_path: Path, name: str, fault: str, on_trials: str, *, trials: int = 4, timeout: float | None = None
) -> Path:
    # Each trial must really train: a reused duplicate would never reach its injected fault.
    options = {"epoch_seconds": 0.0, "fault": fault, "on_trials": on_trials, "at_epoch": 1}
    changes: dict[str, Any] = {"training": {"trainer": "tests.trainers:faulty", "trainer_options": options}}
    if timeout:
        changes["budget"] = {"trial_timeout_s": timeout}
    return synthetic_spec(tmp_path, name, trials=trials, epochs=3, dedup=False, changes=changes)


def test_two_workers_finish_study_with_curves(pg_url: str, study_name: str, tmp_path: Path) -> None:
    study = _create(pg_url, tmp_path, study_name, trials=6, epochs=3, pruner="median")
    workers = [_worker(pg_url, study_name, "--worker-index", str(i)) for i in range(2)]
    outputs = [w.communicate(timeout=120)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    trials = study.get_trials()
    # A reused duplicate (dedup_of) trains nothing and gives its slot back: 6 trials count.
    assert len([t for t in trials if counts_toward_budget(t.state, t.user_attrs)]) == 6
    assert all(
        t.user_attrs.get("dedup_of") is not None for t in trials if not counts_toward_budget(t.state, t.user_attrs)
    )
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    for t in trials:
        curves = t.user_attrs["curves"]
        assert len(curves["val_accuracy"]) == t.user_attrs["epochs_run"] == len(t.intermediate_values)
        assert set(curves) >= {"loss", "accuracy", "val_loss", "val_accuracy", "reg_loss", "epoch_seconds"}
        assert t.user_attrs["worker"]["host"] and t.user_attrs["worker"]["versions"]["optuna"]
        assert t.user_attrs["config_hash"] and t.user_attrs["config"]["kernel"]["kind"] in ("none", "l1", "l2")
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) == 2  # both workers took trials
    assert budget_state(engine_of(open_storage(pg_url)), study_name).claimed == 6


def _run_one_worker(pg_url: str, study_name: str) -> tuple[int, str, list[optuna.trial.FrozenTrial]]:
    worker = _worker(pg_url, study_name)
    output = worker.communicate(timeout=180)[0]
    return worker.returncode, output, optuna.load_study(study_name=study_name, storage=pg_url).get_trials()


def test_raising_objective_fails_that_trial_and_worker_goes_on(pg_url: str, study_name: str, tmp_path: Path) -> None:
    run_cli("create", str(_faulty_spec(tmp_path, study_name, "raise", "1")), "--storage", pg_url, check=True)
    code, output, trials = _run_one_worker(pg_url, study_name)
    assert code == 0, output
    states = {t.number: t.state for t in trials}
    assert states[1] == TrialState.FAIL
    assert Counter(states.values())[TrialState.COMPLETE] == 3
    failed = trials[1]
    assert failed.user_attrs["fail_reason"] == "ValueError: objective exploded on trial 1"
    assert 'raise ValueError(f"objective exploded' in failed.user_attrs["traceback"]


def test_segfault_in_training_does_not_take_worker_down(pg_url: str, study_name: str, tmp_path: Path) -> None:
    run_cli("create", str(_faulty_spec(tmp_path, study_name, "segv", "0,2")), "--storage", pg_url, check=True)
    code, output, trials = _run_one_worker(pg_url, study_name)
    assert code == 0, output
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[0].user_attrs["fail_reason"] == "training process died (killed by signal 11 (SIGSEGV))"


def test_nan_and_timeout_fail_only_their_trial(pg_url: str, study_name: str, tmp_path: Path) -> None:
    run_cli("create", str(_faulty_spec(tmp_path, study_name, "nan", "0", trials=2)), "--storage", pg_url, check=True)
    code, output, trials = _run_one_worker(pg_url, study_name)
    assert code == 0, output
    assert trials[0].state == TrialState.FAIL and trials[1].state == TrialState.COMPLETE
    assert trials[0].user_attrs["fail_reason"] == "TrialDiverged: loss became nan at epoch 2"

    hang = f"{study_name}-hang"
    run_cli(
        "create", str(_faulty_spec(tmp_path, hang, "hang", "0", trials=2, timeout=4)), "--storage", pg_url, check=True
    )
    code, output, trials = _run_one_worker(pg_url, hang)
    assert code == 0, output
    assert trials[0].state == TrialState.FAIL and trials[1].state == TrialState.COMPLETE
    assert trials[0].user_attrs["fail_reason"] == "trial exceeded its time limit of 4s; training process killed"


def test_sigterm_fails_requeues_and_exits_cleanly(pg_url: str, study_name: str, tmp_path: Path) -> None:
    study = _create(pg_url, tmp_path, study_name, trials=3, epochs=20, epoch_seconds=0.5)
    worker = _worker(pg_url, study_name)
    deadline = time.time() + 60
    while time.time() < deadline and not any(t.intermediate_values for t in study.get_trials()):
        time.sleep(0.3)
    worker.send_signal(signal.SIGTERM)
    output = worker.communicate(timeout=60)[0]
    assert worker.returncode == 0, output
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["fail_reason"] == "shutdown: worker stopped"
    assert trials[1].state == TrialState.WAITING and trials[1].system_attrs["failed_trial"] == 0
    assert trials[1].params == trials[0].params
    assert budget_state(engine_of(open_storage(pg_url)), study_name).claimed == 0  # its slot came back


def test_follow_flag_beats_study_from_environment(monkeypatch: object) -> None:
    from workers.cli import _target

    monkeypatch.setenv("SWEEP_STUDY", "from-env")  # type: ignore[attr-defined]
    assert _target(None, "nightly") == (None, "nightly")
    assert _target(None, None) == ("from-env", None)
    assert _target("flag", None) == ("flag", None)
    monkeypatch.setenv("SWEEP_FOLLOW", "nightly")  # type: ignore[attr-defined]
    try:
        _target(None, None)
    except ValueError as error:
        assert str(error) == "SWEEP_STUDY and SWEEP_FOLLOW are both set; unset one"
    else:
        raise AssertionError("both from the environment must be refused")
