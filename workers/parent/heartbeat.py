"""The worker's heartbeat: Optuna trial heartbeats plus a file the container healthcheck reads.

Optuna writes heartbeats only inside ``study.optimize()``; the worker uses ask/tell (it must
claim a budget slot first), so it beats itself through the storage's public
``record_heartbeat``. A trial that has *no* heartbeat row is never considered stale by Optuna,
so its first beat must land with its start: the worker's storage writes it in the ask's own
transaction (:class:`sweep.storage.finish.EndingStorage`); with another storage
:meth:`Heartbeat.begin` writes it synchronously right after the ask.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import optuna

from sweep.storage.finish import EndingStorage

__all__ = ["Heartbeat"]

_logger = logging.getLogger(__name__)


class Heartbeat:
    """Background beats for the current trial and a liveness file.

    Args:
        storage: The RDB storage (heartbeats enabled).
        interval: Seconds between beats.
        file: Touched on every beat, idle or not (``SWEEP_HEARTBEAT_FILE``); None disables it.
    """

    def __init__(self, storage: optuna.storages.RDBStorage, interval: float, file: str | None = None) -> None:
        self.storage = storage
        self.interval = interval
        self.file = Path(file) if file else None
        self._trial_id: int | None = None
        self._beaten_at_start = isinstance(storage, EndingStorage) and storage.beats_at_start
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="regsweep-heartbeat", daemon=True)

    def start(self) -> None:
        """Start beating (and touch the liveness file at once)."""
        self._touch()
        self._thread.start()

    def begin(self, trial_id: int) -> None:
        """Beat for ``trial_id`` from now on (now too, unless its start already wrote the first beat)."""
        with self._lock:
            self._trial_id = trial_id
        if not self._beaten_at_start:
            self._beat(trial_id)

    def end(self) -> None:
        """Stop beating for the current trial (it is finished)."""
        with self._lock:
            self._trial_id = None

    def stop(self) -> None:
        """Stop the thread."""
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def _touch(self) -> None:
        if self.file is None:
            return
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            self.file.touch()
            os.utime(self.file)
        except OSError as error:  # a read-only file system must not stop training
            _logger.warning("Cannot touch heartbeat file %s: %s", self.file, error)

    def _beat(self, trial_id: int) -> None:
        try:
            self.storage.record_heartbeat(trial_id)
        except Exception as error:  # the database may be restarting: the next beat will retry
            _logger.warning("Heartbeat for trial id %d failed: %s", trial_id, type(error).__name__)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._touch()
            with self._lock:
                trial_id = self._trial_id
            if trial_id is not None:
                self._beat(trial_id)
