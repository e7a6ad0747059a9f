"""Fixtures of the reliability tests: a private database per test, and the ``reliability`` marker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test in this folder ``reliability`` (``pytest -m reliability`` runs them alone)."""
    for item in items:
        if _HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.reliability)


def admin_engine(pg_url: str) -> sa.engine.Engine:
    """An autocommit engine on the server's ``test`` database, for CREATE/DROP DATABASE and ROLE."""
    return sa.create_engine(pg_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 10})


def drop_database(pg_url: str, name: str) -> None:
    """Drop ``name``, disconnecting whatever is still connected to it."""
    engine = admin_engine(pg_url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


@pytest.fixture
def private_db(pg_url: str) -> Iterator[str]:
    """URL of a fresh database on the shared server, dropped afterwards.

    Other engineers' tests share the ``test`` database; counting connections or listing studies
    there would count theirs too.
    """
    name = f"regsweep_rel_{uuid.uuid4().hex[:10]}"
    engine = admin_engine(pg_url)
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    try:
        yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        drop_database(pg_url, name)

