"""64 workers on one Postgres through PgBouncer (transaction pooling): the budget still holds.

Sixty-four real ``sweep-worker`` processes (each with its training child: the synthetic trainer,
trials of about two seconds) share one study through one PgBouncer with a pool of ``POOL`` server
connections. Direct, they would need 128 connections, more than the test server's
``max_connections = 100``. Checked: exact budget, no duplicate trial numbers, nothing left
RUNNING, no result lost, and server connections (sampled from ``pg_stat_activity``) never above
the pool size.

Measured and printed (not asserted): ask/tell latency p50/p95 through the pooler and direct,
taken by a probe process *during* the run, so both see the same load; the RSS and PSS of all
worker processes; the pooler's client connections and wait times (``SHOW POOLS``).
``REGSWEEP_SCALE_RESULTS=DIR`` also writes them to ``DIR/scale-ci.json`` (bench/results).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psycopg2
import sqlalchemy as sa
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from sweep.storage.engine import engine_of, open_storage
from sweep.study.budget import budget_state
from tests.helpers import REPO
from tests.reliability.pgbouncer import PgBouncer, pgbouncer
from tests.reliability.support import (
    FINISHED,
    Worker,
    admin_engine,
    by_state,
    children,
    create_synthetic,
    fresh_database,
    start_worker,
    tails,
    trials_of,
    wait_workers,
    worker_group,
)

WORKERS = int(os.environ.get("REGSWEEP_SCALE_WORKERS", "64"))
TRIALS_PER_WORKER = 3
POOL = 10  # server connections for 2 x 64 = 128 client connections
EPOCHS, EPOCH_SECONDS = 2, 1.0

# Times study.ask and study.tell through regsweep's own storage settings (open_storage), against
# the pooler and direct in turn, until the stop file appears; prints the durations as JSON.
PROBE = textwrap.dedent("""
    import json, os, sys, time
    import optuna
    from sweep.storage import open_storage
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    stop_file, targets = sys.argv[1], dict(pooled=sys.argv[2], direct=sys.argv[3])
    studies = {k: optuna.create_study(study_name="latency-probe", storage=open_storage(u),
                                      sampler=optuna.samplers.RandomSampler(), load_if_exists=True)
               for k, u in targets.items()}
    out = {k: {"ask": [], "tell": []} for k in targets}
    while not os.path.exists(stop_file):
        for key, study in studies.items():
            t0 = time.perf_counter()
            trial = study.ask()
            trial.suggest_float("x", 0.0, 1.0)
            t1 = time.perf_counter()
            study.tell(trial, 0.5)
            t2 = time.perf_counter()
            out[key]["ask"].append(t1 - t0)
            out[key]["tell"].append(t2 - t1)
        time.sleep(0.25)
    print(json.dumps(out))
