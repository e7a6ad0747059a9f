"""The per-epoch record lives in an artifact: user attrs stay small however many epochs a trial runs.

Every worker's sampler and optuna-dashboard load all trials' user attrs, so what grows with the
epochs (curves, diagnostics by epoch) is stored as ``trial-N-record.json`` and the report reads it
back; trials written before the move, which carry both as attrs, still show them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import optuna
from optuna.trial import TrialState

from sweep.report.data import collect
from sweep.storage.engine import open_storage
from sweep.study.sweeps import load_sweep
from tests.helpers import BIN, run_cli, synthetic_spec, worker_env

EPOCHS = 100
ATTR_LIMIT = 4096  # bytes of JSON per trial (docs/contracts.md, "Trial attributes")


def _attr_bytes(trial: optuna.trial.FrozenTrial) -> int:
    return sum(len(key) + len(json.dumps(value)) for key, value in trial.user_attrs.items())


def _run(pg_url: str, tmp_path: Path, study_name: str, *args: str) -> list[optuna.trial.FrozenTrial]:
    spec = synthetic_spec(tmp_path, study_name, trials=2, epochs=EPOCHS, dedup=False)
    run_cli("create", str(spec), "--storage", pg_url, check=True)
    worker = subprocess.run([str(BIN / "sweep-worker"), *args], env=worker_env(pg_url, study_name),
                            capture_output=True, text=True, timeout=300)
    assert worker.returncode == 0, worker.stdout + worker.stderr
    return optuna.load_study(study_name=study_name, storage=pg_url).get_trials()


def test_many_epoch_trial_keeps_attrs_small_and_the_report_shows_its_record(
        pg_url: str, study_name: str, tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    trials = _run(pg_url, tmp_path, study_name, "--artifacts", str(artifacts))
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for t in trials:
        assert t.user_attrs["epochs_run"] == EPOCHS
        assert _attr_bytes(t) <= ATTR_LIMIT, {k: len(json.dumps(v)) for k, v in t.user_attrs.items()}
        assert "diagnostics_by_epoch" not in t.user_attrs and not t.user_attrs.get("curves")
        stored = json.loads((artifacts / t.user_attrs["record"]["artifact_id"]).read_text())
        assert len(stored["curves"]["val_accuracy"]) == len(stored["diagnostics_by_epoch"]) == EPOCHS
        # The objective curve is also the trial's reported values (what pruning and the dashboard use).
        assert stored["curves"]["val_accuracy"] == [t.intermediate_values[e] for e in range(EPOCHS)]

    # The report reads the record back: from SWEEP_ARTIFACTS's folder, or the one the worker wrote to.
    data = collect(load_sweep(open_storage(pg_url), study_name))
    by_number = {t.number: t for t in trials}
    for row in data.rows:
        stored = json.loads((artifacts / by_number[row.number].user_attrs["record"]["artifact_id"]).read_text())
        assert row.curves == stored["curves"]
        assert set(row.curves) >= {"loss", "accuracy", "val_loss", "val_accuracy", "reg_loss"}
        assert row.by_epoch == stored["diagnostics_by_epoch"] and len(row.by_epoch) == EPOCHS
        assert row.by_epoch[-1]["blocks"]
    moved = tmp_path / "moved"
    artifacts.rename(moved)
    again = collect(load_sweep(open_storage(pg_url), study_name), artifacts=str(moved))
    assert [r.curves for r in again.rows] == [r.curves for r in data.rows]
    assert [r.by_epoch for r in again.rows] == [r.by_epoch for r in data.rows]


def test_old_trials_with_per_epoch_attrs_still_show_them(pg_url: str, study_name: str, tmp_path: Path) -> None:
    # No artifact store: the record stays in the attrs, as every trial written before the move has it.
    trials = _run(pg_url, tmp_path, study_name)
    data = collect(load_sweep(open_storage(pg_url), study_name))
    for t, row in zip(trials, sorted(data.rows, key=lambda r: r.number), strict=True):
        assert "record" not in t.user_attrs
        assert len(t.user_attrs["curves"]["val_accuracy"]) == EPOCHS
        assert row.curves == t.user_attrs["curves"]
        assert row.by_epoch == t.user_attrs["diagnostics_by_epoch"] and len(row.by_epoch) == EPOCHS
