"""Creating studies: race-safe, nothing created from bad input, readable by Optuna's own CLI."""

from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa

from sweep.errors import SpecError
from sweep.spec.load import load_spec
from sweep.storage.engine import engine_of, open_storage
from sweep.study.budget import budget_of, budget_state
from sweep.study.sweeps import create_sweep, load_sweep
from tests.helpers import BIN, REPO, run_cli, synthetic_spec

GRID = """
[study]
name = "{name}"
[space.kernel]
kinds = ["none", "l1", "l2"]
l1 = {{ values = [1e-3] }}
l2 = {{ values = [1e-3] }}
[space.bias]
tie = "kernel"
[sampler]
name = "grid"
"""


@pytest.fixture
def fresh_pg_db(pg_url: str) -> Iterator[str]:
    """A brand-new Postgres database: Optuna's tables do not exist yet (the racy case)."""
    name = f"regsweep_race_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield pg_url.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _create(url: str, spec_path: str, barrier: mp.Barrier, results: mp.Queue) -> None:
    spec = load_spec(spec_path)
    barrier.wait()
    try:
        _, created = create_sweep(spec, open_storage(url))
        results.put(("ok", created))
    except Exception as error:  # reported to the test
        results.put(("error", repr(error)))


def test_concurrent_create_on_fresh_database(fresh_pg_db: str, tmp_path: Path) -> None:
    spec_path = tmp_path / "grid.toml"
    spec_path.write_text(GRID.format(name="race"))
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_create, args=(fresh_pg_db, str(spec_path), barrier, results)) for _ in range(6)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert all(kind == "ok" for kind, _ in outcomes), outcomes
    assert sum(created for _, created in outcomes) == 1
    summaries = optuna.get_all_study_summaries(fresh_pg_db)
    assert [s.study_name for s in summaries] == ["race"]
    study = optuna.load_study(study_name="race", storage=fresh_pg_db)
    assert len(study.trials) == 3  # the grid was enqueued exactly once
    assert budget_state(engine_of(open_storage(fresh_pg_db)), "race").total == 3


def test_same_name_different_spec_is_rejected(storage_url: str, study_name: str, tmp_path: Path) -> None:
    storage = open_storage(storage_url)
    create_sweep(load_spec(synthetic_spec(tmp_path, study_name, trials=4)), storage)
    other = load_spec(synthetic_spec(tmp_path, study_name, trials=5))
    with pytest.raises(SpecError, match=f"study '{study_name}' already exists with a different spec"):
        create_sweep(other, storage)
    assert load_sweep(storage, study_name).spec.budget.trials == 4


def test_bad_spec_creates_no_study(pg_url: str, study_name: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        f'[study]\nname = "{study_name}"\n[space.kernel]\nkinds = ["l2"]\nl2 = {{ low = -1, high = 1 }}\n'
        "[budget]\ntrials = 3\n"
    )
    result = run_cli("create", str(bad), "--storage", pg_url)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "sweep: error: Invalid space.kernel.l2.low: expected a positive float, received low=-1.0"
    )
    assert study_name not in [s.study_name for s in optuna.get_all_study_summaries(pg_url)]


def test_study_is_read_back_by_optuna_cli(pg_url: str, study_name: str, tmp_path: Path) -> None:
    run_cli("create", str(synthetic_spec(tmp_path, study_name, trials=3)), "--storage", pg_url, check=True)
    result = subprocess.run(
        [str(BIN / "optuna"), "studies", "--storage", pg_url, "-f", "json"],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=True,
    )
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows[study_name]["direction"] == ["MAXIMIZE"]
    study = optuna.load_study(study_name=study_name, storage=pg_url)
    assert study.user_attrs["spec"]["study"]["name"] == study_name
    # The budget is read from its one home, the regsweep_budget row, and is stored nowhere else.
    state = budget_of(study)
    assert state is not None and state.total == 3
    assert "trials" not in study.user_attrs["budget"]
