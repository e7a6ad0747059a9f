"""Bad input through the real ``sweep`` and ``sweep-worker`` commands (table in ``bad_inputs.py``).

Every case must exit non-zero with ONE error line on stderr that names the problem, no traceback,
and must create no study (the study list of a private database is compared before and after).
The commands run four at a time in a module fixture; each case is then checked as its own test.
A NaN loss, finally, must fail just its trial with the reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from sweep.spec.load import load_spec
from sweep.study.sweeps import budget_total
from tests.helpers import BIN, REPO, run_cli, synthetic_spec
from tests.reliability.bad_inputs import CASES, CREATE, EXISTING, Case
from tests.reliability.support import (
    fresh_database,
    start_worker,
    tails,
    trials_of,
    wait_workers,
    worker_group,
)

_ERROR_LINE = re.compile(r"^sweep(-worker)?( [a-z]+)?: error: ")


@dataclass
class Outcome:
    """What one command did."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    cwd: Path


@dataclass
class Results:
    """All outcomes, and the database's studies and budget rows before and after the cases ran."""

    outcomes: dict[str, Outcome]
    studies_before: set[str]
    studies_after: set[str]
    budgets_after: set[str]


def _studies(url: str) -> set[str]:
    return set(optuna.get_all_study_names(storage=url))


def _budget_rows(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return {row[0] for row in conn.execute(sa.text("SELECT study_name FROM regsweep_budget"))}
    finally:
        engine.dispose()


def _run(case: Case, root: Path, db: str) -> Outcome:
    cwd = root / case.id
    cwd.mkdir()
    spec = cwd / f"{case.id}.toml"
    spec.write_text(case.spec_text(), encoding="utf-8")
    server = make_url(db).set(database=None).render_as_string(hide_password=False)
    values = {"spec": str(spec), "db": db, "server": server, "dir": str(cwd)}
    argv = [str(BIN / case.argv[0])]
    for arg in case.argv[1:]:
        for key, value in values.items():
            arg = arg.replace(f"{{{key}}}", value)
        argv.append(arg)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SWEEP_STORAGE", "OPTUNA_STORAGE", "SWEEP_STUDY", "SWEEP_FOLLOW")
    }
    env["PYTHONPATH"] = str(REPO)
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=case.timeout, check=False)
    return Outcome(done.returncode, done.stdout, done.stderr, time.monotonic() - started, cwd)


@pytest.fixture(scope="module")
def results(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Results]:
    """Run every case against a private database holding one valid study."""
    root = tmp_path_factory.mktemp("bad-input")
    with fresh_database(pg_url) as db:
        run_cli("create", str(synthetic_spec(root, EXISTING)), "--storage", db, check=True)
        before = _studies(db)
        with ThreadPoolExecutor(max_workers=4) as pool:
            # The slow one (an unreachable server, retried with backoff) first, so the rest overlap it.
            ordered = sorted(CASES, key=lambda case: -case.timeout)
            futures = {case.id: pool.submit(_run, case, root, db) for case in ordered}
            outcomes = {name: future.result() for name, future in futures.items()}
        yield Results(outcomes, before, _studies(db), _budget_rows(db))


def test_table_is_large_enough() -> None:
    """At least 30 malformed inputs, each with a unique id, something broken and words its error must name."""
    ids = [c.id for c in CASES]
    assert len(CASES) >= 30
    assert len(set(ids)) == len(ids), sorted({i for i in ids if ids.count(i) > 1})
    # An empty ``expect`` (or an empty fragment) would let any error line pass.
    unchecked = [c.id for c in CASES if not c.expect or not all(c.expect)]
    assert not unchecked, f"cases whose error line is not checked: {unchecked}"
    # A case with the base spec and the base command line breaks nothing.
    unbroken = [c.id for c in CASES if c.argv == CREATE and c.spec_text() == Case(c.id, ()).spec_text()]
    assert not unbroken, f"cases that break nothing: {unbroken}"


def test_unbroken_base_spec_is_valid(tmp_path: Path) -> None:
    """Control: the spec every case breaks one thing of is itself valid."""
    path = tmp_path / "control.toml"
    path.write_text(Case("control", ()).spec_text(), encoding="utf-8")
    assert budget_total(load_spec(path)) == 4


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_clear_error(case: Case, results: Results) -> None:
    """Non-zero exit, one ``error:`` line naming the problem, no traceback, nothing written."""
    out = results.outcomes[case.id]
    shown = (
        f"exit {out.returncode} after {out.seconds:.1f}s\nstdout: {out.stdout[-1500:]}\nstderr: {out.stderr[-3000:]}"
    )
    assert out.returncode != 0, shown
    assert "Traceback" not in out.stderr, shown
    errors = [line for line in out.stderr.splitlines() if _ERROR_LINE.match(line)]
    assert len(errors) == 1, f"expected one error line\n{shown}"
    missing = [fragment for fragment in case.expect if fragment not in errors[0]]
    assert not missing, f"the error does not name {missing}: {errors[0]}"
    assert f"bad-{case.id}" not in results.studies_after | results.budgets_after
    assert not (out.cwd / "regsweep.db").exists(), "fell back to the default SQLite storage"
    if case.id == "storage_unreachable":
        print(f"\n[bad input] unreachable database: failed after {out.seconds:.1f}s (db_call retries)")


def test_no_bad_input_created_a_study(results: Results) -> None:
    """The private database's study list and budget table are the same after all cases."""
    assert results.studies_after == results.studies_before == {EXISTING}
    assert results.budgets_after == {EXISTING}
    slowest = max(results.outcomes.items(), key=lambda item: item[1].seconds)
    print(
        f"\n[bad input] {len(results.outcomes)} inputs, 0 studies created; "
        f"slowest {slowest[0]} {slowest[1].seconds:.1f}s"
    )


def test_nan_loss_fails_only_that_trial(pg_url: str, study_name: str, tmp_path: Path) -> None:
    """A trainer whose loss turns NaN at epoch 2 of trial 0: that trial FAILs with the reason, trial 1 completes."""
    options = {"epoch_seconds": 0.0, "fault": "nan", "on_trials": "0", "at_epoch": 1}
    spec = synthetic_spec(tmp_path, study_name, trials=2, epochs=3, dedup=False,
                          changes={"training": {"trainer": "tests.trainers:faulty", "trainer_options": options}})
    run_cli("create", str(spec), "--storage", pg_url, check=True)
    with worker_group() as workers:
        workers.append(start_worker(pg_url, study_name, tmp_path / "logs", 0))
        wait_workers(workers, timeout=120)
        assert workers[0].proc.returncode == 0, tails(workers)
    trials = trials_of(pg_url, study_name)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[0].user_attrs["fail_reason"] == "TrialDiverged: loss became nan at epoch 2"
    assert "TrialDiverged" in trials[0].user_attrs["traceback"]
    assert len(trials[0].intermediate_values) == 1  # the epoch before the NaN was reported
