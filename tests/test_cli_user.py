"""The ``sweep`` commands as a new user meets them (issue 13): real CLI, real Postgres, real SQLite.

Each test drives the installed ``sweep`` command in a subprocess and checks what a user would see:
exit status, one-line errors without tracebacks, truthful counts, files that appear or not.
The synthetic trainer keeps the workers fast (the whole machinery, no Keras).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.helpers import BIN, REPO, synthetic_spec, worker_env, write_spec
from tests.reliability.support import fresh_database

TIED = """
[study]
name = "{name}"

[space.kernel]
kinds = ["none", "l1", "l2"]
l1 = {{ low = 1e-6, high = 1e-2 }}
l2 = {{ low = 1e-6, high = 1e-2 }}

[space.bias]
tie = "kernel"

[space.activity]
kinds = ["none", "l2"]
l2 = {{ low = 1e-7, high = 1e-3 }}

[training]
trainer = "workers.synthetic:train"
epochs = 2

[budget]
trials = {trials}
"""


def sweep(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
          ) -> subprocess.CompletedProcess[str]:
    """Run ``sweep`` with no storage configured in the environment (only what ``args`` and ``env`` say)."""
    full = {k: v for k, v in os.environ.items() if k not in ("SWEEP_STORAGE", "OPTUNA_STORAGE", "SWEEP_STUDY")}
    full.update({"PYTHONPATH": str(REPO), "COLUMNS": "80", **(env or {})})
    return subprocess.run([str(BIN / "sweep"), *args], capture_output=True, text=True, env=full, cwd=cwd,
                          timeout=timeout, check=False)


def one_error(result: subprocess.CompletedProcess[str], *fragments: str, code: int = 2) -> str:
    """Assert: exit ``code``, no traceback, exactly one ``sweep: error:`` line holding every fragment."""
    shown = f"exit {result.returncode}\nstdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-3000:]}"
    assert result.returncode == code, shown
    assert "Traceback" not in result.stdout + result.stderr, shown
    errors = [line for line in result.stderr.splitlines() if line.startswith("sweep") and ": error: " in line]
    assert len(errors) == 1, shown
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"
    return errors[0]


@pytest.fixture
def db(pg_url: str) -> Iterator[str]:
    """A private Postgres database: study lists are this test's alone."""
    with fresh_database(pg_url) as url:
        yield url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- 2: --artifacts on dashboard and run ----------------------------------------------------------
