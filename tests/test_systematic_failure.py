"""A systematic failure must not burn the budget: real workers on real Postgres.

* the data set folder is missing on this host: the worker's own spec check names it before any
  trial (exit 2, nothing claimed);
* the folder is there but empty (an unmounted volume; real Keras trainer) and a trainer that
  does not import: environment errors,
  so no trial counts, the slot comes back and the worker stops with exit 4 naming the cause
  after at most 3 trials;
* a trainer that raises on every trial: those are trial errors and count, but the worker stops
  after 3 in a row with the same cause instead of failing the whole budget.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import optuna
from optuna.trial import TrialState

from sweep.storage.engine import engine_of, open_storage
from sweep.study.budget import budget_state, counts_toward_budget
from tests.helpers import BIN, REPO, run_cli, synthetic_spec, worker_env, write_spec


def _run_worker(pg_url: str, study: str, cwd: Path, pythonpath: str = str(REPO)) -> subprocess.CompletedProcess[str]:
    env = worker_env(pg_url, study, PYTHONPATH=pythonpath)
    return subprocess.run([str(BIN / "sweep-worker")], env=env, capture_output=True, text=True, timeout=300, cwd=cwd)


def _check_not_counted(pg_url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    trials = optuna.load_study(study_name=study, storage=pg_url).get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert 1 <= len(failed) <= 3, [(t.number, t.state.name) for t in trials]
    assert all(t.user_attrs["stop_cause"] == "environment" and not counts_toward_budget(t.state, t.user_attrs)
               for t in failed)
    assert [t.state for t in trials].count(TrialState.WAITING) == 1  # the config waits for a healthy host
    state = budget_state(engine_of(open_storage(pg_url)), study)
    assert state is not None and (state.claimed, state.settled) == (0, 0), state
    return failed


def _dir_spec(tmp_path: Path, name: str, images: Path) -> Path:
    return write_spec(tmp_path / f"{name}.toml", f"""
[study]
name = "{name}"

[space.kernel]
kinds = ["none", "l2"]

[training]
dataset = "dir:{images}"
input_size = 32
width = 0.25
epochs = 1
batch_size = 8

[budget]
trials = 6
""")


def test_missing_dataset_folder_is_named_before_any_trial(pg_url: str, study_name: str, tmp_path: Path) -> None:
    images = tmp_path / "images"
    (images / "cat").mkdir(parents=True)
    run_cli("create", str(_dir_spec(tmp_path, study_name, images)), "--storage", pg_url, check=True)
    shutil.rmtree(images)  # this host does not have the folder the spec names
    result = _run_worker(pg_url, study_name, tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("sweep-worker: error:")]
    assert result.returncode != 0 and len(errors) == 1 and str(images) in errors[0], result.stderr[-3000:]
    assert optuna.load_study(study_name=study_name, storage=pg_url).get_trials() == []
    state = budget_state(engine_of(open_storage(pg_url)), study_name)
    assert state is not None and state.claimed == 0, state


def test_empty_dataset_mount_stops_the_worker_and_spends_no_budget(
    pg_url: str, study_name: str, tmp_path: Path
) -> None:
    images = tmp_path / "images"
    (images / "cat").mkdir(parents=True)
    run_cli("create", str(_dir_spec(tmp_path, study_name, images)), "--storage", pg_url, check=True)
    (images / "cat").rmdir()  # an unmounted volume: the mount point exists, empty
    result = _run_worker(pg_url, study_name, tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("sweep-worker: error:")]
    assert result.returncode == 4, result.stderr[-3000:]
    assert len(errors) == 1 and str(images) in errors[0] and "no class sub-folders" in errors[0], result.stderr[-3000:]
    failed = _check_not_counted(pg_url, study_name)
    print(f"\n[systematic] empty dataset folder: exit {result.returncode} after {len(failed)} trial(s), "
          f"budget claimed 0 of 6; {errors[0]}")


def test_trainer_that_does_not_import_stops_the_worker_and_spends_no_budget(
    pg_url: str, study_name: str, tmp_path: Path
) -> None:
    spec = synthetic_spec(tmp_path, study_name, trials=6, changes={"training": {"trainer": "tests.trainers:faulty"}})
    run_cli("create", str(spec), "--storage", pg_url, check=True)
    # This "host" lacks the trainer's package: the repository is not on its path.
    result = _run_worker(pg_url, study_name, tmp_path, pythonpath="")
    errors = [line for line in result.stderr.splitlines() if line.startswith("sweep-worker: error:")]
    assert result.returncode == 4, result.stderr[-3000:]
    assert len(errors) == 1 and "tests.trainers:faulty" in errors[0] and "No module named 'tests'" in errors[0], errors
    failed = _check_not_counted(pg_url, study_name)
    print(f"\n[systematic] trainer does not import: exit {result.returncode} after {len(failed)} trial(s); {errors[0]}")


def test_same_trial_error_three_times_stops_the_worker(pg_url: str, study_name: str, tmp_path: Path) -> None:
    options = {"epoch_seconds": 0.0, "fault": "raise", "on_trials": "0,1,2,3,4,5,6,7,8,9"}
    spec = synthetic_spec(tmp_path, study_name, trials=8, dedup=False,
                          changes={"training": {"trainer": "tests.trainers:faulty", "trainer_options": options}})
    run_cli("create", str(spec), "--storage", pg_url, check=True)
    result = _run_worker(pg_url, study_name, REPO)
    assert result.returncode == 4, result.stderr[-3000:]
    assert "3 trials in a row failed with the same cause" in result.stderr
    assert "ValueError: objective exploded on trial 2" in result.stderr
    trials = optuna.load_study(study_name=study_name, storage=pg_url).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * 3
    assert all(t.user_attrs["stop_cause"] == "trial_error" for t in trials)
    state = budget_state(engine_of(open_storage(pg_url)), study_name)
    assert state is not None and (state.claimed, state.settled, state.total) == (3, 3, 8), state
