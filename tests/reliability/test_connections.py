"""Connection budget (optuna#1347 "too many clients"): 16 workers hold at most 16 x POOL_SIZE.

A sampler thread reads ``pg_stat_activity`` (``application_name = 'regsweep'``, the test's own
database) while the workers run, and maps each connection's client port to the process owning
the socket through /proc, so the limit is checked per worker too, and the training children
are checked to hold none.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from sweep.storage.engine import POOL_SIZE
from tests.reliability.support import (
    FINISHED,
    Worker,
    admin_engine,
    by_state,
    children,
    create_synthetic,
    start_worker,
    tails,
    trials_of,
    wait_workers,
    worker_group,
)

WORKERS = 16


def _socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets ``pid`` has open."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


def _inode_by_local_port() -> dict[int, int]:
    """Local TCP port -> socket inode, from /proc/net/tcp (IPv4; the test server is 127.0.0.1)."""
    found = {}
    with open("/proc/net/tcp", encoding="ascii") as handle:
        next(handle)
        for line in handle:
            fields = line.split()
            found[int(fields[1].split(":")[1], 16)] = int(fields[9])
    return found


class Sampler(threading.Thread):
    """Samples regsweep connections to one database: the total, and per owning process."""

    def __init__(self, admin_url: str, database: str, workers: list[Worker]) -> None:
        super().__init__(daemon=True)
        self.engine = admin_engine(admin_url)
        self.database = database
        self.workers = workers
        self.stop = threading.Event()
        self.samples = 0
        self.max_total = 0
        self.max_per_worker = 0
        self.max_in_children = 0
        self.unattributed = 0  # connections owned by no worker in two samples running

    def run(self) -> None:
        query = sa.text(
            "SELECT client_port FROM pg_stat_activity WHERE application_name = 'regsweep' AND datname = :db"
        )
        previous_stray: set[int] = set()
        with self.engine.connect() as conn:
            while not self.stop.wait(0.2):
                ports = [row[0] for row in conn.execute(query, {"db": self.database})]
                inode_of = _inode_by_local_port()
                owned = {w.pid: _socket_inodes(w.pid) for w in list(self.workers)}
                in_children = set().union(*(_socket_inodes(c) for w in list(self.workers) for c in children(w.pid)))
                per_worker = {pid: sum(inode_of.get(p) in inodes for p in ports) for pid, inodes in owned.items()}
                self.samples += 1
                self.max_total = max(self.max_total, len(ports))
                self.max_per_worker = max([self.max_per_worker, *per_worker.values()])
                self.max_in_children = max(self.max_in_children, sum(inode_of.get(p) in in_children for p in ports))
                mine = set().union(*owned.values())
                # A worker exiting between the query and the /proc reads leaves a port for one sample.
                stray = {p for p in ports if inode_of.get(p) not in mine}
                self.unattributed = max(self.unattributed, len(stray & previous_stray))
                previous_stray = stray
        self.engine.dispose()


def test_sixteen_workers_stay_within_the_connection_budget(pg_url: str, private_db: str, tmp_path: Path) -> None:
    """16 workers on a 48-trial sweep: at most 2 connections each, 32 in all, none from a training child."""
    name = "connections"
    create_synthetic(private_db, tmp_path, name, trials=48, epochs=2, epoch_seconds=0.5, dedup=False)
    database = str(make_url(private_db).database)
    with worker_group() as workers:
        sampler = Sampler(pg_url, database, workers)
        sampler.start()
        for i in range(WORKERS):
            workers.append(start_worker(private_db, name, tmp_path / "logs", i))
        try:
            wait_workers(workers, timeout=300)
        finally:
            sampler.stop.set()
            sampler.join(timeout=10)
        codes = [w.proc.returncode for w in workers]
        assert codes == [0] * WORKERS, f"exit codes {codes}\n{tails(workers)}"

    trials = trials_of(private_db, name)
    assert sum(t.state in FINISHED for t in trials) == 48, by_state(trials)
    assert sampler.samples >= 5 and sampler.max_total > 0, "the sampler saw no regsweep connection"
    assert sampler.max_total <= WORKERS * POOL_SIZE, f"{sampler.max_total} connections > {WORKERS} x {POOL_SIZE}"
    assert sampler.max_per_worker <= POOL_SIZE, f"a worker held {sampler.max_per_worker} connections"
    assert sampler.max_in_children == 0, "a training child holds a database connection"
    assert sampler.unattributed == 0, f"{sampler.unattributed} regsweep connection(s) owned by no worker"
    print(f"\n[connections] {WORKERS} workers: max {sampler.max_total} connections (budget {WORKERS * POOL_SIZE}), "
          f"max {sampler.max_per_worker} per worker, {sampler.samples} samples, {by_state(trials)}")
