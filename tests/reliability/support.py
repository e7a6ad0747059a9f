"""Helpers for the reliability tests: real worker processes, bounded waits and /proc inspection.

Workers write their output to files (not pipes): sixteen chatty workers on a pipe each would block
on a full pipe buffer while the test waits on something else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import optuna
import sqlalchemy as sa
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url

from tests.helpers import BIN, run_cli, synthetic_spec, worker_env

T = TypeVar("T")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class Worker:
    """A running ``sweep-worker`` process and the file its output goes to."""

    proc: subprocess.Popen[bytes]
    log: Path
    started: float

    @property
    def pid(self) -> int:
        """Process id of the worker."""
        return self.proc.pid

    def output(self) -> str:
        """Everything the worker printed so far."""
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""


def start_worker(url: str, study: str, log_dir: Path, index: int, *args: str,
                 env: dict[str, str] | None = None) -> Worker:
    """Start one real ``sweep-worker`` process writing to ``log_dir/worker-<index>.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"worker-{index}.log"
    with open(log, "wb") as handle:
        proc = subprocess.Popen(
            [str(BIN / "sweep-worker"), "--worker-index", str(index), *args],
            env=worker_env(url, study, PYTHONUNBUFFERED="1", **(env or {})),
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=log_dir,
        )
    return Worker(proc=proc, log=log, started=time.monotonic())


def tails(workers: list[Worker], chars: int = 2500) -> str:
    """The last lines of every worker's output, for failure messages."""
    return "\n".join(f"--- worker pid {w.pid} (exit {w.proc.returncode}) ---\n{w.output()[-chars:]}" for w in workers)


def wait_workers(workers: list[Worker], timeout: float) -> dict[int, float]:
    """Wait until every worker exits; fail (after killing the rest) if one runs past ``timeout``.

    Returns:
        Seconds each worker ran, by pid.
    """
    deadline = time.monotonic() + timeout
    ran: dict[int, float] = {}
    while len(ran) < len(workers):
        for w in workers:
            if w.pid not in ran and w.proc.poll() is not None:
                ran[w.pid] = time.monotonic() - w.started
        if time.monotonic() > deadline:
            stuck = [w.pid for w in workers if w.pid not in ran]
            kill_all(workers)
            raise AssertionError(f"workers {stuck} still running after {timeout:.0f}s (killed):\n{tails(workers)}")
        time.sleep(0.2)
    return ran


def kill_all(workers: list[Worker]) -> None:
    """SIGKILL every worker still running (cleanup after a failure)."""
    for w in workers:
        if w.proc.poll() is None:
            w.proc.send_signal(signal.SIGKILL)
            w.proc.wait(timeout=30)


@contextmanager
def worker_group() -> Iterator[list[Worker]]:
    """A list to put workers in; whatever still runs at the end is killed, pass or fail."""
    workers: list[Worker] = []
    try:
        yield workers
    finally:
        kill_all(workers)


def wait_for(check: Callable[[], T], timeout: float, what: str, poll: float = 0.2) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


def trials_of(url: str, study: str) -> list[FrozenTrial]:
    """All trials of a study, read with plain Optuna (not through regsweep)."""
    return optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)


def by_state(trials: list[FrozenTrial]) -> dict[str, int]:
    """Trial counts by state name."""
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (from /proc; psutil is not installed)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # the name in parentheses may hold spaces
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def cmdline(pid: int) -> str:
    """What ``ps`` shows for ``pid``: /proc/PID/cmdline with NULs as spaces ("" if it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def trainer_child(worker_pid: int) -> int | None:
    """The training child of a worker (started by ``workers.parent.child``; a spare may be importing beside it)."""
    for pid in children(worker_pid):
        line = cmdline(pid)
        if "workers.child.process import main_from_argv" in line:
            return pid
    return None


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def create_synthetic(url: str, tmp_path: Path, name: str, **kw: object) -> Path:
    """Write a synthetic-trainer spec and create its study with the real ``sweep create``."""
    spec = synthetic_spec(tmp_path, name, **kw)  # type: ignore[arg-type]
    run_cli("create", str(spec), "--storage", url, check=True)
    return spec


def admin_engine(pg_url: str) -> sa.engine.Engine:
    """An autocommit engine on the server's test database, for CREATE/DROP DATABASE and ROLE."""
    return sa.create_engine(pg_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 10})


def admin_sql(pg_url: str, *statements: str) -> None:
    """Run statements (DDL) one by one in autocommit mode."""
    engine = admin_engine(pg_url)
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()


@contextmanager
def fresh_database(pg_url: str, owner: str | None = None) -> Iterator[str]:
    """Create a database on the shared server, yield its URL, then drop it (disconnecting everyone).

    Other engineers' tests share the ``test`` database: counting connections or listing studies
    there would count theirs too.
    """
    name = f"regsweep_rel_{uuid.uuid4().hex[:10]}"
    admin_sql(pg_url, f'CREATE DATABASE "{name}"' + (f' OWNER "{owner}"' if owner else ""))
    try:
        yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        admin_sql(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
