"""Shared fixtures: the real PostgreSQL at 127.0.0.1:5432 and an embedded SQLite file.

In CI (``CI=true``) a test that needs Postgres fails when it cannot connect; locally it skips.
Storage tests run one fixture over both backends, as Optuna's own storage tests do.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers import PG_URL


def _pg_reachable() -> str | None:
    try:
        engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 5})
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as error:  # noqa: BLE001 - any failure means unreachable
        return f"{type(error).__name__}: {str(error).splitlines()[0]}"


@pytest.fixture(scope="session")
def pg_url() -> str:
    """URL of the real Postgres; fails in CI, skips elsewhere, when it is down."""
    problem = _pg_reachable()
    if problem:
        message = f"PostgreSQL at {PG_URL} unreachable: {problem}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return PG_URL


@pytest.fixture(params=["postgresql", "sqlite"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One storage URL per backend: the real Postgres and a fresh SQLite file."""
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url")
    return f"sqlite:///{tmp_path / 'regsweep.db'}"


@pytest.fixture
def study_name(request: pytest.FixtureRequest) -> str:
    """A study name unique to this test run (tests share one Postgres database)."""
    return f"t-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}".replace("[", "-").replace("]", "")
