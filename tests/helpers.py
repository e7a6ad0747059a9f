"""Helpers shared by tests: paths, spec writers and a real `sweep` CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("REGSWEEP_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
BIN = Path(sys.executable).parent


def write_spec(path: Path, body: str) -> Path:
    """Write a spec file and return its path."""
    path.write_text(body, encoding="utf-8")
    return path


SYNTHETIC_SPEC = """
dedup = {dedup}

[study]
name = "{name}"

[space.kernel]
kinds = ["none", "l1", "l2"]

[training]
trainer = "workers.synthetic:train"
epochs = {epochs}
trainer_options = {{ epoch_seconds = {epoch_seconds} }}

[pruner]
name = "{pruner}"

[budget]
trials = {trials}
"""


def synthetic_spec(tmp_path: Path, name: str, *, trials: int = 6, epochs: int = 3, epoch_seconds: float = 0.0,
                   pruner: str = "none", extra: str = "", dedup: bool = True) -> Path:
    """A spec using the synthetic trainer (the real worker machinery, no Keras)."""
    body = SYNTHETIC_SPEC.format(name=name, trials=trials, epochs=epochs, epoch_seconds=epoch_seconds, pruner=pruner,
                                 dedup=str(dedup).lower())
    return write_spec(tmp_path / f"{name}.toml", body + extra)


def worker_env(storage: str | None = None, study: str | None = None, **extra: str) -> dict[str, str]:
    """The environment a test starts ``sweep-worker`` (or ``sweep``) in: this checkout importable,
    storage and study passed as ``sweep run`` passes them to its workers.

    Args:
        storage: ``SWEEP_STORAGE`` (None: left as the test process has it).
        study: ``SWEEP_STUDY`` (None: left as the test process has it).
        **extra: More variables, e.g. ``KERAS_BACKEND="jax"``; they win over the ones above.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if storage is not None:
        env["SWEEP_STORAGE"] = storage
    if study is not None:
        env["SWEEP_STUDY"] = study
    return {**env, **extra}


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300, check: bool = False
            ) -> subprocess.CompletedProcess[str]:
    """Run ``sweep`` as a user would (a real subprocess) and capture its output."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    full_env.pop("SWEEP_STORAGE", None) if env is None or "SWEEP_STORAGE" not in env else None
    result = subprocess.run(
        [str(BIN / "sweep"), *args], capture_output=True, text=True, env=full_env, timeout=timeout, cwd=REPO
    )
    if check and result.returncode != 0:
        raise AssertionError(f"sweep {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result
