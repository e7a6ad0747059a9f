"""Who ran a trial: host, process, GPU and library versions, recorded on every trial.

Found without importing TensorFlow (the worker parent never does): the GPU name comes from
``nvidia-smi`` restricted to the devices this container or process may see.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
from importlib import metadata
from typing import Any

__all__ = ["gpu_name", "worker_info"]


def gpu_name() -> str:
    """Name of the first GPU visible to this process, or ``"cpu"``."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return "cpu"
    if shutil.which("nvidia-smi") is None:
        return "cpu"
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "cpu"
    rows = [line.split(",", 1) for line in out.strip().splitlines() if "," in line]
    if not rows:
        return "cpu"
    if visible:
        first = visible.split(",")[0].strip()
        for index, name in rows:
            if index.strip() == first:
                return name.strip()
    return rows[0][1].strip()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def worker_info() -> dict[str, Any]:
    """Host, pid, GPU and versions of this worker (JSON-able)."""
    versions = {
        "python": platform.python_version(),
        "regsweep": _version("regsweep"),
        "optuna": _version("optuna"),
        "keras": _version("keras"),
        "tensorflow": _version("tensorflow"),
        "jax": _version("jax"),
    }
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "gpu": gpu_name(),
        "backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "versions": {k: v for k, v in versions.items() if v},
    }
