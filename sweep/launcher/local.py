"""``sweep run``: start N local ``sweep-worker`` processes on one study and show live progress.

Workers get the storage URL through the environment (never the command line, where ``ps``
would show a password). They run in their own process group, so a terminal's Ctrl-C reaches only
``sweep run``, which forwards exactly one SIGTERM per request: each worker finishes its current
epoch, re-queues its trial (slot given back) and exits. A second Ctrl-C (at least
``SIGNAL_WINDOW_S`` after the first) forwards a second SIGTERM: workers abort their trial at once,
still re-queuing it; a third kills them. ``sweep run`` then prints a one-line summary and exits 130.

Each worker gets its share of the cores as its CPU thread count (:mod:`sweep.launcher.threads`).

Logs: ``LOG_DIR/worker-N.log`` (default ``LOG_DIR`` = ``regsweep-logs/<study>/`` in the current
directory). A log file another running ``sweep run`` still writes (an exclusive ``flock``) is
never shared: this run's worker N then logs to ``worker-N.<host>-<pid>.log``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from sweep.launcher.threads import available_cpus, thread_env
from sweep.processes import die_with_parent
from sweep.report.summary import sweep_status
from sweep.study.sweeps import UNLIMITED, Sweep

__all__ = ["run_local_workers", "open_worker_log", "SIGNAL_WINDOW_S"]

_logger = logging.getLogger(__name__)
#: Signals closer together than this are one request (see ``workers.parent.loop.SIGNAL_WINDOW_S``).
SIGNAL_WINDOW_S = 0.5


def open_worker_log(log_dir: Path, index: int) -> BinaryIO:
    """Open worker ``index``'s log for appending, locked for as long as the handle (and the worker
    process that inherits it) lives; a name locked by another run gets this host and pid added."""
    for name in (f"worker-{index}.log", f"worker-{index}.{socket.gethostname()}-{os.getpid()}.log"):
        handle = open(log_dir / name, "ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except OSError:  # another live `sweep run` writes this file
            handle.close()
    raise OSError(f"cannot lock a log file for worker {index} in {log_dir}")


def _stop_with_sweep_run() -> None:
    die_with_parent(signal.SIGTERM)


def _worker_command() -> list[str]:
    return [sys.executable, "-m", "workers.cli"]


def run_local_workers(
    sweep: Sweep,
    storage_url: str,
    n_workers: int,
    *,
    log_dir: Path | None = None,
    console: Console | None = None,
    poll_s: float = 1.0,
    extra_env: dict[str, str] | None = None,
) -> list[int]:
    """Run ``n_workers`` worker processes until they exit; returns their exit codes.

    Args:
        sweep: The study to work on.
        storage_url: Its storage URL (passed via ``SWEEP_STORAGE``).
        n_workers: Number of processes.
        log_dir: Where each worker's log goes (``worker-N.log``, see the module docstring);
            default ``regsweep-logs/<study>/`` in the current directory.
        console: Where progress is drawn.
        poll_s: Seconds between progress refreshes.
        extra_env: More environment for the workers.

    Raises:
        KeyboardInterrupt: After an interruption (SIGINT, SIGTERM or SIGHUP), once every worker
            has exited and the one-line summary is printed.
    """
    console = console or Console(stderr=True)
    log_dir = log_dir or Path("regsweep-logs") / sweep.name
    log_dir.mkdir(parents=True, exist_ok=True)
    forwarder = _SignalForwarder(console)
    previous = {sig: signal.signal(sig, forwarder) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    handles: list[BinaryIO] = []
    try:
        _start_workers(sweep, storage_url, n_workers, log_dir, extra_env, procs=forwarder.procs, handles=handles)
        logs = sorted({Path(h.name).name for h in handles})
        console.print(f"Started {n_workers} worker(s) on study [bold]{sweep.name}[/]; logs in {log_dir}/"
                      + ("" if logs == [f"worker-{i}.log" for i in range(n_workers)] else f" ({', '.join(logs)})"))
        _show_progress(sweep, forwarder.procs, console, poll_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for handle in handles:
            handle.close()
    codes = [p.returncode for p in forwarder.procs]
    for index, code in enumerate(codes):
        if code != 0:
            console.print(f"[red]worker {index} exited with status {code}; see {handles[index].name}[/]")
    if forwarder.requests:
        console.print(_interrupted_summary(sweep, codes), highlight=False)
        raise KeyboardInterrupt  # `sweep` exits 130, as after any interruption
    return codes


class _SignalForwarder:
    """The signal handler of ``sweep run``: one SIGTERM to every worker per request, SIGKILL at the third."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.procs: list[subprocess.Popen[bytes]] = []
        self.requests: list[float] = []

    def __call__(self, signum: int, frame: object) -> None:
        now = time.monotonic()
        if self.requests and now - self.requests[-1] < SIGNAL_WINDOW_S:
            return  # the same request delivered twice
        self.requests.append(now)
        if len(self.requests) == 1:
            self.console.print("[yellow]Interrupted: workers finish their epoch and re-queue their trials "
                               "(Ctrl-C again to abort the trials now)[/]")
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM if len(self.requests) <= 2 else signal.SIGKILL)


