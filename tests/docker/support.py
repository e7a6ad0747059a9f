"""Helpers for tests/docker: run docs blocks and compose commands in a throwaway checkout."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: The marker line (right before a ```bash fence) of blocks these tests run.
DOCKER_MARK = "<!-- docs-test: docker -->"
_FENCE = re.compile(r"^```(bash|sh|shell)\s*$")


def docker_problem() -> tuple[str | None, str]:
    """(why no engine is usable or None, the server version)."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed (bash ../shared/docker/setup-engine.sh)", ""
    try:
        result = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True,
                                text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return "the Docker engine did not answer within 30 s", ""
    if result.returncode != 0:
        return f"no Docker engine answers: {result.stderr.strip().splitlines()[-1:] or result.stdout}", ""
    compose = subprocess.run(
        ["docker", "compose", "version", "--short"], capture_output=True, text=True, timeout=30, check=False
    )
    if compose.returncode != 0:
        return "the docker compose v2 plugin is not installed", ""
    return None, result.stdout.strip()


def shell_blocks(path: Path) -> list[tuple[str | None, str]]:
    """Every shell block of a markdown file as (marker comment on the line before the fence, body).

    Args:
        path: README.md or a docs/*.md file.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[tuple[str | None, str]] = []
    i = 0
    while i < len(lines):
        if _FENCE.match(lines[i].strip()):
            previous = lines[i - 1].strip() if i else ""
            body: list[str] = []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            blocks.append((previous if previous.startswith("<!--") else None, textwrap.dedent("\n".join(body) + "\n")))
        i += 1
    return blocks


def docs_block(path: Path, contains: str) -> str:
    """The one ``docs-test: docker`` block of ``path`` containing ``contains``.

    Args:
        path: The markdown file.
        contains: Text that identifies the block.
    """
    found = [body for mark, body in shell_blocks(path) if contains in body]
    assert len(found) == 1, f"{path.name}: expected one shell block containing {contains!r}, found {len(found)}"
    marks = [mark for mark, body in shell_blocks(path) if contains in body]
    assert marks[0] == DOCKER_MARK, f"{path.name}: the block with {contains!r} is not marked {DOCKER_MARK}"
    return found[0]


def free_host_ports() -> dict[str, str]:
    """A free loopback port for every ``*_HOST_PORT`` variable docker-compose.yml publishes with.

    Two stacks (and the services already on this machine) must not race for the defaults.
    """
    from tests.test_docker_files import load_compose, variables_in

    ports: dict[str, str] = {}
    for name in sorted({name for name, _op, _arg in variables_in(load_compose()) if name.endswith("_HOST_PORT")}):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports[name] = str(s.getsockname()[1])
    return ports


def wait_for(what: str, check: Callable[[], T | None], timeout: float, every: float = 1.0) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` s.

    Args:
        what: Description for the failure message.
        check: Returns the value waited for, or None/False.
        timeout: Seconds.
        every: Seconds between polls.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


@dataclass
class Checkout:
    """A copy of the repository where the docs' commands run, under one compose project.

    Args:
        root: The copy.
        project: COMPOSE_PROJECT_NAME of the session (written into .env by :meth:`configure`).
        env: Environment for every command (no COMPOSE_/SWEEP_/POSTGRES_ leaking in from outside).
    """

    root: Path
    project: str
    env: dict[str, str]
    studies: set[str] = field(default_factory=set)

    def run(self, argv: list[str] | str, timeout: float = 600, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command (a string goes to ``bash -euo pipefail -c``) in the checkout."""
        cmd = ["bash", "-euo", "pipefail", "-c", argv] if isinstance(argv, str) else argv
        result = subprocess.run(cmd, cwd=self.root, env={**self.env, **(env or {})}, capture_output=True,
                                text=True, timeout=timeout, check=False)
        if check:
            assert result.returncode == 0, (
                f"{argv if isinstance(argv, str) else ' '.join(argv)}\nexited {result.returncode}\n"
                f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-6000:]}"
            )
        return result

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``docker compose ARGS`` in the checkout (its .env names the project)."""
        return self.run(["docker", "compose", *args], timeout=timeout, check=check)

    def dotenv(self) -> dict[str, str]:
        """The checkout's .env as compose reads it."""
        from tests.test_docker_files import read_env_file

        return read_env_file(self.root / ".env")

    def set_env(self, **values: str) -> None:
        """Edit .env as the docs tell users to: replace (or append) ``KEY=value`` lines."""
        path = self.root / ".env"
        lines = path.read_text(encoding="utf-8").splitlines()
        for key, value in values.items():
            text = f'{key}="{value}"' if re.search(r"[\s*$#]", value) else f"{key}={value}"
            hits = [i for i, line in enumerate(lines) if line.startswith(f"{key}=")]
            if hits:
                lines[hits[0]] = text
            else:
                lines.append(text)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def host_storage(self) -> str:
        """Storage URL of the stack's Postgres through its published loopback port."""
        env = self.dotenv()
        return (f"postgresql+psycopg2://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@127.0.0.1:"
                f"{env['POSTGRES_HOST_PORT']}/{env['POSTGRES_DB']}")

    def container(self, service: str) -> str:
        """Id of the (single) container of ``service``, running or not."""
        out = self.compose("ps", "--all", "-q", service).stdout.split()
        assert len(out) == 1, f"expected one container for {service}, found {out}"
        return out[0]

    def inspect(self, container: str) -> dict[str, Any]:
        """``docker inspect`` of one container."""
        return json.loads(self.run(["docker", "inspect", container]).stdout)[0]

    def inspect_image(self, image: str) -> dict[str, Any]:
        """``docker image inspect`` of one image."""
        return json.loads(self.run(["docker", "image", "inspect", image]).stdout)[0]

    def health(self, container: str) -> str:
        """The container's health status (``starting``, ``healthy``, ``unhealthy``)."""
        return (self.inspect(container)["State"].get("Health") or {}).get("Status", "none")

    def logs(self, service: str) -> str:
        """All logs of a service."""
        result = self.compose("logs", "--no-color", "--no-log-prefix", service, timeout=120)
        return result.stdout + result.stderr

    def teardown(self) -> None:
        """Remove the session's containers (compose and launcher), networks and volumes."""
        if not (self.root / ".env").exists():
            return
        for study in sorted(self.studies):
            ids = self.run(
                ["docker", "ps", "-aq", "--filter", f"label=regsweep.study={study}"], check=False
            ).stdout.split()
            if ids:
                self.run(["docker", "rm", "-f", *ids], check=False, timeout=120)
        self.compose("--profile", "*", "down", "-v", "--remove-orphans", "--timeout", "10", check=False, timeout=300)
