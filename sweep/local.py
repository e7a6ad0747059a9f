"""``sweep run``: start N local ``sweep-worker`` processes on one study and show live progress.

Workers get the storage URL through the environment (never the command line, where ``ps``
would show a password). Ctrl-C sends SIGTERM to every worker: each finishes its current epoch,
re-queues its trial and exits; a second Ctrl-C kills them.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sweep.study import UNLIMITED, Sweep
from sweep.summary import sweep_status

__all__ = ["run_local_workers"]

_logger = logging.getLogger(__name__)


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
        log_dir: Where each worker's log goes (``worker-N.log``); default: a ``logs`` folder
            beside the SQLite file or in the working directory.
        console: Where progress is drawn.
        poll_s: Seconds between progress refreshes.
        extra_env: More environment for the workers.
    """
    console = console or Console(stderr=True)
    log_dir = log_dir or Path("regsweep-logs") / sweep.name
    log_dir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    handles = []
    for index in range(n_workers):
        env = {
            **os.environ,
            **(extra_env or {}),
            "SWEEP_STORAGE": storage_url,
            "SWEEP_STUDY": sweep.name,
            "SWEEP_WORKER_INDEX": str(index),
            "PYTHONUNBUFFERED": "1",
        }
        handle = open(log_dir / f"worker-{index}.log", "ab")
        handles.append(handle)
        procs.append(subprocess.Popen(_worker_command(), env=env, stdout=handle, stderr=subprocess.STDOUT))
    console.print(f"Started {n_workers} worker(s) on study [bold]{sweep.name}[/]; logs in {log_dir}/")

    interrupted = 0

    def _forward(signum: int, frame: object) -> None:
        nonlocal interrupted
        interrupted += 1
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM if interrupted == 1 else signal.SIGKILL)

    previous = signal.signal(signal.SIGINT, _forward)
    try:
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
    finally:
        signal.signal(signal.SIGINT, previous)
        for handle in handles:
            handle.close()
    codes = [p.returncode for p in procs]
    for index, code in enumerate(codes):
        if code != 0:
            console.print(f"[red]worker {index} exited with status {code}; see {log_dir}/worker-{index}.log[/]")
    return codes


def _refresh(progress: Progress, task: int, sweep: Sweep) -> None:
    try:
        status = sweep_status(sweep)
    except Exception as error:  # a storage hiccup must not kill the progress display
        _logger.debug("progress refresh failed: %s", error)
        return
    total = status.budget_total if status.budget_total and status.budget_total < UNLIMITED else None
    best = "" if status.best_value is None else f"best {status.best_value:.4f} (trial {status.best_number})"
    running = f" · {len(status.running)} running" if status.running else ""
    progress.update(task, completed=status.finished, total=total, best=best + running)
