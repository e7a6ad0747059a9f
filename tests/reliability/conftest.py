"""Fixtures of the reliability tests: a private database per test, and the ``reliability`` marker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.support import fresh_database

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test in this folder ``reliability`` (``pytest -m reliability`` runs them alone)."""
    for item in items:
        if _HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.reliability)


@pytest.fixture
def private_db(pg_url: str) -> Iterator[str]:
    """URL of a fresh database on the shared server, dropped afterwards."""
    with fresh_database(pg_url) as url:
        yield url