""")


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children(current))
    return found


def _memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB; (0, 0) if it is gone. PSS splits shared pages fairly."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0, 0
    values = {line.split(":")[0]: int(line.split()[1]) for line in text.splitlines()[1:] if line.split()[1].isdigit()}
    return values.get("Rss", 0), values.get("Pss", 0)


class Sampler(threading.Thread):
    """Every 0.25 s: server connections of the study database; every ~2 s: memory and SHOW POOLS."""

    def __init__(self, admin_url: str, database: str, workers: list[Worker], bouncer: PgBouncer) -> None:
        super().__init__(daemon=True)
        self.engine = admin_engine(admin_url)
        self.database = database
        self.workers = workers
        self.bouncer = bouncer
        self.stop = threading.Event()
        self.server: list[int] = []
        self.max_rss_kib = self.max_pss_kib = self.max_processes = 0
        self.max_clients = self.max_waiting = 0
        self.max_wait_s = 0.0
        self.error: str | None = None

    def _pools(self) -> None:
        conn = psycopg2.connect(host="127.0.0.1", port=self.bouncer.port, user="postgres", dbname="pgbouncer",
                                connect_timeout=3)
        try:
            conn.autocommit = True  # the admin console has no transactions
            with conn.cursor() as cur:
                cur.execute("SHOW POOLS")
                names = [d[0] for d in cur.description]
                for row in cur.fetchall():
                    pool = dict(zip(names, row, strict=True))
                    if pool["database"] == self.database:
                        self.max_clients = max(self.max_clients, int(pool["cl_active"]) + int(pool["cl_waiting"]))
                        self.max_waiting = max(self.max_waiting, int(pool["cl_waiting"]))
                        wait = int(pool["maxwait"]) + int(pool.get("maxwait_us", 0)) / 1e6
                        self.max_wait_s = max(self.max_wait_s, wait)
        finally:
            conn.close()

    def run(self) -> None:
        query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :db AND backend_type = 'client backend'")
        ticks = 0
        try:
            with self.engine.connect() as conn:
                while not self.stop.wait(0.25):
                    self.server.append(int(conn.execute(query, {"db": self.database}).scalar_one()))
                    ticks += 1
                    if ticks % 8:
                        continue
                    pids = [p for w in list(self.workers) if w.proc.poll() is None for p in _tree(w.pid)]
                    memory = [_memory_kib(p) for p in pids]
                    self.max_processes = max(self.max_processes, len(pids))
                    self.max_rss_kib = max(self.max_rss_kib, sum(m[0] for m in memory))
                    self.max_pss_kib = max(self.max_pss_kib, sum(m[1] for m in memory))
                    self._pools()
        except Exception as error:  # noqa: BLE001 - reported by the test, not swallowed
            self.error = f"{type(error).__name__}: {error}"
        finally:
            self.engine.dispose()


def _summary(values: list[float]) -> dict[str, float]:
    from bench.common import summarize

    return summarize(values)


def test_sixty_four_workers_through_pgbouncer(pg_url: str, private_db: str, tmp_path: Path) -> None:
    """64 workers, 192 trials, pool of 10: exact budget, no duplicates, nothing RUNNING, <= 10 server connections."""
    name, trials = "scale", WORKERS * TRIALS_PER_WORKER
    # Random sampler: the point is the database under 64 clients, not TPE's CPU time on 2 cores.
    create_synthetic(private_db, tmp_path, name, trials=trials, epochs=EPOCHS, epoch_seconds=EPOCH_SECONDS,
                     dedup=False, extra='\n[sampler]\nname = "random"\nseed = 0\n')
    database = str(make_url(private_db).database)
    stop_file = tmp_path / "probe.stop"
    started = time.monotonic()
    with fresh_database(pg_url) as direct_db, \
            pgbouncer(pg_url, private_db, pool_size=POOL, max_client_conn=4 * WORKERS) as bouncer, \
            worker_group() as workers:
        pooled = bouncer.url(private_db)
        sampler = Sampler(pg_url, database, workers, bouncer)
        sampler.start()
        for i in range(WORKERS):
            workers.append(start_worker(pooled, name, tmp_path / "logs", i))
        probe = subprocess.Popen([sys.executable, "-c", PROBE, str(stop_file), pooled, direct_db],
                                 cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # Bounded: 64 interpreters (and their training children) start on 2 cores first.
            ran = wait_workers(workers, timeout=720)
        finally:
            stop_file.touch()
            probe_out, probe_err = probe.communicate(timeout=60)
            sampler.stop.set()
            sampler.join(timeout=15)
        wall = time.monotonic() - started
        codes = [w.proc.returncode for w in workers]
        assert codes == [0] * WORKERS, f"exit codes {sorted(set(codes))}\n{tails(workers[:3])}\n{bouncer.log()[-2000:]}"
    assert probe.returncode == 0, f"latency probe failed:\n{probe_err[-3000:]}"
    assert sampler.error is None, f"sampler failed: {sampler.error}"

    found = trials_of(private_db, name)
    numbers = [t.number for t in found]
    finished = [t for t in found if t.state in FINISHED]
    assert len(numbers) == len(set(numbers)), f"{len(numbers) - len(set(numbers))} duplicate trial numbers"
    assert len(finished) == len(found) == trials, f"budget {trials}: {by_state(found)}"
    assert not [t for t in found if t.state == TrialState.RUNNING], by_state(found)
    # No result lost: every trial a worker says it finished is COMPLETE with its value stored.
    assert all(t.value is not None for t in finished if t.state == TrialState.COMPLETE)
    assert all(len(t.intermediate_values) == EPOCHS for t in finished if t.state == TrialState.COMPLETE)
    state = budget_state(engine_of(open_storage(private_db)), name)
    assert state is not None and (state.claimed, state.settled) == (trials, trials), state
    assert len(sampler.server) >= 10, f"only {len(sampler.server)} pg_stat_activity samples"
    assert 1 <= max(sampler.server) <= POOL, f"{max(sampler.server)} server connections for a pool of {POOL}"

    latency = json.loads(probe_out)
    figures = {
        "workers": WORKERS,
        "trials": trials,
        "states": by_state(found),
        "pool_size": POOL,
        "client_connections_max": sampler.max_clients,
        "clients_waiting_max": sampler.max_waiting,
        "pool_wait_max_s": round(sampler.max_wait_s, 3),
        "server_connections_max": max(sampler.server),
        "server_connections_samples": len(sampler.server),
        "latency_ms": {path: {op: _summary(v) for op, v in ops.items()} for path, ops in latency.items()},
        "processes_max": sampler.max_processes,
        "rss_total_mib_max": round(sampler.max_rss_kib / 1024),
        "pss_total_mib_max": round(sampler.max_pss_kib / 1024),
        "worker_run_s": {k: round(v / 1000, 1) if k != "n" else v for k, v in _summary(list(ran.values())).items()},
        "wall_s": round(wall, 1),
    }
    print("\n[scale] " + json.dumps(figures))
    if os.environ.get("REGSWEEP_SCALE_RESULTS"):
        from bench.common import write_result

        write_result("scale", "ci", figures, command="REGSWEEP_SCALE_RESULTS=bench/results pytest -s "
                     "tests/reliability/test_scale.py", directory=Path(os.environ["REGSWEEP_SCALE_RESULTS"]))
