"""Workers through PgBouncer in transaction pooling mode (a real ``pgbouncer``, Debian's package).

Transaction pooling hands a server connection to a client for one transaction only, so anything
session-scoped (SET, advisory locks, LISTEN, temp tables, server-side prepared statements) breaks
behind it. These tests run every database path of a worker through a pooler with fewer server
connections than clients: Optuna's ``SELECT ... FOR UPDATE`` on ask/tell from racing workers, the
budget's conditional UPDATE, heartbeats, ``fail_stale_trials`` after a ``kill -9``, the finalist
flip, and artifact metadata (curve plots, kept models) and a resume from an epoch checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from sweep.errors import StorageError
from sweep.storage.engine import engine_of, open_storage
from sweep.study.budget import budget_state
from tests.helpers import REPO
from tests.reliability.pgbouncer import pgbouncer
from tests.reliability.support import (
    FINISHED,
    Worker,
    admin_engine,
    by_state,
    create_synthetic,
    start_worker,
    tails,
    trials_of,
    wait_for,
    wait_workers,
    worker_group,
)

HEARTBEAT = ("--heartbeat-interval", "1", "--grace-period", "3")


class ServerConnections(threading.Thread):
    """Samples the server connections (pg_stat_activity) to one database every 0.1 s."""

    def __init__(self, admin_url: str, database: str) -> None:
        super().__init__(daemon=True)
        self.engine = admin_engine(admin_url)
        self.database = database
        self.stop = threading.Event()
        self.values: list[int] = []

    def run(self) -> None:
        query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :db AND backend_type = 'client backend'")
        with self.engine.connect() as conn:
            while not self.stop.wait(0.1):
                self.values.append(int(conn.execute(query, {"db": self.database}).scalar_one()))
        self.engine.dispose()

    def finish(self) -> int:
        """Stop sampling; returns the maximum seen."""
        self.stop.set()
        self.join(timeout=10)
        assert self.values, "no pg_stat_activity sample was taken"
        return max(self.values)


def test_transaction_pooling_multiplexes_server_connections(pg_url: str, private_db: str) -> None:
    """Two clients, one server connection: the pooler really is in transaction mode (the premise)."""
    with pgbouncer(pg_url, private_db, pool_size=1) as bouncer:
        engines = [sa.create_engine(bouncer.url(private_db)) for _ in range(2)]
        conns = [e.connect() for e in engines]
        try:
            pids = set()
            for _ in range(3):
                for conn in conns:
                    pids.add(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
                    conn.commit()  # ends the transaction: the server connection goes back to the pool
            assert len(pids) == 1, f"two clients used {len(pids)} server connections with pool_size=1"
            # ...and session state leaks to the next client: why regsweep must never SET anything.
            conns[0].execute(sa.text("SET statement_timeout = '4321s'"))
            conns[0].commit()
            seen = conns[1].execute(sa.text("SHOW statement_timeout")).scalar_one()
            conns[1].commit()
            assert seen == "4321s", f"client 1 saw statement_timeout {seen!r}: is the pool really shared?"
        finally:
            for conn in conns:
                conn.close()
            for engine in engines:
                engine.dispose()
    print(f"\n[pgbouncer] 2 clients x 3 transactions: server pid(s) {sorted(pids)}; "
          f"client 1 saw statement_timeout {seen!r} after client 0's SET")


def test_open_storage_needs_one_server_connection_at_a_time(pg_url: str, private_db: str) -> None:
    """Pool of 1: opening the storage, ask and tell must not wait for a second server connection.

    Optuna's schema check held a transaction while taking a second connection: 64 workers starting
    behind a pool of 10 deadlocked (each held one and waited); here it would hang until PgBouncer's
    query_wait_timeout (120 s).
    """
    code = textwrap.dedent("""
        import sys, optuna
        from sweep.storage import open_storage
        storage = open_storage(sys.argv[1])
        study = optuna.create_study(study_name="one-connection", storage=storage)
        trial = study.ask()
        study.tell(trial, trial.suggest_float("x", 0, 1))
        print(len(study.trials))
    """)
    # The schema exists already, as in every deployment: init (`sweep create`) goes direct and
    # creates it. (Optuna's first-time schema set-up also nests two connections.)
    engine_of(open_storage(private_db)).dispose()
    with pgbouncer(pg_url, private_db, pool_size=1) as bouncer:
        started = time.monotonic()
        try:
            done = subprocess.run([sys.executable, "-c", code, bouncer.url(private_db)], capture_output=True,
                                  text=True, timeout=60, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        except subprocess.TimeoutExpired:
            raise AssertionError("open_storage/ask/tell behind a pool of 1 hung for 60 s (two connections at once?)"
                                 ) from None
    assert done.returncode == 0 and done.stdout.strip() == "1", f"{done.stdout}\n{done.stderr[-3000:]}"
    print(f"\n[pgbouncer] open_storage + ask + tell behind a pool of 1: {time.monotonic() - started:.1f}s")


def test_schema_check_still_refuses_an_old_schema(private_db: str) -> None:
    """The one-connection schema check keeps Optuna's: an outdated schema is refused with its advice."""
    engine = engine_of(open_storage(private_db))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'v3.0.0.a'"))
    engine.dispose()
    with pytest.raises(RuntimeError, match="no longer compatible.*optuna storage upgrade"):
        open_storage(private_db)


