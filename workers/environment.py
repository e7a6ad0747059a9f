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
import sys
from importlib import metadata
from typing import Any

__all__ = ["gpu_name", "worker_info", "gpu_problem"]

# Run in a child, so the worker parent stays free of TensorFlow/JAX (and of their CUDA state).
_GPU_PROBE = {
    "tensorflow": "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))",
    "jax": "import jax; print(sum(d.platform == 'gpu' for d in jax.devices()))",
}


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


def gpu_problem(timeout: float = 300.0) -> str | None:
    """Why this worker cannot train on a GPU, or None when the Keras backend sees one.

    For workers that must not fall back to CPU (``SWEEP_REQUIRE_GPU=1``): a broken driver
    otherwise runs a whole night at CPU speed while the container looks healthy.

    Args:
        timeout: Seconds the backend probe (a child that imports TensorFlow or JAX) may take.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU"
    if shutil.which("nvidia-smi") is None:
        return ("nvidia-smi not found: no NVIDIA driver is mounted into this container (is the NVIDIA "
                "Container Toolkit installed and a GPU requested?)")
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=index,name", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as error:
        return f"nvidia-smi did not run: {error}"
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        return f"nvidia-smi failed with exit status {result.returncode}: {detail[0] if detail else 'no output'}"
    if not [line for line in result.stdout.splitlines() if "," in line]:
        return "nvidia-smi lists no GPU"
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    probe = _GPU_PROBE.get(backend)
    if probe is None:
        return None
    try:
        found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"{backend} did not list its GPUs within {timeout:.0f} s"
    count = found.stdout.strip().splitlines()[-1:] if found.returncode == 0 else []
    if not count or not count[0].isdigit():
        tail = (found.stderr.strip().splitlines() or ["no output"])[-1]
        return f"{backend} could not list its GPUs (exit status {found.returncode}): {tail}"
    if int(count[0]) == 0:
        return f"{backend} finds no GPU although nvidia-smi lists one (CUDA/cuDNN libraries or driver mismatch?)"
    return None


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
        "tensorflow": _version("tensorflow") or _version("tensorflow-cpu"),
        "jax": _version("jax"),
    }
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "gpu": gpu_name(),
        "backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "versions": {k: v for k, v in versions.items() if v},
    }
