"""A real PgBouncer process in front of the test Postgres, started with the shipped start script.

``deploy/pgbouncer/start.sh`` (what the compose service and the Kubernetes Deployment run) writes
the configuration and execs Debian's ``pgbouncer``: the tests therefore prove the configuration
that ships, only with ``trust`` auth (the test server has no passwords) on 127.0.0.1 and a free
port. PgBouncer refuses to run as root, so as root it runs as the ``postgres`` OS user.

Without ``pgbouncer`` on PATH the tests skip, and with ``CI=true`` they fail (``.ci/run``
installs it).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.helpers import REPO
from tests.reliability.pgcluster import free_port

START_SCRIPT = REPO / "deploy" / "pgbouncer" / "start.sh"


def require_pgbouncer() -> str:
    """Path of the ``pgbouncer`` binary; fails with CI=true, skips elsewhere, when it is missing."""
    found = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None
    )
    if found is None:
        message = "pgbouncer is not installed (apt-get install -y pgbouncer)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


class PgBouncer:
    """One pgbouncer process; use :func:`pgbouncer` to start and stop it.

    Args:
        server_url: URL of the Postgres server it forwards to (host and port are used).
        pool_size: ``PGBOUNCER_POOL_SIZE``: server connections per database.
        max_client_conn: ``PGBOUNCER_MAX_CLIENT_CONN``.
    """

    def __init__(self, server_url: str, pool_size: int, max_client_conn: int = 400) -> None:
        self.binary = require_pgbouncer()
        self.server = make_url(server_url)
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="regsweep-pgbouncer-"))
        self.logfile = self.root / "pgbouncer.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        """The start script's environment (what a compose file or manifest would set)."""
        return {
            "PATH": f"{Path(self.binary).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PGBOUNCER_DB_HOST": str(self.server.host or "127.0.0.1"),
            "PGBOUNCER_DB_PORT": str(self.server.port or 5432),
            "PGBOUNCER_USER": str(self.server.username or "postgres"),
            "PGBOUNCER_AUTH_TYPE": "trust",
            "PGBOUNCER_POOL_SIZE": str(self.pool_size),
            "PGBOUNCER_MAX_CLIENT_CONN": str(self.max_client_conn),
            "PGBOUNCER_LISTEN_ADDR": "127.0.0.1",
            "PGBOUNCER_LISTEN_PORT": str(self.port),
            "PGBOUNCER_RUN_DIR": str(self.root / "run"),
        }

    def url(self, database_url: str) -> str:
        """``database_url`` (a database on the server) reached through this pooler instead."""
        return make_url(database_url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def log(self) -> str:
        """PgBouncer's output so far."""
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def start(self, probe_url: str, timeout: float = 20) -> None:
        """Start it and wait until a query through it reaches the database at ``probe_url``."""
        kwargs: dict[str, object] = {"user": "postgres", "group": "postgres"} if self._as_postgres else {}
        with open(self.logfile, "wb") as handle:
            self.proc = subprocess.Popen(["sh", str(START_SCRIPT)], env=self.env(), stdout=handle,
                                         stderr=subprocess.STDOUT, cwd=self.root, **kwargs)  # type: ignore[arg-type]
        engine = sa.create_engine(self.url(probe_url), poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 3})
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(f"pgbouncer exited {self.proc.returncode}:\n{self.log()[-3000:]}")
                try:
                    with engine.connect() as conn:
                        conn.execute(sa.text("SELECT 1"))
                    return
                except sa.exc.OperationalError as error:
                    if time.monotonic() > deadline:
                        raise AssertionError(
                            f"pgbouncer not ready after {timeout:.0f}s: {error}\n{self.log()[-3000:]}"
                        ) from error
                    time.sleep(0.2)
        finally:
            engine.dispose()

    def stop(self) -> None:
        """Stop the process (SIGTERM: immediate shutdown) and remove its directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def pgbouncer(server_url: str, probe_url: str, pool_size: int, max_client_conn: int = 400) -> Iterator[PgBouncer]:
    """A running PgBouncer in front of ``server_url``, ready for ``probe_url``'s database; stopped afterwards."""
    bouncer = PgBouncer(server_url, pool_size=pool_size, max_client_conn=max_client_conn)
    try:
        bouncer.start(probe_url)
        yield bouncer
    finally:
        bouncer.stop()


def server_connections(admin_url: str, database: str) -> int:
    """Server connections to ``database`` right now (pg_stat_activity, any application)."""
    engine = sa.create_engine(admin_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d"),
                                    {"d": database}).scalar_one())
    finally:
        engine.dispose()
