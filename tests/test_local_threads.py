"""`sweep run` gives each local worker its share of the cores as its CPU thread count."""

from __future__ import annotations

import subprocess
from pathlib import Path

import optuna

from sweep.launcher.threads import THREAD_VARIABLES, available_cpus, thread_env
from tests.helpers import BIN, worker_env, write_spec

SPEC = """
[study]
name = "{name}"

[space.kernel]
kinds = ["l2"]

[training]
trainer = "workers.synthetic:train"
epochs = 1
trainer_options = {{ epoch_seconds = 0.2 }}

[budget]
trials = 4
"""


def test_thread_share_is_cores_over_workers_and_never_zero() -> None:
    assert thread_env(3, 2, {}) == dict.fromkeys(THREAD_VARIABLES, "1")
    assert thread_env(2, 16, {}) == dict.fromkeys(THREAD_VARIABLES, "8")
    assert thread_env(4, 18, {})["TF_NUM_INTRAOP_THREADS"] == "4"


def test_one_worker_and_user_settings_keep_their_threads() -> None:
    assert thread_env(1, 2, {}) == {}
    assert thread_env(4, 8, {"OMP_NUM_THREADS": "3"}) == {"TF_NUM_INTRAOP_THREADS": "2",
                                                            "TF_NUM_INTEROP_THREADS": "2"}


def test_sweep_run_workers_train_with_their_share(pg_url: str, study_name: str, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.toml", SPEC.format(name=study_name))
    env = {k: v for k, v in worker_env().items() if k not in THREAD_VARIABLES}
    result = subprocess.run([str(BIN / "sweep"), "run", str(spec), "--workers", "2", "--storage", pg_url],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    trials = optuna.load_study(study_name=study_name, storage=pg_url).get_trials()
    threads = {t.user_attrs["worker"]["cpu_threads"] for t in trials}
    assert threads == {max(1, available_cpus() // 2)}, threads
