"""`sweep` must run without TensorFlow or Keras installed (scheduler and dashboard images)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, synthetic_spec

# Make any import of tensorflow, keras or jax fail, as in an image that does not carry them.
_BLOCK = (
    "import sys\n"
    "for name in ('tensorflow', 'keras', 'jax'):\n"
    "    sys.modules[name] = None\n"
    "from sweep.cli import main\n"
    "raise SystemExit(main(sys.argv[1:]))\n"
)


def _sweep_without_keras(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _BLOCK, *args], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_every_sweep_command_parses_without_keras() -> None:
    result = _sweep_without_keras("--help")
    assert result.returncode == 0, result.stderr
    for command in (
        "create",
        "run",
        "status",
        "best",
        "enqueue",
        "export",
        "workers",
        "schedule",
        "report",
        "dashboard",
    ):
        assert command in result.stdout
        sub = _sweep_without_keras(command, "--help")
        assert sub.returncode == 0, (command, sub.stderr)


def test_create_status_and_export_run_without_keras(pg_url: str, study_name: str, tmp_path: Path) -> None:
    spec = synthetic_spec(tmp_path, study_name, trials=2)
    for args in (
        ("create", str(spec)),
        ("status", study_name),
        ("export", study_name, "--out", str(tmp_path / "t.csv")),
    ):
        result = _sweep_without_keras(*args, "--storage", pg_url)
        assert result.returncode == 0, (args, result.stderr)
    assert (tmp_path / "t.csv").read_text().startswith("number,state,value")
