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
kill), hangs past the trial's time limit, or has trained ``recycle_after`` trials (Keras and
allocators keep memory between models), the parent kills it and starts a fresh one. The child
ignores SIGINT/SIGTERM: stopping is the parent's decision.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import re
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from sweep.errors import DataError, TrainerCrashed, TrialError, TrialTimeout, WorkerEnvironmentError
from sweep.processes import die_with_parent
from sweep.refs import load_ref
from workers.parent.environment import cuda_hides_all_gpus

__all__ = ["TrainerProcess", "RemoteTrialError", "TrainingAborted", "resolve_trainer"]

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


#: Errors raised in the child that say "this host cannot train", not "this config failed".
_ENVIRONMENT_ERRORS = (DataError, ImportError)


#: TensorFlow's C++ log lines (absl format: level letter, MMDD, time, thread, file:line]).
_NATIVE_LOG = re.compile(rb"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w./-]+:\d+\] ")
_ABSL_BANNER = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def _native_noise(line: bytes, no_gpu: bool) -> bool:
    """Whether a stderr line of the training child is TensorFlow chatter a user need not read:
    its C++ INFO/WARNING lines (oneDNN, the cudart stub, XLA), absl's banner, and on a host
    without a GPU the certain ``cuInit`` failure. C++ errors otherwise stay."""
    if line.startswith(_ABSL_BANNER):
        return True
    if _NATIVE_LOG.match(line):
        return line[:1] in (b"I", b"W") or (no_gpu and b"cuInit" in line)
    return False


def _quiet_native_logs() -> None:
    """Filter the child's own stderr (file descriptor 2, where C++ writes) before TensorFlow loads.

    ``TF_CPP_MIN_LOG_LEVEL`` alone is not enough: TensorFlow 2.21 logs through absl before reading it.
    """
    no_gpu = shutil.which("nvidia-smi") is None or cuda_hides_all_gpus()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        target = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except OSError:  # pragma: no cover - no stderr to filter
        return

    def _pump() -> None:
        pending = b""
        with os.fdopen(read_end, "rb", buffering=0) as source:
            while chunk := source.read(65536):
                *lines, pending = (pending + chunk).split(b"\n")
                kept = b"".join(line + b"\n" for line in lines if not _native_noise(line, no_gpu))
                if kept:
                    os.write(target, kept)
        if pending and not _native_noise(pending, no_gpu):
            os.write(target, pending)

    threading.Thread(target=_pump, name="regsweep-stderr-filter", daemon=True).start()


def resolve_trainer(ref: str) -> Callable[..., dict[str, Any]]:
    """Import a trainer: ``"keras"`` (the bottleneck classifier) or ``"package.module:function"``."""
    return load_ref("workers.child.train:train" if ref == "keras" else ref)


def _child_main(conn: Connection, trainer_ref: str) -> None:
    die_with_parent(signal.SIGKILL)  # a kill -9'ed worker must not leave its child on the GPU
    # Ctrl-C reaches the whole process group; only the parent decides how a trial ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from sweep.logs import setup_logging

    setup_logging()
    _quiet_native_logs()
    try:
        trainer = resolve_trainer(trainer_ref)  # imported before the first request: overlaps the ask
    except Exception as error:  # e.g. ModuleNotFoundError: no trial can run on this host
        conn.send(("fatal", type(error).__name__, str(error), traceback.format_exc()))
        return
    from workers.child.request import TrainRequest

    conn.send(("ready",))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message[0] == "exit":
            return
        request = TrainRequest.from_dict(message[1])

        def on_epoch(metrics: dict[str, Any]) -> str:
            conn.send(("epoch", metrics))
            return str(conn.recv())

        try:
            result = trainer(request, on_epoch)
            conn.send(("done", result))
        except Exception as error:  # a trial error: report it, stay alive for the next trial
            kind = "environment" if isinstance(error, _ENVIRONMENT_ERRORS) else "trial"
            conn.send(("error", type(error).__name__, str(error), traceback.format_exc(), kind))
        finally:
            _release_memory()


