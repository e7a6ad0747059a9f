"""CPU threads per local worker: each worker's share of the cores, not all of them.

TensorFlow sizes its intra-op and inter-op thread pools to every core of the machine. N local
workers on C cores then run N x C busy threads: measured on 2 cores with 3 workers training the
full-width classifier side by side, each 45-step pass took 11.4 s with TensorFlow's own pools and
8.2 s with one thread each (``docs/tutorial.md``). Oversubscribed pools time-slice and spin-wait;
one pool per core share does not.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["THREAD_VARIABLES", "available_cpus", "thread_env"]

#: What sets a worker's CPU threads: TensorFlow's two pools and OpenMP (oneDNN and NumPy's BLAS).
THREAD_VARIABLES: tuple[str, ...] = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")


def available_cpus() -> int:
    """The cores this process may run on (its affinity mask, which ``taskset`` and cgroups set)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def thread_env(n_workers: int, cpus: int, environ: Mapping[str, str]) -> dict[str, str]:
    """Return the thread variables to give each of ``n_workers`` workers sharing ``cpus`` cores.

    Each worker gets ``max(1, cpus // n_workers)`` threads per pool. A variable the user already
    set is theirs and is left alone; one worker alone on the machine keeps the libraries' defaults.

    Args:
        n_workers: Local workers started side by side.
        cpus: Cores they share (:func:`available_cpus`).
        environ: The environment the workers inherit.

    Returns:
        The variables to add to each worker's environment (empty when nothing needs setting).
    """
    if n_workers <= 1:
        return {}
    share = str(max(1, cpus // n_workers))
    return {name: share for name in THREAD_VARIABLES if name not in environ}
