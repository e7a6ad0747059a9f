"""Fixtures for the docker tests: a real engine, a throwaway checkout and one compose stack.

The tests run the shell blocks that README.md and docs/docker.md mark ``<!-- docs-test: docker -->``
verbatim, in a copy of the working tree (so `cp .env.example .env` never touches the developer's
own .env), under a compose project name unique to the session. The images keep their documented
names (`regsweep-base:latest`, ...), so the engine's layer cache makes every build after the
first one a matter of seconds. Without an engine the tests skip; with CI=true they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker.support import Checkout, docker_problem
from tests.test_docker_files import skip_or_fail

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/docker is marked `docker` (`-m "not docker"` skips it) and `slow`
    (minutes of builds and real training: `make test-fast` leaves it out, `make test` runs it)."""
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.docker)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """The engine's version; skips (fails under CI=true) when no engine answers."""
    problem, version = docker_problem()
    if problem:
        skip_or_fail(problem)
    return version


def _copy_tree(dest: Path) -> None:
    """Tracked and untracked-but-not-ignored files of the working tree, as a fresh clone has them."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True, timeout=60).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


@contextlib.contextmanager
def _checkout() -> Iterator[Checkout]:
    # Not tmp_path_factory: pytest prunes old basetemp dirs, and other pytest sessions on this
    # machine would delete the checkout under a running stack.
    root = Path(tempfile.mkdtemp(prefix="regsweep-docker-"))
    _copy_tree(root)
    project = f"rsdocker{uuid.uuid4().hex[:8]}"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COMPOSE_", "POSTGRES_", "SWEEP_", "OPTUNA_", "REGSWEEP_"))
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    box = Checkout(root=root, project=project, env=env)
    try:
        yield box
    finally:
        box.teardown()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def checkout(docker_engine: str) -> Iterator[Checkout]:
    """A copy of the repository to run the docs in, with PATH giving `sweep` from this venv.

    Teardown removes every container, network and volume of the session's compose project and
    every launcher container of its studies.
    """
    with _checkout() as box:
        yield box


@pytest.fixture
def fresh_checkout(docker_engine: str) -> Iterator[Checkout]:
    """Another copy, with a compose project of its own, for one test."""
    with _checkout() as box:
        yield box
