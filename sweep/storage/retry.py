"""The one retry policy for storage faults: when to try again, and when to give up.

Two callers use it, at two scales of the same fault:

* :func:`sweep.storage.engine.db_call` retries one database operation (:data:`DB_CALL`: 8 tries,
  jittered exponential backoff from 0.5 s up to 15 s, about a minute in all): a restarted server or
  a dropped connection, ridden out without losing the trial in flight.
* ``sweep-worker`` (:func:`worker_outage`) restarts its worker loop after an outage that outlasted
  ``db_call``: every 30 s, for up to ``--max-outage`` seconds from the first failure. By then the
  trials in flight were failed or re-queued, so this wait cannot be folded into ``db_call``
  (holding one operation for 15 minutes would hold its trial, and its budget slot, as long); it
  keeps a night's sweep from ending one worker short after a database failover.

The decision (:meth:`RetryPolicy.next_delay`) is a pure function of the attempt number and the
seconds since the first failure; the callers only sleep.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DB_CALL", "OUTAGE_RETRY_S", "RetryPolicy", "worker_outage"]

#: Seconds between ``sweep-worker``'s attempts to restart its loop during an outage.
OUTAGE_RETRY_S = 30.0


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff doubling from ``base_delay`` up to ``max_delay``, within ``attempts`` and/or ``max_elapsed``.

    Args:
        attempts: Tries in all (None: no limit on the count).
        base_delay: Wait after the first failure, in seconds.
        max_delay: Longest single wait.
        max_elapsed: Give up once this many seconds have passed since the first failure (None: no limit).
        jitter: Scale each wait by a random factor in [0.5, 1.5), so that workers hit by the same
            fault do not all retry at the same instant.
    """

    attempts: int | None = 8
    base_delay: float = 0.5
    max_delay: float = 15.0
    max_elapsed: float | None = None
    jitter: bool = True

    def next_delay(self, attempt: int, elapsed: float = 0.0,
                   rand: Callable[[], float] = random.random) -> float | None:
        """Seconds to wait before trying again after failed try number ``attempt``; None: give up.

        Args:
            attempt: The try that just failed, from 1.
            elapsed: Seconds since the first failure.
            rand: Source of the jitter, a float in [0, 1) (a constant in tests).
        """
        if self.attempts is not None and attempt >= self.attempts:
            return None
        if self.max_elapsed is not None and elapsed > self.max_elapsed:
            return None
        delay = min(self.base_delay * 2 ** (attempt - 1), self.max_delay)
        return delay * (0.5 + rand()) if self.jitter else delay


#: One database operation (:func:`sweep.storage.engine.db_call`'s default).
DB_CALL = RetryPolicy()


def worker_outage(max_outage_s: float) -> RetryPolicy:
    """``sweep-worker``'s policy for an outage that outlasted ``db_call``: every 30 s, up to ``max_outage_s``."""
    return RetryPolicy(attempts=None, base_delay=OUTAGE_RETRY_S, max_delay=OUTAGE_RETRY_S,
                       max_elapsed=max_outage_s, jitter=False)
