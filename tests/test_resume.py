"""Resume on retry: a trial whose worker is killed resumes from its last epoch checkpoint."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from sweep.storage.engine import engine_of, open_storage
from sweep.study.budget import budget_state
from tests.helpers import BIN, run_cli, synthetic_spec, worker_env


def _worker(pg_url: str, study: str, artifacts: Path) -> subprocess.Popen[str]:
    env = worker_env(pg_url, study)
    return subprocess.Popen(
        [str(BIN / "sweep-worker"), "--artifacts", str(artifacts), "--heartbeat-interval", "1", "--grace-period", "3"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped by init does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_killed_trial_resumes_from_its_checkpoint_on_another_worker(
    pg_url: str, study_name: str, tmp_path: Path
) -> None:
    artifacts = tmp_path / "artifacts"
    run_cli("create", str(synthetic_spec(tmp_path, study_name, trials=1, epochs=6, epoch_seconds=0.7)),
            "--storage", pg_url, check=True)
    study = optuna.load_study(study_name=study_name, storage=pg_url)
    first = _worker(pg_url, study_name, artifacts)
    deadline = time.time() + 60
    while time.time() < deadline:
        trials = study.get_trials()
        if trials and len(trials[0].intermediate_values) >= 3 and "checkpoint" in trials[0].user_attrs:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"first worker never reached epoch 3:\n{first.stdout.read() if first.stdout else ''}")
    children = _children(first.pid)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert children, "the worker had no training child"
    gone_by = time.time() + 10
    while time.time() < gone_by and any(_alive(c) for c in children):
        time.sleep(0.2)
    assert not any(_alive(c) for c in children), "training child outlived its killed worker"

    second = _worker(pg_url, study_name, artifacts)
    output = second.communicate(timeout=120)[0]
    assert second.returncode == 0, output
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE], output
    killed, resumed = trials
    saved = resumed.user_attrs["resumed"]["epochs_saved"]
    assert resumed.user_attrs["resumed"]["from_trial"] == killed.number
    # The kill may land between an epoch's report and its checkpoint: the last reported epoch or the one before.
    reported = len(killed.intermediate_values)
    assert saved >= 3 and saved in (reported - 1, reported), (saved, reported)
    assert resumed.user_attrs["epochs_run"] == 6
    record = json.loads((artifacts / resumed.user_attrs["record"]["artifact_id"]).read_text())
    assert len(record["curves"]["val_accuracy"]) == 6
    assert sorted(resumed.intermediate_values) == list(range(6))
    assert f"resumes at epoch {saved + 1}" in output
    assert budget_state(engine_of(open_storage(pg_url)), study_name).settled == 1