def test_dashboard_creates_a_missing_artifacts_folder(tmp_path: Path) -> None:
    """The README's ``sweep dashboard --artifacts ./regsweep-artifacts`` on a fresh machine serves."""
    url = f"sqlite:///{tmp_path / 'regsweep.db'}"
    assert (
        sweep("create", str(synthetic_spec(tmp_path, "dash", trials=1)), "--storage", url, cwd=tmp_path).returncode == 0
    )
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("SWEEP_STORAGE", "OPTUNA_STORAGE")}
    server = subprocess.Popen([str(BIN / "sweep"), "dashboard", "--artifacts", "./regsweep-artifacts", "--port",
                               str(port), "--storage", url], cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.communicate()[0]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    names = [s["study_name"] for s in json.loads(response.read())["study_summaries"]]
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "dashboard did not answer within 60 s"
                time.sleep(0.3)
        assert names == ["dash"]
        assert (tmp_path / "regsweep-artifacts").is_dir()
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_dashboard_rejects_a_file_as_artifacts_before_its_banner(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    result = sweep("dashboard", "--artifacts", "afile", "--storage", f"sqlite:///{tmp_path / 'x.db'}", cwd=tmp_path)
    one_error(result, "--artifacts", "afile")
    assert "optuna-dashboard for" not in result.stdout + result.stderr


def test_run_takes_artifacts(tmp_path: Path) -> None:
    """``sweep run --artifacts DIR``: the local workers upload their plots and checkpoints there."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    result = sweep("run", str(synthetic_spec(tmp_path, "arts", trials=1, epochs=1)), "--storage", url,
                   "--artifacts", "arts-dir", cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert any((tmp_path / "arts-dir").iterdir())


# -- 3: enqueue with a tied placement -------------------------------------------------------------
def test_enqueue_kernel_only_follows_the_tied_bias(db: str, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "tied.toml", TIED.format(name="tied", trials=4))
    assert sweep("create", str(spec), "--storage", db, cwd=tmp_path).returncode == 0
    result = sweep("enqueue", "tied", "--config", '{"kernel": {"kind": "l2", "l2": 0.001}}', "--storage", db,
                   cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Enqueued 1" in result.stdout
    trials = optuna.load_study(study_name="tied", storage=db).get_trials()
    assert [t.system_attrs["fixed_params"] for t in trials] == [{"kernel_kind": "l2", "kernel_l2": 0.001,
                                                                "activity_kind": "none"}]
    # A bias that contradicts the tie is still refused, by name.
    clash = sweep(
        "enqueue",
        "tied",
        "--config",
        '{"kernel": {"kind": "l2", "l2": 0.001}, "bias": {"kind": "l1", "l1": 0.1}}',
        "--storage",
        db,
        cwd=tmp_path,
    )
    one_error(clash, "bias", "tied to kernel")


# -- 4: deadline in the past ----------------------------------------------------------------------
def test_create_rejects_a_deadline_in_the_past(db: str, tmp_path: Path) -> None:
    past = dt.datetime(2026, 11, 24, 7, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    spec = synthetic_spec(tmp_path, "late", changes={"budget": {"deadline": past}})
    one_error(sweep("create", str(spec), "--storage", db, cwd=tmp_path), "budget.deadline", "2026-11-24T07:00:00+01:00",
              "past")
    one_error(sweep("run", str(spec), "--storage", db, cwd=tmp_path), "budget.deadline", "past")
    assert optuna.get_all_study_names(db) == []


def test_dataset_option_runs_a_preset_on_your_own_images(db: str, tmp_path: Path) -> None:
    """``--dataset`` replaces the preset's data; a missing folder is refused by name, creating nothing."""
    images = tmp_path / "images"
    for name in ("cat", "dog"):
        (images / name).mkdir(parents=True)
    preset = str(REPO / "sweep" / "presets" / "tutorial-224.toml")
    missing = tmp_path / "nope"
    one_error(sweep("create", preset, "--dataset", f"dir:{missing}", "--storage", db, cwd=tmp_path),
              "training.dataset", f"dir:{missing}", "does not exist")
    assert optuna.get_all_study_names(db) == []
    created = sweep("create", preset, "--dataset", f"dir:{images}", "--storage", db, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    spec = optuna.load_study(study_name="tutorial-224", storage=db).user_attrs["spec"]
    assert spec["training"]["dataset"] == f"dir:{images}" and spec["training"]["input_size"] == 224


# -- 5: extend a finished study; truthful enqueue -------------------------------------------------
def test_extend_a_spent_study_and_enqueue_tells_the_truth(db: str, tmp_path: Path) -> None:
    spec = synthetic_spec(tmp_path, "ext", trials=2, epochs=1)
    assert sweep("run", str(spec), "--storage", db, cwd=tmp_path, timeout=180).returncode == 0
    config = '{"kernel": {"kind": "l2", "l2": 0.0001}}'
    before = len(optuna.load_study(study_name="ext", storage=db).get_trials())  # 2, plus any dedup copies
    spent = sweep("enqueue", "ext", "--config", config, "--storage", db, cwd=tmp_path)
    one_error(spent, "budget", "2/2", "sweep extend ext --trials")
    assert len(optuna.load_study(study_name="ext", storage=db).get_trials()) == before  # nothing waits forever

    extended = sweep("extend", "ext", "--trials", "2", "--storage", db, cwd=tmp_path)
    assert extended.returncode == 0, extended.stderr
    assert "budget 4 trials" in extended.stdout, extended.stdout
    first = sweep("enqueue", "ext", "--config", config, "--storage", db, cwd=tmp_path)
    assert first.returncode == 0 and "Enqueued 1" in first.stdout, first.stdout + first.stderr
    again = sweep("enqueue", "ext", "--config", config, "--storage", db, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "Enqueued 0" in again.stdout and "already queued" in again.stdout, again.stdout
    waiting = [t for t in optuna.load_study(study_name="ext", storage=db).get_trials() if t.state == TrialState.WAITING]
    assert len(waiting) == 1

    # The same spec runs on: the two new slots are used, the enqueued config first.
    assert sweep("run", str(spec), "--storage", db, cwd=tmp_path, timeout=180).returncode == 0
    trials = optuna.load_study(study_name="ext", storage=db).get_trials()
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    assert trials[before].params.get("kernel_l2") == pytest.approx(1e-4)  # the enqueued config ran first
    status = json.loads(sweep("status", "ext", "--json", "--storage", db, cwd=tmp_path).stdout)
    assert (status["budget_total"], status["finished"]) == (4, 4)
    report = tmp_path / "r.html"
    assert sweep("report", "ext", "--out", str(report), "--storage", db, cwd=tmp_path).returncode == 0
    assert "4 trials" in report.read_text()  # the report's budget is the table's, not the spec's 2

    bad = sweep("extend", "ext", "--trials", "0", "--storage", db, cwd=tmp_path)
    one_error(bad, "--trials", "0")


# -- 8: one-line errors ---------------------------------------------------------------------------
@pytest.fixture
def existing(db: str, tmp_path: Path) -> str:
    """A created study in the private database."""
    assert (
        sweep("create", str(synthetic_spec(tmp_path, "there", trials=2)), "--storage", db, cwd=tmp_path).returncode == 0
    )
    return db


def test_bad_paths_give_one_line_errors(existing: str, tmp_path: Path) -> None:
    db = existing
    one_error(sweep("create", str(tmp_path), "--storage", db, cwd=tmp_path), "spec", str(tmp_path), "directory")
    one_error(sweep("export", "there", "--out", str(tmp_path / "no" / "x.csv"), "--storage", db, cwd=tmp_path),
              "--out", str(tmp_path / "no"))
    one_error(sweep("export", "there", "--out", str(tmp_path), "--storage", db, cwd=tmp_path), "--out", "directory")
    one_error(sweep("enqueue", "there", "--file", str(tmp_path / "none.json"), "--storage", db, cwd=tmp_path),
              "--file", "none.json")
    (tmp_path / "bad.json").write_text("[{kernel")
    one_error(sweep("enqueue", "there", "--file", str(tmp_path / "bad.json"), "--storage", db, cwd=tmp_path),
              "--file", "JSON")
    one_error(sweep("report", "there", "--out", str(tmp_path / "missing" / "dir" / "x.html"), "--storage", db,
                    cwd=tmp_path), "--out", str(tmp_path / "missing" / "dir"))
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("command", ["status", "schedule"])
def test_bad_grace_period_env_is_one_line(command: str, existing: str, tmp_path: Path) -> None:
    argv = ("status", "there") if command == "status" else (
        "schedule", str(synthetic_spec(tmp_path, "night")), "--cron", "0 22 * * *", "--until", "07:00", "--once")
    result = sweep(*argv, "--storage", existing, cwd=tmp_path, env={"SWEEP_GRACE_PERIOD": "abc"})
    if command == "schedule":  # the command that uses it says which value is wrong
        one_error(result, "SWEEP_GRACE_PERIOD", "abc")
    else:  # the others do not care
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr


def test_worker_bad_grace_period_env_is_one_line(tmp_path: Path) -> None:
    env = worker_env(SWEEP_GRACE_PERIOD="abc")
    result = subprocess.run([str(BIN / "sweep-worker"), "--study", "x", "--storage", "sqlite:///x.db"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "SWEEP_GRACE_PERIOD" in result.stderr and "abc" in result.stderr


def _running_trial(db: str) -> None:
    """A RUNNING trial as a worker leaves it: config, worker attrs, two epochs reported."""
    study = optuna.load_study(study_name="there", storage=db)
    trial = study.ask()
    trial.set_user_attr("config", {"kernel": {"kind": "l1_l2", "l1": 1.23457e-05, "l2": 0.000123457},
                                   "bias": {"kind": "none"}, "activity": {"kind": "l2", "l2": 1.23457e-07}})
    trial.set_user_attr(
        "worker", {"host": "gpu-host-number-07.example.org", "pid": 1234567, "gpu": "NVIDIA H100 80GB HBM3"}
    )
    trial.report(0.5, 0)
    trial.report(0.6, 1)


def test_status_json_is_json_and_running_table_fits_80_columns(existing: str, tmp_path: Path) -> None:
    _running_trial(existing)
    result = sweep("status", "there", "--json", "--storage", existing, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert "RunningTrial(" not in result.stdout and "datetime.datetime(" not in result.stdout
    running = data["running"][0]
    assert running["number"] == 0 and running["epochs_reported"] == 2
    dt.datetime.fromisoformat(running["started"])
    table = sweep("status", "there", "--storage", existing, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, table.stdout
    row = next(line for line in lines if "gpu-host" in line)
    assert "1234567@gpu-host-number-07" in row and "L1 1.2e-05" in row, table.stdout
    assert not any(len(part) > 8 and part.count(":") == 2 and "." in part for part in row.split()), row  # no µs


# -- 12: storage and study lookups ----------------------------------------------------------------
def test_read_only_commands_do_not_create_a_database(tmp_path: Path) -> None:
    for command in (("status", "quick"), ("best", "quick"), ("export", "quick", "--out", "x.csv"),
                    ("report", "quick", "--out", "r.html")):
        error = one_error(sweep(*command, cwd=tmp_path), "regsweep.db", "SWEEP_STORAGE", code=3)
        assert "--storage" in error
        assert not (tmp_path / "regsweep.db").exists(), command


def test_unknown_study_lists_the_existing_ones(existing: str, tmp_path: Path) -> None:
    one_error(sweep("status", "nope", "--storage", existing, cwd=tmp_path), "'nope' not found", "there", code=3)


def test_enqueue_error_names_the_placement(existing: str, tmp_path: Path) -> None:
    one_error(sweep("enqueue", "there", "--config", '{"kernel": {"kind": "l2"}}', "--storage", existing, cwd=tmp_path),
              "kernel.l2", "needs l2")


def test_leaderboard_says_it_hides_pruned_trials(existing: str, tmp_path: Path) -> None:
    study = optuna.load_study(study_name="there", storage=existing)
    for state, value in ((TrialState.COMPLETE, 0.9), (TrialState.PRUNED, None), (TrialState.PRUNED, None)):
        study.add_trial(
            optuna.trial.create_trial(
                state=state,
                value=value,
                params={"kernel_kind": "none"},
                distributions={"kernel_kind": optuna.distributions.CategoricalDistribution(["none", "l1", "l2"])},
                intermediate_values={0: 0.5},
                user_attrs={"config": {"kernel": {"kind": "none"}}},
            )
        )
    result = sweep("best", "there", "--storage", existing, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 pruned trial(s) not shown" in result.stdout, result.stdout


def test_leaderboard_keeps_accuracy_readable_in_80_columns(existing: str, tmp_path: Path) -> None:
    """Long penalties on every placement are cut; the accuracy, trial, epochs and seconds never are."""
    study = optuna.load_study(study_name="there", storage=existing)
    penalty = {"kind": "l1_l2", "l1": 5.7e-06, "l2": 1.7e-05}
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.COMPLETE,
            value=0.9359,
            params={"kernel_kind": "none"},
            distributions={"kernel_kind": optuna.distributions.CategoricalDistribution(["none", "l1", "l2"])},
            user_attrs={
                "config": {p: penalty for p in ("kernel", "bias", "activity")},
                "epochs_run": 6,
                "duration_s": 70.2,
            },
        )
    )
    result = sweep("best", "there", "--storage", existing, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, result.stdout
    header = next(line for line in lines if "kernel" in line)
    assert "val acc" in header and "epochs" in header and "seconds" in header, result.stdout
    row = next(line for line in lines if "0.9359" in line)
    assert row.split()[:3] == ["1", str(study.trials[-1].number), "0.9359"] and row.split()[-2:] == ["6", "70"], row


def test_set_metric_names_at_create(existing: str) -> None:
    """optuna-dashboard names the objective instead of "Objective 0"."""
    assert optuna.load_study(study_name="there", storage=existing).metric_names == ["val_accuracy"]