def test_racing_workers_through_pgbouncer_budget_finalists_artifacts(pg_url: str, private_db: str,
                                                                       tmp_path: Path) -> None:
    """8 workers, a 3-connection pool: exact budget, one finalist flip, artifacts and heartbeats recorded."""
    name, workers_n, pool, search, top_k, seeds = "pooled", 8, 3, 16, 2, 2
    extra = f"\n[finalists]\ntop_k = {top_k}\nseeds = {seeds}\n"
    create_synthetic(private_db, tmp_path, name, trials=search, epochs=2, epoch_seconds=0.2, pruner="median",
                     dedup=False, extra=extra)
    database = str(make_url(private_db).database)
    artifacts = tmp_path / "artifacts"
    with pgbouncer(pg_url, private_db, pool_size=pool) as bouncer, worker_group() as workers:
        sampler = ServerConnections(pg_url, database)
        sampler.start()
        pooled = bouncer.url(private_db)
        workers += [start_worker(pooled, name, tmp_path / "logs", i, "--artifacts", str(artifacts), "--keep-models",
                                 *HEARTBEAT) for i in range(workers_n)]
        try:
            wait_workers(workers, timeout=300)
        finally:
            max_server = sampler.finish()
        codes = [w.proc.returncode for w in workers]
        assert codes == [0] * workers_n, f"exit codes {codes}\n{tails(workers)}\n{bouncer.log()[-2000:]}"

    trials = trials_of(private_db, name)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)), f"duplicate trial numbers: {sorted(numbers)}"
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == len(trials) == search + top_k * seeds, by_state(trials)
    finalists = [t for t in finished if t.user_attrs.get("phase") == "finalist"]
    assert len(finalists) == top_k * seeds, f"{len(finalists)} finalist trials: the flip ran more or less than once"
    assert len({(t.user_attrs["finalist_of"], t.user_attrs["seed"]) for t in finalists}) == top_k * seeds
    engine = engine_of(open_storage(private_db))
    with engine.connect() as conn:
        phases = conn.execute(
            sa.text("SELECT count(*) FROM regsweep_phase WHERE study_name = :s"), {"s": name}
        ).scalar_one()
        beats = conn.execute(sa.text("SELECT count(DISTINCT trial_id) FROM trial_heartbeats")).scalar_one()
    assert phases == 1, f"{phases} finalist phase rows"
    assert beats == len(trials), f"heartbeats recorded for {beats} of {len(trials)} trials"
    state = budget_state(engine, name)
    assert state is not None and (state.total, state.claimed, state.settled) == (len(trials),) * 3, state
    study = optuna.load_study(study_name=name, storage=private_db)
    for t in finished:  # plots for every trial, the trained model (--keep-models) for each COMPLETE one
        metas = optuna.artifacts.get_all_artifact_meta(t, storage=study._storage)
        kinds = Counter(m.mimetype for m in metas)
        assert kinds["image/png"] >= 1, f"trial {t.number}: {kinds}"
        assert all((artifacts / m.artifact_id).is_file() for m in metas), f"trial {t.number}: a listed file is missing"
        if t.state == TrialState.COMPLETE:
            assert t.user_attrs["model"]["artifact_id"] in {m.artifact_id for m in metas if
                                                            m.mimetype == "application/octet-stream"}, t.user_attrs
    assert 1 <= max_server <= pool, f"{max_server} server connections for a pool of {pool}"
    print(f"\n[pgbouncer] {workers_n} workers (16 client connections) through a pool of {pool}: max {max_server} "
          f"server connections, {len(finished)} trials ({by_state(trials)}), {len(finalists)} finalists, "
          f"flip rows {phases}, heartbeat rows for {beats} trials")


