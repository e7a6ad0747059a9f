"""A storage password never leaks: not in output, logs, study or trial attrs, exports, reports,
any row of the study database, nor in the command line ``ps`` shows of a running process.

The sweep runs as a role with a password on a database it owns (the server trusts every
password, so any string works: the point is that it never shows up). The password travels every
way a user may give it: in the spec (``study.storage``), in ``SWEEP_STORAGE``, and on the command
line of ``sweep run`` and of ``sweep-worker`` (``--storage``).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers import BIN, REPO, synthetic_spec
from tests.reliability.support import admin_sql, cmdline, fresh_database, wait_for

BUDGET = 6


@dataclass
class Secret:
    """The password, the URL carrying it, and the role and database it opens."""

    password: str
    url: str
    role: str


@pytest.fixture
def secret(pg_url: str) -> Iterator[Secret]:
    """A role with a password and a fresh database it owns; both dropped afterwards."""
    role = f"regsweep_secret_{uuid.uuid4().hex[:8]}"
    password = f"S3cr3t-pw-{uuid.uuid4().hex}"
    admin_sql(pg_url, f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    try:
        with fresh_database(pg_url, owner=role) as db_url:
            database = db_url.rsplit("/", 1)[1]
            yield Secret(password, f"postgresql://{role}:{password}@127.0.0.1:5432/{database}", role)
    finally:
        admin_sql(pg_url, f"DROP ROLE IF EXISTS {role}")


class PsWatch(threading.Thread):
    """Scans every process's /proc/PID/cmdline for the password while the sweep runs."""

    def __init__(self, password: str) -> None:
        super().__init__(daemon=True)
        self.password = password
        self.seen: dict[int, tuple[float, float, str]] = {}  # pid -> first, last seen, masked cmdline
        self.stop = threading.Event()
        self.started_at = time.monotonic()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            for entry in os.listdir("/proc"):
                if entry.isdigit() and self.password in (line := cmdline(int(entry))):
                    now = time.monotonic() - self.started_at
                    first = self.seen.get(int(entry), (now, now, ""))[0]
                    self.seen[int(entry)] = (first, now, line.replace(self.password, "<PASSWORD>")[:160])


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SWEEP_STORAGE", "OPTUNA_STORAGE", "SWEEP_STUDY")}
    return {**env, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **(extra or {})}


def _sweep(work: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(BIN / "sweep"), *args], capture_output=True, text=True, env=_env(env), cwd=work,
                          timeout=180, check=False)
    assert done.returncode == 0, f"sweep {args[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _database_text(url: str) -> str:
    """Every row of every table of the study database, as text."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://"), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            tables = [
                r[0] for r in conn.execute(sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
            ]
            return "\n".join(
                str(conn.execute(sa.text(f"SELECT string_agg(t::text, E'\\n') FROM \"{name}\" t")).scalar())
                for name in tables
            )
    finally:
        engine.dispose()


def _password_visible_after(proc: subprocess.Popen[bytes], marker: Path, password: str) -> list[str]:
    """Once ``proc`` has written to ``marker`` (its setup is over), sample what ps shows for it."""
    wait_for(lambda: marker.exists() and marker.stat().st_size > 0, 60, f"{marker.name} to get its first output")
    leaks = []
    for _ in range(10):
        line = cmdline(proc.pid)
        if password in line:
            leaks.append(line.replace(password, "<PASSWORD>"))
        time.sleep(0.05)
    return leaks


def test_password_appears_nowhere(secret: Secret, tmp_path: Path) -> None:
    """create, run (2 workers) plus a worker given --storage, status, best, export, report: grep it all."""
    name = "secret-sweep"
    work = tmp_path / "work"
    (work / "report").mkdir(parents=True)  # `sweep report --out` writes into an existing folder only
    spec = synthetic_spec(tmp_path, name, trials=BUDGET, epochs=3, epoch_seconds=0.3, dedup=False,
                          changes={"study": {"storage": secret.url}})
    outputs = [_sweep(work, "create", str(spec))]  # the password comes from the spec's study.storage

    watch = PsWatch(secret.password)
    watch.start()
    with open(work / "run.out", "wb") as run_out, open(work / "worker.out", "wb") as worker_out:
        run = subprocess.Popen([str(BIN / "sweep"), "run", str(spec), "--workers", "2", "--storage", secret.url],
                               env=_env(), cwd=work, stdout=run_out, stderr=subprocess.STDOUT)
        worker = subprocess.Popen([str(BIN / "sweep-worker"), "--storage", secret.url, "--study", name,
                                   "--worker-index", "2"], env=_env(), cwd=work, stdout=worker_out,
                                  stderr=subprocess.STDOUT)
    try:
        run_leaks = _password_visible_after(run, work / "run.out", secret.password)
        worker_leaks = _password_visible_after(worker, work / "worker.out", secret.password)
        assert run.wait(timeout=180) == 0 and worker.wait(timeout=180) == 0, (work / "run.out").read_text()
    finally:
        for proc in (run, worker):
            if proc.poll() is None:
                proc.kill()
        watch.stop.set()
        watch.join(timeout=5)

    env = {"SWEEP_STORAGE": secret.url}  # the rest read it from the environment
    outputs += [_sweep(work, "status", name, env=env), _sweep(work, "status", name, "--json", env=env),
                _sweep(work, "best", name, env=env), _sweep(work, "export", name, "--out", "trials.csv", env=env),
                _sweep(work, "report", name, "--out", "report/report.html", env=env)]
    files = {str(p.relative_to(work)): p.read_text(errors="replace") for p in work.rglob("*") if p.is_file()}
    assert any(k.startswith("regsweep-logs/") for k in files) and {
        "trials.csv",
        "report/report.html",
        "report/report.md",
    } <= set(files)
    assert "***" in outputs[0] and name in outputs[1], outputs  # the URL was shown masked; status ran
    database = _database_text(secret.url)
    assert f'"{name}"' in database or name in database

    found = [f"output of command {i}" for i, text in enumerate(outputs) if secret.password in text]
    found += [f"file {path}" for path, text in files.items() if secret.password in text]
    found += ["a row of the study database"] if secret.password in database else []
    found += [f"ps of `sweep run` after its setup: {line}" for line in run_leaks]
    found += [f"ps of `sweep-worker` after its setup: {line}" for line in worker_leaks]
    assert not found, "password leaked:\n" + "\n".join(found)
    others = {pid: s for pid, s in watch.seen.items() if pid not in (run.pid, worker.pid)}
    assert not others, f"password in the command line of other processes: {others}"
    early = {
        ("sweep run" if pid == run.pid else "sweep-worker"): f"{s[1] - s[0] + 0.05:.2f}s"
        for pid, s in watch.seen.items()
    }
    print(f"\n[secrets] password found in 0 of {len(outputs)} outputs, {len(files)} files, the database dump; "
          f"raw argv visible in ps only before the title is rewritten: {early or 'never seen'}")