def _start_workers(sweep: Sweep, storage_url: str, n_workers: int, log_dir: Path, extra_env: dict[str, str] | None,
                   *, procs: list[subprocess.Popen[bytes]], handles: list[BinaryIO]) -> None:
    """Start the worker processes into ``procs`` one by one (a Ctrl-C meanwhile reaches those
    already started), each logging to a file it holds locked (into ``handles``)."""
    inherited = {**os.environ, **(extra_env or {})}
    threads = thread_env(n_workers, available_cpus(), inherited)
    if threads:
        _logger.info("Each worker trains with %s CPU thread(s) per pool", threads[next(iter(threads))])
    for index in range(n_workers):
        env = {
            **inherited,
            **threads,
            "SWEEP_STORAGE": storage_url,
            "SWEEP_STUDY": sweep.name,
            "SWEEP_WORKER_INDEX": str(index),
            "PYTHONUNBUFFERED": "1",
        }
        handle = open_worker_log(log_dir, index)
        handles.append(handle)
        # Own process group: the terminal's Ctrl-C must not reach a worker *and* be forwarded to it.
        # Out of the group, a kill -9 of `sweep run` would orphan the workers: they get SIGTERM then.
        procs.append(subprocess.Popen(_worker_command(), env=env, stdout=handle, stderr=subprocess.STDOUT,
                                      start_new_session=True, preexec_fn=_stop_with_sweep_run))


def _show_progress(sweep: Sweep, procs: list[subprocess.Popen[bytes]], console: Console, poll_s: float) -> None:
    """Draw the study's progress until every worker has exited."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[best]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("trials", total=None, best="")
        while any(p.poll() is None for p in procs):
            _refresh(progress, task, sweep)
            time.sleep(poll_s)
        _refresh(progress, task, sweep)


def _interrupted_summary(sweep: Sweep, codes: list[int]) -> str:
    """One line: what an interruption left behind (re-queued trials, budget slots)."""
    from sweep.study.budget import budget_of

    try:
        status = sweep_status(sweep)
        state = budget_of(sweep.study)
    except Exception as error:  # the database may be what went away
        return f"interrupted: workers exited {codes}; could not read the study ({error})"
    waiting = status.counts.get("WAITING", 0)
    slots = "" if state is None else f"; budget slots claimed {state.claimed}, settled {state.settled} of {state.total}"
    return (f"interrupted: {status.finished} trial(s) finished, {waiting} waiting (re-queued trials resume "
            f"on the next run), {len(status.running)} running{slots}; workers exited {codes}")


def _refresh(progress: Progress, task: TaskID, sweep: Sweep) -> None:
    try:
        status = sweep_status(sweep)
    except Exception as error:  # a storage hiccup must not kill the progress display
        _logger.debug("progress refresh failed: %s", error)
        return
    total = status.budget_total if status.budget_total and status.budget_total < UNLIMITED else None
    best = "" if status.best_value is None else f"best {status.best_value:.4f} (trial {status.best_number})"
    running = f" · {len(status.running)} running" if status.running else ""
    progress.update(task, completed=status.finished, total=total, best=best + running)
