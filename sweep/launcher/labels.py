"""How a worker container is named and found again: its ``regsweep.*`` labels, its name, and
:class:`WorkerInfo` (what ``sweep workers ls`` reads back from the labels).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sweep.errors import LauncherError

__all__ = [
    "LABEL_CPU",
    "LABEL_FOLLOW",
    "LABEL_GPU",
    "LABEL_IMAGE",
    "LABEL_ROLE",
    "LABEL_STUDY",
    "ROLE_WORKER",
    "WorkerInfo",
    "container_name",
]

LABEL_ROLE = "regsweep.role"
LABEL_STUDY = "regsweep.study"
LABEL_GPU = "regsweep.gpu"
#: CPU-only workers (``--cpus N``) carry this label (0..N-1) instead of LABEL_GPU.
LABEL_CPU = "regsweep.cpu"
LABEL_IMAGE = "regsweep.image"
LABEL_FOLLOW = "regsweep.follow"
ROLE_WORKER = "worker"

# Docker container names: [a-zA-Z0-9][a-zA-Z0-9_.-]+
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]+")


@dataclass(frozen=True)
class WorkerInfo:
    """A worker container found by its labels.

    Args:
        name: Container name.
        short_id: Short container id.
        status: Docker status (``running``, ``exited``, ...).
        study: Value of the study label.
        gpu: Value of the GPU label ("" for a CPU-only worker).
        image: Image the worker was started from.
        cpu: Value of the CPU-slot label ("" for a GPU worker).
    """

    name: str
    short_id: str
    status: str
    study: str
    gpu: str
    image: str
    cpu: str = ""

    @property
    def device(self) -> str:
        """``gpu N`` or ``cpu N``."""
        return f"gpu {self.gpu}" if self.gpu else f"cpu {self.cpu}"


def container_name(prefix: str, study: str, gpu: str | None, cpu: str | None = None) -> str:
    """Name of the worker container for ``study`` on ``gpu``, e.g. ``regsweep-quick-gpu0``
    (``regsweep-quick-cpu0`` for CPU-only slot 0).

    Args:
        prefix: The ``--name-prefix``.
        study: Study name.
        gpu: GPU id (a UUID is shortened to its first 8 hex digits); None for a CPU worker.
        cpu: CPU-only worker slot, when ``gpu`` is None.
    """
    if gpu is None:
        device = f"cpu{cpu}"
    else:
        device = "gpu" + (gpu if gpu.isdigit() else gpu.split("-", 1)[-1].replace("-", "")[:8])
    name = _NAME_UNSAFE.sub("-", f"{prefix}-{study}-{device}").strip("-._")
    if not name or not name[0].isalnum():
        raise LauncherError(
            f"Invalid --name-prefix: container names must start with a letter or digit, received {prefix!r}"
        )
    return name
