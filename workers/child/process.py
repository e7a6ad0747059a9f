"""The training child's main loop: import the trainer once, then train request after request.

Started by :class:`workers.parent.runner.TrainerProcess` in a fresh interpreter (see
:mod:`workers.parent.child`), so the parent never imports Keras; the message protocol is
described there. Its own stderr is filtered of TensorFlow's C++ chatter before the trainer
imports TensorFlow.
"""

from __future__ import annotations

import gc
import os
import re
import shutil
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from sweep.errors import DataError
from sweep.launcher.gpus import cuda_hides_all_gpus
from sweep.processes import die_with_parent
from sweep.refs import load_ref
from workers.child.request import TrainRequest, TrainResult

__all__ = ["child_main", "main_from_argv", "resolve_trainer"]


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


def main_from_argv(argv: list[str]) -> None:
    """The child's entry as :class:`workers.parent.child.ChildProcess` starts it: ``FD TRAINER_REF``."""
    fd, trainer_ref = argv
    child_main(Connection(int(fd)), trainer_ref)


def child_main(conn: Connection, trainer_ref: str) -> None:
    die_with_parent(signal.SIGKILL)  # a kill -9'ed worker must not leave its child on the GPU
    # Ctrl-C reaches the whole process group; only the parent decides how a trial ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from sweep.logs import setup_logging

    setup_logging(optuna_logs=False)
    _quiet_native_logs()
    try:
        trainer = resolve_trainer(trainer_ref)  # imported before the first request: overlaps the ask
    except Exception as error:  # e.g. ModuleNotFoundError: no trial can run on this host
        conn.send(("fatal", type(error).__name__, str(error), traceback.format_exc()))
        return
    # What is imported by now (TensorFlow: ~400,000 objects) lives as long as this process. Frozen,
    # it is left out of every later full collection: the one after each trial took ~185 ms with
    # TensorFlow loaded (~20 ms with the worker's own imports alone), and the interpreter's own
    # full collections while a model is built and traced ~0.4 s a trial.
    gc.freeze()

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
            result = TrainResult.from_trainer(trainer(request, on_epoch))  # curves already went epoch by epoch
            conn.send(("done", result))
        except Exception as error:  # a trial error: report it, stay alive for the next trial
            kind = "environment" if isinstance(error, _ENVIRONMENT_ERRORS) else "trial"
            conn.send(("error", type(error).__name__, str(error), traceback.format_exc(), kind))
        finally:
            _release_memory()


def _release_memory() -> None:
    if "keras" in sys.modules:
        try:
            sys.modules["keras"].backend.clear_session()
        except Exception:  # pragma: no cover
            pass
    gc.collect()
