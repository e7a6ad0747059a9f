"""Run trainers in a child process, so a crashing trial never takes its worker down.

The worker process (which holds the database connection and never imports Keras) keeps one
*spawned* child that imports the trainer once and trains trial after trial. They talk over a pipe:

    parent -> child   ("train", request_dict)
    child  -> parent  ("epoch", metrics)     parent answers "continue" | "prune" | "stop"
    child  -> parent  ("done", result) | ("error", type_name, message, traceback, kind)
    child  -> parent  ("fatal", type_name, message, traceback)   instead of ("ready",): the
                      trainer does not import on this host

``kind`` is ``"trial"`` or ``"environment"`` (a :class:`~sweep.errors.DataError` or an import
error: this host cannot train any trial, see ``sweep.errors``). If the child dies (segfault, OOM
kill) or hangs past the trial's time limit, the parent kills it and starts a fresh one; after
``recycle_after`` trials (Keras and allocators keep memory between models, ~35 MB a trial) it is
replaced by one started when its last trial began. The child ignores SIGINT/SIGTERM: stopping
is the parent's decision. The child's side of the pipe is :mod:`workers.child.process`, started
by :mod:`workers.parent.child`.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from sweep.errors import TrainerCrashed, TrialError, TrialTimeout, WorkerEnvironmentError
from workers.child.request import TrainResult
from workers.parent.child import ChildProcess

__all__ = ["TrainerProcess", "RemoteTrialError", "TrainingAborted"]

_logger = logging.getLogger(__name__)
OnEpoch = Callable[[dict[str, Any]], str]


class RemoteTrialError(TrialError):
    """An exception raised inside the trainer, carried back with its traceback."""

    def __init__(self, type_name: str, message: str, tb: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.remote_traceback = tb


class RemoteEnvironmentError(WorkerEnvironmentError):
    """The trainer found this host unable to train (data set missing, a module not importable)."""

    def __init__(self, type_name: str, message: str, tb: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.remote_traceback = tb


class TrainingAborted(TrialError):
    """The worker killed its training child on purpose (a second stop signal)."""


class TrainerProcess:
    """A long-lived training child, restarted after crashes, timeouts and every N trials.

    A child's replacement is started when the child starts its last trial, so the replacement's
    imports (TensorFlow: ~5 s) overlap that trial instead of delaying the next one, and the old
    child exits in the background once its last result is in (~0.4 s for TensorFlow). For the
    length of one trial two children are alive: the replacement holds only its imports (it has
    built no model and touched no GPU).

    Args:
        trainer_ref: ``"keras"`` or ``"package.module:function"``.
        recycle_after: Trials a child trains before it is replaced by a fresh one.
        start_timeout_s: Seconds a new child may take to import its trainer.
    """

    def __init__(self, trainer_ref: str, recycle_after: int = 10, start_timeout_s: float = 300.0) -> None:
        self.trainer_ref = trainer_ref
        self.recycle_after = recycle_after
        self.start_timeout_s = start_timeout_s
        self._process: ChildProcess | None = None
        self._spare: ChildProcess | None = None  # the next child, importing its trainer
        self._trained = 0
        self._ready = False
        self._aborted = False

    def start(self) -> None:
        """Start a child now (the worker does this before its first ask, to overlap imports)."""
        if self._process is not None and self._process.is_alive():
            return
        # A fresh interpreter, never a fork: forking after importing TF/CUDA is unsafe.
        self._process, self._spare = self._spare or ChildProcess(self.trainer_ref), None
        self._trained = 0
        self._ready = False

    def _await_ready(self) -> None:
        assert self._process is not None
        if self._ready:
            return
        conn = self._process.conn
        if not conn.poll(self.start_timeout_s):
            self.kill()
            raise TrainerCrashed(f"training process did not start within {self.start_timeout_s:.0f}s")
        try:
            message = conn.recv()
        except EOFError:
            code = self._reap()
            raise TrainerCrashed(f"training process failed to start ({_describe_exit(code)})") from None
        if message[0] == "fatal":
            self._reap()
            raise WorkerEnvironmentError(
                f"trainer {self.trainer_ref!r} cannot be imported on this host: {message[1]}: {message[2]}")
        assert message == ("ready",), message
        self._ready = True

    def run(self, request: dict[str, Any], on_epoch: OnEpoch, timeout_s: float | None = None) -> TrainResult:
        """Train one trial in the child; its typed result (the curves came through ``on_epoch``).

        Args:
            request: ``TrainRequest.to_dict()``.
            on_epoch: Called in this process with each epoch's metrics; its answer goes back.
            timeout_s: Kill the child and fail the trial after this many seconds.

        Raises:
            RemoteTrialError: The trainer raised (message and traceback carried over).
            TrainerCrashed: The child died.
            TrialTimeout: The time limit passed.
            TrainingAborted: :meth:`abort` killed the child.
            WorkerEnvironmentError: The trainer does not import, or found the data missing.
        """
        if self._process is None or not self._process.is_alive() or self._trained >= self.recycle_after:
            self._stop_current()
            self.start()  # the spare, if the last child died in its last trial
        self._aborted = False
        self._await_ready()
        # A local reference: abort() may run in a signal handler between two lines of this loop.
        assert self._process is not None
        conn = self._process.conn
        started = time.monotonic()
        self._trained += 1
        conn.send(("train", request))
        if self._trained >= self.recycle_after and self._spare is None:
            self._spare = ChildProcess(self.trainer_ref)  # its imports overlap this, the child's last trial
        while True:
            wait = None if timeout_s is None else max(timeout_s - (time.monotonic() - started), 0.0)
            try:
                ready = conn.poll(wait)
                message = conn.recv() if ready else None
            except (EOFError, ConnectionResetError, OSError):
                code = self._reap()
                if self._aborted:
                    raise TrainingAborted("training process killed: the worker was stopped twice") from None
                raise TrainerCrashed(f"training process died ({_describe_exit(code)})") from None
            if message is None:
                self.kill()
                raise TrialTimeout(f"trial exceeded its time limit of {timeout_s:.0f}s; training process killed")
            kind = message[0]
            if kind == "epoch":
                try:
                    answer = on_epoch(message[1])
                except BaseException:
                    # The child waits for this answer: left alive, it would read the next trial's
                    # request as the answer and fail that trial too. A fresh child serves the next.
                    self.kill()
                    raise
                try:
                    conn.send(answer)
                except (BrokenPipeError, OSError):  # the child died (or was aborted) meanwhile
                    pass
            elif kind == "done":
                result: TrainResult = message[1]
                result.trainer_rss_mb = self.child_rss_mb()
                result.trainer_trials = self._trained
                if self._trained >= self.recycle_after:
                    self._retire()
                    self.start()  # the spare, which has been importing since this trial began
                return result
            elif kind == "error":
                if len(message) > 4 and message[4] == "environment":
                    raise RemoteEnvironmentError(message[1], message[2], message[3])
                raise RemoteTrialError(message[1], message[2], message[3])

    def child_rss_mb(self) -> float | None:
        """Resident memory of the training child in MiB (Linux), to spot leaks across trials."""
        if self._process is None:
            return None
        try:
            with open(f"/proc/{self._process.pid}/status", encoding="ascii") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        return round(int(line.split()[1]) / 1024, 1)
        except OSError:
            pass
        return None

    def _reap(self) -> int | None:
        if self._process is None:
            return None
        self._process.join(timeout=10)
        code = self._process.exitcode
        self._process.conn.close()
        self._process = None
        return code

    def abort(self) -> None:
        """Kill the child now, from a signal handler: :meth:`run` then raises :class:`TrainingAborted`.

        Only sends SIGKILL; reaping is left to :meth:`run` (which the handler may have
        interrupted), so nothing it uses is pulled from under it.
        """
        process = self._process
        if process is not None and process.is_alive():
            self._aborted = True
            process.kill()

    def kill(self) -> None:
        """Kill the child at once and reap it (timeouts)."""
        if self._process is not None and self._process.is_alive():
            self._process.kill()
        if self._process is not None:
            self._reap()

    def _retire(self) -> None:
        """Shut the current child down in the background: the worker goes on meanwhile."""
        process, self._process = self._process, None
        if process is not None:
            threading.Thread(target=_shut_down, args=(process,), name="regsweep-trainer-reaper", daemon=True).start()

    def stop(self) -> None:
        """Ask the child to exit, killing it if it does not within a few seconds; kill a spare."""
        if self._spare is not None:  # it holds only its imports: nothing to save
            spare, self._spare = self._spare, None
            spare.kill()
            spare.join(timeout=10)
            spare.conn.close()
        self._stop_current()

    def _stop_current(self) -> None:
        if self._process is None:
            return
        if not self._ready:  # still importing its trainer (a replacement started early): nothing to save
            self.kill()
            return
        process, self._process = self._process, None
        _shut_down(process)


def _shut_down(process: ChildProcess) -> None:
    """Ask a child to exit, kill it if it has not within a few seconds, and close its pipe."""
    try:
        process.conn.send(("exit",))
    except (BrokenPipeError, OSError):
        pass
    process.join(timeout=10)
    if process.is_alive():
        process.kill()
        process.join(timeout=10)
    process.conn.close()


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        hint = "; likely killed for using too much memory" if -code == signal.SIGKILL else ""
        return f"killed by signal {-code} ({name}{hint})"
    return f"exit status {code}"
