"""Helpers shared by tests: paths, spec writers and a real `sweep` CLI runner."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("REGSWEEP_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
BIN = Path(sys.executable).parent


def write_spec(path: Path, body: str) -> Path:
    """Write a spec file and return its path."""
    path.write_text(body, encoding="utf-8")
    return path


def synthetic_spec_data(name: str, *, trials: int = 6, epochs: int = 3, epoch_seconds: float = 0.0,
                        pruner: str = "none", dedup: bool = True) -> dict[str, Any]:
    """The synthetic-trainer spec as data (the real worker machinery, no Keras)."""
    return {
        "dedup": dedup,
        "study": {"name": name},
        "space": {"kernel": {"kinds": ["none", "l1", "l2"]}},
        "training": {"trainer": "workers.synthetic:train", "epochs": epochs,
                     "trainer_options": {"epoch_seconds": epoch_seconds}},
        "pruner": {"name": pruner},
        "budget": {"trials": trials},
    }


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` merged in, table by table; a change to None removes the key.

    Args:
        base: A parsed spec (not modified).
        changes: Nested dicts of the keys to set, e.g. ``{"budget": {"trials": None, "deadline": "..."}}``.
    """
    out = dict(base)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def toml_value(value: Any) -> str:
    """One TOML value: a scalar, a list, or a dict as an inline table."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")


def dump_toml(data: dict[str, Any], prefix: str = "") -> str:
    """TOML text of a spec dict: scalars and lists first, then each sub-dict as a ``[table]``."""
    lines = [f"{key} = {toml_value(value)}" for key, value in data.items() if not isinstance(value, dict)]
    for key, value in data.items():
        if isinstance(value, dict):
            header = f"{prefix}{key}"
            body = dump_toml(value, f"{header}.")
            lines += ["", f"[{header}]", body] if any(not isinstance(v, dict) for v in value.values()) else [body]
    return "\n".join(lines).strip("\n") + "\n"


def synthetic_spec(tmp_path: Path, name: str, *, trials: int = 6, epochs: int = 3, epoch_seconds: float = 0.0,
                   pruner: str = "none", extra: str = "", dedup: bool = True,
                   changes: dict[str, Any] | None = None) -> Path:
    """Write a spec using the synthetic trainer (the real worker machinery, no Keras).

    Args:
        tmp_path: Folder for the file.
        name: Study name.
        trials, epochs, epoch_seconds, pruner, dedup: The common settings.
        extra: TOML text appended as is (a new table).
        changes: Edits made to the spec as data before it is written (see :func:`merged`): a key the
            template lacks is added, never silently ignored as a text replacement would be.
    """
    data = synthetic_spec_data(name, trials=trials, epochs=epochs, epoch_seconds=epoch_seconds, pruner=pruner,
                               dedup=dedup)
    body = re.sub(r"\n{3,}", "\n\n", dump_toml(merged(data, changes or {})))
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