def _running_trial_of(url: str, study: str, worker: Worker) -> int | None:
    """Number of a trial ``worker`` runs that has a checkpoint of at least one epoch."""
    for t in trials_of(url, study):
        if t.state == TrialState.RUNNING and "checkpoint" in t.user_attrs and \
                t.user_attrs.get("worker", {}).get("pid") == worker.pid:
            return t.number
    return None


def test_killed_worker_through_pgbouncer_is_failed_stale_and_resumed(pg_url: str, private_db: str,
                                                                     tmp_path: Path) -> None:
    """kill -9 a worker behind the pooler: fail_stale_trials fails its trial; the copy resumes from its checkpoint."""
    name, budget = "pooled-kill", 3
    # 12 epochs x 0.5 s: long enough to be killed in the middle of a trial.
    create_synthetic(private_db, tmp_path, name, trials=budget, epochs=12, epoch_seconds=0.5, dedup=False)
    artifacts = tmp_path / "artifacts"
    with pgbouncer(pg_url, private_db, pool_size=2) as bouncer, worker_group() as workers:
        pooled = bouncer.url(private_db)
        args = ("--artifacts", str(artifacts), *HEARTBEAT)
        workers.append(start_worker(pooled, name, tmp_path / "logs", 0, *args))
        wait_for(lambda: _running_trial_of(private_db, name, workers[0]), 90, "worker 0 to checkpoint an epoch")
        # The survivor starts second, so worker 0 surely has a trial; it is busy with its own when 0 dies.
        workers.append(start_worker(pooled, name, tmp_path / "logs", 1, *args))
        wait_for(lambda: _running_trial_of(private_db, name, workers[1]), 90, "worker 1 to start a trial")
        # Read again now: worker 0 may have finished the trial it had and started another.
        victim = wait_for(lambda: _running_trial_of(private_db, name, workers[0]), 30,
                          "worker 0 to be in the middle of a trial")
        os.kill(workers[0].pid, signal.SIGKILL)
        killed_at = time.monotonic()
        workers[0].proc.wait(timeout=10)
        wait_for(lambda: trials_of(private_db, name)[victim].state == TrialState.FAIL, 60,
                 f"trial {victim} of the killed worker to be failed as stale")
        time_to_fail = time.monotonic() - killed_at
        wait_workers(workers[1:], timeout=120)
        assert workers[1].proc.returncode == 0, f"{tails(workers)}\n{bouncer.log()[-2000:]}"

    trials = trials_of(private_db, name)
    copies = [t for t in trials if t.system_attrs.get("failed_trial") == victim]
    assert len(copies) == 1 and copies[0].state == TrialState.COMPLETE, by_state(trials)
    assert copies[0].user_attrs.get("resumed", {}).get("from_trial") == victim, copies[0].user_attrs.get("resumed")
    assert sum(t.state in FINISHED for t in trials) == budget, by_state(trials)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)], by_state(trials)
    state = budget_state(engine_of(open_storage(private_db)), name)
    assert state is not None and (state.claimed, state.settled) == (budget, budget), state
    print(
        f"\n[pgbouncer kill] trial {victim} FAIL {time_to_fail:.1f}s after kill -9, re-run as trial "
        f"{copies[0].number} resumed at epoch {copies[0].user_attrs['resumed']['epochs_saved'] + 1}; {by_state(trials)}"
    )