def _release_memory() -> None:
    import gc

    if "keras" in sys.modules:
        try:
            sys.modules["keras"].backend.clear_session()
        except Exception:  # pragma: no cover
            pass
    gc.collect()


class TrainerProcess:
    """A long-lived training child, restarted after crashes, timeouts and every N trials.

    Args:
        trainer_ref: ``"keras"`` or ``"package.module:function"``.
        recycle_after: Trials a child trains before it is replaced by a fresh one.
        start_timeout_s: Seconds a new child may take to import its trainer.
    """

    def __init__(self, trainer_ref: str, recycle_after: int = 10, start_timeout_s: float = 300.0) -> None:
        self.trainer_ref = trainer_ref
        self.recycle_after = recycle_after
        self.start_timeout_s = start_timeout_s
        self._ctx = mp.get_context("spawn")  # fork after importing TF/CUDA is unsafe
        self._process: mp.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._trained = 0
        self._ready = False
        self._aborted = False

    def start(self) -> None:
        """Start a child now (the worker does this before its first ask, to overlap imports)."""
        if self._process is not None and self._process.is_alive():
            return
        parent_conn, child_conn = self._ctx.Pipe()
        self._process = self._ctx.Process(
            target=_child_main, args=(child_conn, self.trainer_ref), name="regsweep-trainer", daemon=True
        )
        self._process.start()
        child_conn.close()
        self._conn = parent_conn
        self._trained = 0
        self._ready = False

    def _await_ready(self) -> None:
        assert self._conn is not None and self._process is not None
        if self._ready:
            return
        if not self._conn.poll(self.start_timeout_s):
            self.kill()
            raise TrainerCrashed(f"training process did not start within {self.start_timeout_s:.0f}s")
        try:
            message = self._conn.recv()
        except EOFError:
            code = self._reap()
            raise TrainerCrashed(f"training process failed to start ({_describe_exit(code)})") from None
        if message[0] == "fatal":
            self._reap()
            raise WorkerEnvironmentError(
                f"trainer {self.trainer_ref!r} cannot be imported on this host: {message[1]}: {message[2]}")
        assert message == ("ready",), message
        self._ready = True

    def run(self, request: dict[str, Any], on_epoch: OnEpoch, timeout_s: float | None = None) -> dict[str, Any]:
        """Train one trial in the child.

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
            self.stop()
            self.start()
        self._aborted = False
        self._await_ready()
        # A local reference: abort() may run in a signal handler between two lines of this loop.
        conn = self._conn
        assert conn is not None
        started = time.monotonic()
        self._trained += 1
        conn.send(("train", request))
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
                answer = on_epoch(message[1])
                try:
                    conn.send(answer)
                except (BrokenPipeError, OSError):  # the child died (or was aborted) meanwhile
                    pass
            elif kind == "done":
                result = message[1]
                result["trainer_rss_mb"] = self.child_rss_mb()
                result["trainer_trials"] = self._trained
                return result
            elif kind == "error":
                if len(message) > 4 and message[4] == "environment":
                    raise RemoteEnvironmentError(message[1], message[2], message[3])
                raise RemoteTrialError(message[1], message[2], message[3])

    def child_rss_mb(self) -> float | None:
        """Resident memory of the training child in MiB (Linux), to spot leaks across trials."""
        if self._process is None or self._process.pid is None:
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
        self._process = None
        self._conn = None
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

    def stop(self) -> None:
        """Ask the child to exit, killing it if it does not within a few seconds."""
        if self._process is None:
            return
        try:
            if self._conn is not None:
                self._conn.send(("exit",))
        except (BrokenPipeError, OSError):
            pass
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=10)
        self._process = None
        self._conn = None


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        hint = "; likely killed for using too much memory" if -code == signal.SIGKILL else ""
        return f"killed by signal {-code} ({name}{hint})"
    return f"exit status {code}"
