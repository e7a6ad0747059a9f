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

from sweep.launcher.gpus import NVIDIA_SMI_QUERY, cuda_hides_all_gpus, parse_nvidia_smi

__all__ = ["gpu_name", "worker_info", "gpu_problem"]

# Run in a child, so the worker parent stays free of TensorFlow/JAX (and of their CUDA state).
_GPU_PROBE = {
    "tensorflow": "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))",
    "jax": "import jax; print(sum(d.platform == 'gpu' for d in jax.devices()))",
}


def _nvidia_smi(timeout: float) -> subprocess.CompletedProcess[str]:
    """The launcher's GPU query (``sweep.launcher.gpus.NVIDIA_SMI_QUERY``), run here in the worker."""
    return subprocess.run(list(NVIDIA_SMI_QUERY), capture_output=True, text=True, timeout=timeout, check=False)


def gpu_name() -> str:
    """Name of the first GPU visible to this process, or ``"cpu"``."""
    if cuda_hides_all_gpus() or shutil.which("nvidia-smi") is None:
        return "cpu"
    try:
        result = _nvidia_smi(timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "cpu"
    gpus = parse_nvidia_smi(result.stdout, strict=False) if result.returncode == 0 else []
    if not gpus:
        return "cpu"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        first = visible.split(",")[0].strip()
        for gpu in gpus:
            if gpu.index == first:
                return gpu.name
    return gpus[0].name


def gpu_problem(timeout: float = 300.0) -> str | None:
    """Why this worker cannot train on a GPU, or None when the Keras backend sees one.

    For workers that must not fall back to CPU (``SWEEP_REQUIRE_GPU=1``): a broken driver
    otherwise runs a whole night at CPU speed while the container looks healthy.

    Args:
        timeout: Seconds the backend probe (a child that imports TensorFlow or JAX) may take.
    """
    if cuda_hides_all_gpus():
        return f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r} hides every GPU"
    if shutil.which("nvidia-smi") is None:
        return ("nvidia-smi not found: no NVIDIA driver is mounted into this container (is the NVIDIA "
                "Container Toolkit installed and a GPU requested?)")
    try:
        result = _nvidia_smi(timeout=30)
    except (OSError, subprocess.SubprocessError) as error:
        return f"nvidia-smi did not run: {error}"
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        return f"nvidia-smi failed with exit status {result.returncode}: {detail[0] if detail else 'no output'}"
    if not parse_nvidia_smi(result.stdout, strict=False):
        return "nvidia-smi lists no GPU"
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    probe = _GPU_PROBE.get(backend)
    if probe is None:
        return None
    try:
        found = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=timeout, check=False
        )
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
        # Set by `sweep run` to this worker's share of the cores; None: the libraries' default (all).
        "cpu_threads": int(os.environ["TF_NUM_INTRAOP_THREADS"]) if "TF_NUM_INTRAOP_THREADS" in os.environ else None,
        "versions": {k: v for k, v in versions.items() if v},
    }
