"""A throwaway PostgreSQL cluster (initdb + pg_ctl) that a test may stop and start at will.

initdb refuses to run as root, so as root every command runs as the ``postgres`` OS user through
``runuser`` on a directory chowned to it. The cluster listens on 127.0.0.1 on a free port with trust
auth, fsync off (it is thrown away).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PG_BIN = Path(os.environ.get("REGSWEEP_PG_BIN", "/usr/lib/postgresql/15/bin"))


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """One cluster in its own temporary directory; call :meth:`destroy` when done."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="regsweep-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "server.log"
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 120) -> str:
        command = [str(PG_BIN / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.root, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stdout}\n{done.stderr}\n"
                               f"{self.server_log()[-2000:]}")
        return done.stdout

    def server_log(self) -> str:
        """The server's log so far."""
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def init(self) -> None:
        """initdb and start; returns once the server accepts connections."""
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
        self.start()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast`` terminates every session, as a restart or failover does)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def start(self) -> None:
        """Start the server (``pg_ctl start`` does not remember options: they are given each time)."""
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
                   "-c fsync=off -c max_connections=60")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", options, "-w", "start")

    def restart(self) -> None:
        """``pg_ctl restart -m fast``."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-m", "fast", "-w", "restart")

    def destroy(self) -> None:
        """Stop the server if it runs and delete the whole directory."""
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        except (RuntimeError, subprocess.SubprocessError):
            pass
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            deadline = time.monotonic() + 5
            while self.root.exists() and time.monotonic() < deadline:  # pragma: no cover - slow fs
                time.sleep(0.1)
