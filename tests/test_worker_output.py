"""What a user reads in a real worker's output: regsweep's own lines, not TensorFlow's C++ log
chatter (absl banner, oneDNN, cudart stub, cuInit on a host without a GPU) nor Optuna's
ExperimentalWarnings. The trainer really imports TensorFlow in the training child."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.helpers import BIN, REPO, run_cli, synthetic_spec, worker_env

NOISE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+|absl::InitializeLog|cuInit|ExperimentalWarning|"
                   r"This TensorFlow binary is optimized|oneDNN custom operations")


def test_worker_output_has_no_tensorflow_or_optuna_noise(pg_url: str, study_name: str, tmp_path: Path) -> None:
    spec = synthetic_spec(tmp_path, study_name, trials=2, epochs=2, pruner="hyperband", dedup=False,
                          changes={"training": {"trainer": "tests.trainers:with_tensorflow"}})
    run_cli("create", str(spec), "--storage", pg_url, check=True)
    env = worker_env(pg_url, study_name)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    result = subprocess.run([str(BIN / "sweep-worker"), "--artifacts", str(tmp_path / "artifacts")], env=env,
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "trial 1: tensorflow" in output  # the child's own logging still comes through the filter
    noise = [line for line in output.splitlines() if NOISE.search(line)]
    assert not noise, noise
    print(f"\n[output] worker output: {len(output.splitlines())} lines, 0 from TensorFlow's native logging")
