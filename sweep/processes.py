"""Child processes that must not outlive the process that started them.

A training child whose worker is kill -9'ed would keep a GPU busy; a worker whose ``sweep run``
is kill -9'ed would keep claiming budget slots nobody watches. Linux delivers a chosen signal to
a child when its parent dies (``PR_SET_PDEATHSIG``); elsewhere this is a no-op.
"""

from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``signum`` to this process when its parent dies.

    Call it in the child (first thing in its main, or as a ``preexec_fn``).

    Args:
        signum: The signal to receive: SIGKILL for a training child (nothing to save),
            SIGTERM for a worker (it finishes its epoch, re-queues the trial and returns the slot).
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signum))
        except OSError:  # pragma: no cover - exotic libc
            pass
