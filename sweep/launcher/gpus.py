"""The host's GPUs: ``nvidia-smi`` output and the ``--gpus`` flag, parsed and checked."""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from sweep.errors import LauncherError

__all__ = ["NVIDIA_SMI_QUERY", "GpuInfo", "cuda_hides_all_gpus", "parse_nvidia_smi", "query_gpus", "parse_gpus"]

_logger = logging.getLogger("sweep.launcher")

NVIDIA_SMI_QUERY = ("nvidia-smi", "--query-gpu=index,name", "--format=csv,noheader")
_GPU_ID = re.compile(r"^(\d+|GPU-[0-9a-fA-F-]+|MIG-[0-9a-zA-Z/-]+)$")


@dataclass(frozen=True)
class GpuInfo:
    """One GPU of the Docker host as nvidia-smi reports it.

    Args:
        index: nvidia-smi's index (a string, as Docker's device_ids want it).
        name: The product name, e.g. ``NVIDIA H100 80GB HBM3``.
    """

    index: str
    name: str


def cuda_hides_all_gpus() -> bool:
    """Whether ``CUDA_VISIBLE_DEVICES`` is set to hide every GPU from this process."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return visible is not None and visible.strip() in ("", "-1")


def parse_nvidia_smi(output: str, *, strict: bool = True) -> list[GpuInfo]:
    """Parse ``nvidia-smi --query-gpu=index,name --format=csv,noheader`` output (the one parser:
    the launcher's ``--gpus`` and the worker's GPU name both read it).

    Args:
        output: The command's stdout, one ``index, name`` line per GPU.
        strict: Raise on a line that is not ``index, name``; False skips it (the worker only
            wants a name to record, and a driver warning line must not stop it).

    Returns:
        The GPUs in the order listed.

    Raises:
        LauncherError: A line is not ``index, name`` with a numeric index.
    """
    gpus: list[GpuInfo] = []
    for line in output.splitlines():
        if not line.strip():
            continue
        index, sep, name = line.partition(",")
        index = index.strip()
        if not sep or not index.isdigit():
            if not strict:
                continue
            raise LauncherError(
                f"Cannot parse nvidia-smi output: expected 'index, name' per line, received {line!r}"
            )
        gpus.append(GpuInfo(index=index, name=name.strip()))
    return gpus


def query_gpus(runner: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run) -> list[GpuInfo]:
    """List the GPUs of this machine with nvidia-smi.

    This is the machine the launcher runs on: it must be the Docker host (with a remote
    DOCKER_HOST, pass explicit ids to ``--gpus`` instead of ``all``).

    Args:
        runner: ``subprocess.run``-compatible callable (a fake in tests).

    Returns:
        The GPUs nvidia-smi reports (possibly empty).

    Raises:
        LauncherError: nvidia-smi is missing or fails.
    """
    try:
        result = runner(list(NVIDIA_SMI_QUERY), capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        raise LauncherError(
            "--gpus all needs nvidia-smi to list the GPUs, but nvidia-smi was not found; pass "
            "explicit ids, e.g. --gpus 0,1"
        ) from None
    except subprocess.TimeoutExpired:
        raise LauncherError("nvidia-smi did not answer within 30 s; pass explicit ids, e.g. --gpus 0,1") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip().splitlines()
        raise LauncherError(
            f"nvidia-smi failed with exit status {result.returncode}: "
            f"{detail[0] if detail else 'no output'}; pass explicit ids, e.g. --gpus 0,1"
        )
    return parse_nvidia_smi(result.stdout)


def parse_gpus(value: str, available: Callable[[], list[GpuInfo]] | None = query_gpus) -> list[str]:
    """Turn a ``--gpus`` value into the list of GPU ids to start one worker each on.

    Args:
        value: ``all`` or a comma-separated list of indices / GPU UUIDs, e.g. ``0,2``.
        available: Returns the host's GPUs (nvidia-smi). Required for ``all``; for explicit ids it
            is used, when it works, to reject ids the host does not have. None skips that check.

    Returns:
        GPU ids as strings, in the given order.

    Raises:
        LauncherError: Empty, malformed, duplicate or unknown ids, or ``all`` with no GPU found.
    """
    text = value.strip()
    if text.lower() == "all":
        if available is None:
            raise LauncherError("--gpus all needs nvidia-smi to list the GPUs; pass explicit ids, e.g. --gpus 0,1")
        gpus = available()
        if not gpus:
            raise LauncherError("--gpus all: nvidia-smi lists no GPU on this host; pass explicit ids, e.g. --gpus 0,1")
        return [gpu.index for gpu in gpus]
    if not text:
        raise LauncherError("Invalid --gpus: expected 'all' or ids like 0,2, received --gpus=''")
    ids = [part.strip() for part in text.split(",")]
    for gpu_id in ids:
        if not _GPU_ID.match(gpu_id):
            raise LauncherError(
                f"Invalid --gpus: expected 'all' or comma-separated GPU indices/UUIDs like 0,2, "
                f"received {gpu_id!r} in --gpus={value!r}"
            )
    duplicates = sorted({g for g in ids if ids.count(g) > 1})
    if duplicates:
        raise LauncherError(
            f"Invalid --gpus: each GPU at most once (two workers would share it), received "
            f"{', '.join(duplicates)} twice in --gpus={value!r}"
        )
    if available is not None:
        try:
            known = available()
        except LauncherError as error:  # no nvidia-smi here (e.g. remote engine): trust the flag
            _logger.debug("Not checking --gpus against nvidia-smi: %s", error)
        else:
            indices = {gpu.index for gpu in known}
            unknown = [g for g in ids if g.isdigit() and g not in indices]
            if unknown:
                raise LauncherError(
                    f"Invalid --gpus: this host has GPUs {', '.join(sorted(indices, key=int)) or 'none'}, "
                    f"received {', '.join(unknown)} in --gpus={value!r}"
                )
    return ids