def test_compose_pgbouncer_service_starts_with_its_environment(pg_url: str, private_db: str, tmp_path: Path) -> None:
    """docker-compose.yml's `pgbouncer` service: its environment runs start.sh, SCRAM auth works, healthcheck passes.

    Substituted, as in tests/test_compose_workers.py: the `postgres` host -> the local server, the
    role -> the test server's (trust on the server side; the client side still checks the
    password through SCRAM), the listen port -> a free one, the run dir -> a local folder.
    """
    from tests.reliability.pgbouncer import require_pgbouncer
    from tests.reliability.pgcluster import free_port
    from tests.test_docker_files import environment_dict, parse_dockerfile, resolved_compose

    binary = require_pgbouncer()
    service = resolved_compose()["services"]["pgbouncer"]
    env = environment_dict(service)
    assert env["PGBOUNCER_DB_HOST"] == "postgres" and "PGBOUNCER_AUTH_TYPE" not in env, env.keys()
    assert service["read_only"] is True and "/tmp" in service["tmpfs"]
    (stage,) = parse_dockerfile(REPO / "deploy" / "pgbouncer" / "Dockerfile")
    image_env = dict(pair.split("=", 1) for args in stage.all("ENV") for pair in args.replace("\\", " ").split())
    server = make_url(pg_url)
    port = free_port()
    run_dir = Path(tempfile.mkdtemp(prefix="regsweep-compose-pgb-"))
    os.chmod(run_dir, 0o1777)
    password = env["PGBOUNCER_PASSWORD"]  # the .env.example placeholder
    local = {**image_env, **env, "PGBOUNCER_DB_HOST": str(server.host), "PGBOUNCER_DB_PORT": str(server.port or 5432),
             "PGBOUNCER_USER": str(server.username), "PGBOUNCER_LISTEN_ADDR": "127.0.0.1",
             "PGBOUNCER_LISTEN_PORT": str(port), "PGBOUNCER_RUN_DIR": str(run_dir / "pgbouncer"),
             "PATH": f"{Path(binary).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    kwargs: dict[str, object] = {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}
    log = tmp_path / "pgbouncer.log"
    with open(log, "wb") as handle:
        proc = subprocess.Popen(["sh", str(REPO / "deploy" / "pgbouncer" / "start.sh")], env=local, stdout=handle,
                                stderr=subprocess.STDOUT, cwd=run_dir, **kwargs)  # type: ignore[arg-type]
    url = make_url(private_db).set(host="127.0.0.1", port=port, password=password)
    try:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 3})
        wrong = sa.create_engine(url.set(password="not-the-password"), poolclass=sa.pool.NullPool)

        def connects() -> bool:
            assert proc.poll() is None, f"pgbouncer exited {proc.returncode}:\n{log.read_text()}"
            try:
                with engine.connect() as conn:
                    return conn.execute(sa.text("SELECT 1")).scalar_one() == 1
            except sa.exc.OperationalError:
                return False

        wait_for(connects, 20, "a SCRAM login through the compose pgbouncer")
        with pytest.raises(sa.exc.OperationalError, match="SASL authentication failed"):
            with wrong.connect():
                pass
        # ...which regsweep does not retry as a transient fault (it would for ~48 s).
        started = time.monotonic()
        with pytest.raises(StorageError, match="SASL authentication failed"):
            open_storage(url.set(password="not-the-password").render_as_string(hide_password=False))
        assert time.monotonic() - started < 10, "a wrong password through PgBouncer was retried"
        # The image's HEALTHCHECK command, with the image's environment.
        (check,) = stage.all("HEALTHCHECK")
        health = json.loads(check.split("CMD", 1)[1].strip())
        if shutil.which("pg_isready"):
            done = subprocess.run(health, env=local, capture_output=True, text=True, timeout=30)
            assert done.returncode == 0, f"healthcheck {health}: {done.stdout}{done.stderr}"
        engine.dispose()
        wrong.dispose()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        shutil.rmtree(run_dir, ignore_errors=True)
