"""The worker trains under KERAS_BACKEND=jax too (the GPU machines we are lent carry no TensorFlow)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.helpers import BIN, run_cli, worker_env, write_spec

SPEC = """
[study]
name = "{name}"
[space.kernel]
kinds = ["l2"]
l2 = {{ values = [1e-4] }}
[space.activity]
kinds = ["l1"]
l1 = {{ values = [1e-6] }}
[training]
dataset = "digits"
input_size = 32
width = 0.25
epochs = 2
batch_size = 32
learning_rate = 0.05
[budget]
trials = 1
"""


@pytest.mark.slow
def test_worker_trains_with_the_jax_backend(pg_url: str, study_name: str, tmp_path: Path) -> None:
    if os.environ.get("CI", "").lower() != "true":  # CI installs the dev extra, which carries jax
        pytest.importorskip("jax")
    run_cli(
        "create", str(write_spec(tmp_path / "jax.toml", SPEC.format(name=study_name))), "--storage", pg_url, check=True
    )
    env = worker_env(pg_url, study_name, KERAS_BACKEND="jax")
    worker = subprocess.run([str(BIN / "sweep-worker")], env=env, capture_output=True, text=True, timeout=600)
    assert worker.returncode == 0, worker.stderr[-3000:]
    trial = optuna.load_study(study_name=study_name, storage=pg_url).get_trials()[0]
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get("fail_reason")
    assert trial.user_attrs["diagnostics"]["backend"] == "jax"
    assert trial.user_attrs["worker"]["backend"] == "jax"
    curves = trial.user_attrs["curves"]
    assert len(curves["val_accuracy"]) == 2 and min(curves["reg_loss"]) > 0  # kernel L2 + activity L1 on
    assert max(curves["val_accuracy"]) > 0.2  # learning, not chance (0.1)
