"""Artifacts after a small real sweep (synthetic trainer, real worker processes, real Postgres,
a real FileSystemArtifactStore): no checkpoint of a finished trial is left, a re-queued copy does
not list its parent's files, and with ``--keep-models`` exactly one model per COMPLETE trial."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import optuna
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState

from tests.helpers import BIN, REPO, run_cli, synthetic_spec, worker_env


def _worker(pg_url: str, study: str, artifacts: Path, *args: str) -> subprocess.Popen[str]:
    env = worker_env(pg_url, study)
    return subprocess.Popen([str(BIN / "sweep-worker"), "--artifacts", str(artifacts), *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _sweep(pg_url: str, study_name: str, tmp_path: Path, *args: str) -> tuple[optuna.Study, Path]:
    """Run a 4-trial sweep with one worker stopped mid-trial (SIGTERM) and a second one finishing it."""
    artifacts = tmp_path / "artifacts"
    spec = synthetic_spec(tmp_path, study_name, trials=4, epochs=4, epoch_seconds=0.4, pruner="median", dedup=False)
    run_cli("create", str(spec), "--storage", pg_url, check=True)
    study = optuna.load_study(study_name=study_name, storage=pg_url)
    first = _worker(pg_url, study_name, artifacts, *args)
    deadline = time.time() + 60
    while time.time() < deadline and not any(len(t.intermediate_values) >= 2 for t in study.get_trials()):
        time.sleep(0.2)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 0, first.communicate()[0][-3000:]
    second = _worker(pg_url, study_name, artifacts, *args)
    output = second.communicate(timeout=120)[0]
    assert second.returncode == 0, output[-3000:]
    return study, artifacts


def _store_files(artifacts: Path) -> list[str]:
    return sorted(p.name for p in artifacts.iterdir() if p.is_file())


def test_finished_trials_keep_no_checkpoints(pg_url: str, study_name: str, tmp_path: Path) -> None:
    study, artifacts = _sweep(pg_url, study_name, tmp_path)
    trials = study.get_trials()
    assert [t for t in trials if t.system_attrs.get("failed_trial") is not None], "no trial was re-queued"
    for t in trials:
        names = [m.filename for m in get_all_artifact_meta(t, storage=study._storage)]
        assert not [n for n in names if "checkpoint" in n or "model" in n], (t.number, names)
        assert not [n for n in names if not n.startswith(f"trial-{t.number}-")], (t.number, names)  # no parent's files
    left = [f for f in _store_files(artifacts) if f.startswith("regsweep-checkpoint-")]
    assert not left, left
    size = sum(p.stat().st_size for p in artifacts.iterdir() if p.is_file())
    print(f"\n[artifacts] {len(trials)} trials, store holds {len(_store_files(artifacts))} files "
          f"({size / 1e3:.0f} kB), 0 checkpoints")


def test_keep_models_keeps_one_model_per_complete_trial(pg_url: str, study_name: str, tmp_path: Path) -> None:
    study, artifacts = _sweep(pg_url, study_name, tmp_path, "--keep-models")
    files = set(_store_files(artifacts))
    complete = 0
    for t in study.get_trials():
        metas = [m for m in get_all_artifact_meta(t, storage=study._storage) if m.filename.endswith(".keras")]
        if t.state == TrialState.COMPLETE:
            complete += 1
            assert [m.filename for m in metas] == [f"trial-{t.number}-model.keras"], (t.number, metas)
            assert metas[0].artifact_id in files and t.user_attrs["model"]["artifact_id"] == metas[0].artifact_id
        else:
            assert metas == [], (t.number, t.state, metas)
    assert complete >= 1
    assert not [f for f in files if f.startswith("regsweep-checkpoint-")]
