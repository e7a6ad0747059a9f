"""The database restarts mid-sweep: workers reconnect (db_call retries on a fresh pool), the sweep
completes with its exact budget, and no trial a worker finished training is lost.

Runs on a throwaway cluster (initdb into a temporary directory, a free port) so that stopping it
disturbs nobody else's tests; the cluster is stopped and deleted even when the test fails.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from sweep.storage.engine import engine_of, open_storage
from sweep.study.budget import budget_state
from tests.reliability.pgcluster import PG_BIN, Cluster
from tests.reliability.support import (
    FINISHED,
    by_state,
    create_synthetic,
    start_worker,
    tails,
    trials_of,
    wait_for,
    wait_workers,
    worker_group,
)

BUDGET = 16
EPOCHS = 4
OUTAGE_S = 5.0
_EPOCH_LINE = re.compile(r"Trial (\d+) epoch (\d+)/(\d+):")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A running throwaway cluster; stopped and deleted afterwards, pass or fail."""
    if not (PG_BIN / "initdb").exists():
        message = f"no PostgreSQL binaries in {PG_BIN} (set REGSWEEP_PG_BIN)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    cluster = Cluster()
    try:
        cluster.init()
        yield cluster
    finally:
        cluster.destroy()
    assert not cluster.root.exists(), f"cluster directory {cluster.root} left behind"


def _epochs_reported(url: str, study: str) -> int | None:
    """Intermediate values written so far (progress), or None while the server is down."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(
                "SELECT count(*) FROM trial_intermediate_values v JOIN trials t ON t.trial_id = v.trial_id "
                "JOIN studies s ON s.study_id = t.study_id WHERE s.study_name = :name"), {"name": study}).scalar_one())
    except sa.exc.OperationalError:
        return None
    finally:
        engine.dispose()


def _recovery_s(url: str, study: str, before: int, up_at: float) -> float:
    """Seconds from the server being up again until a worker writes its next epoch."""
    wait_for(lambda: (_epochs_reported(url, study) or 0) > before, 120, "a worker to write again after the restart")
    return time.monotonic() - up_at


def test_workers_survive_database_restarts(cluster: Cluster, tmp_path: Path) -> None:
    """A fast restart, then a 5 s outage, in the middle of a 2-worker sweep."""
    url, name = cluster.url, "restart-sweep"
    create_synthetic(url, tmp_path, name, trials=BUDGET, epochs=EPOCHS, epoch_seconds=0.4, dedup=False)
    figures: dict[str, float] = {}
    with worker_group() as workers:
        workers += [start_worker(url, name, tmp_path / "logs", i) for i in range(2)]
        before = wait_for(lambda: (_epochs_reported(url, name) or 0) >= 3 * EPOCHS and _epochs_reported(url, name),
                          120, "three trials' worth of epochs before the restart")
        started = time.monotonic()
        cluster.restart()
        up_at = time.monotonic()
        figures["restart_s"] = up_at - started
        figures["recover_after_restart_s"] = _recovery_s(url, name, before, up_at)

        before = wait_for(lambda: (_epochs_reported(url, name) or 0) >= 9 * EPOCHS and _epochs_reported(url, name),
                          120, "nine trials' worth of epochs before the outage")
        cluster.stop("fast")
        time.sleep(OUTAGE_S)
        cluster.start()
        up_at = time.monotonic()
        figures["recover_after_outage_s"] = _recovery_s(url, name, before, up_at)

        wait_workers(workers, timeout=240)
        codes = [w.proc.returncode for w in workers]
        assert codes == [0, 0], f"exit codes {codes}\n{tails(workers)}"

    logs = "\n".join(w.output() for w in workers)
    trials = trials_of(url, name)
    states = {t.number: t.state for t in trials}
    trained = {int(m[1]) for m in _EPOCH_LINE.finditer(logs) if m[2] == m[3]}  # logged its last epoch
    lost = {n: states.get(n) for n in trained if states.get(n) != TrialState.COMPLETE}
    assert not lost, f"trials trained to the end but not COMPLETE in the database: {lost}\n{tails(workers)}"
    assert trained, "no worker logged a finished trial"
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == BUDGET and len(trials) == BUDGET, f"budget {BUDGET}: {by_state(trials)}\n{tails(workers)}"
    state = budget_state(engine_of(open_storage(url)), name)
    assert state is not None and (state.claimed, state.settled) == (BUDGET, BUDGET), state
    faults = logs.count("Storage fault while trying to")
    assert faults > 0, "no worker noticed the restart: the test did not exercise reconnection"
    # The retry warnings name the real cause (the driver's message), not Optuna's generic wrapper text.
    misleading = [line for line in logs.splitlines() if "Storage fault" in line and "max length" in line]
    assert not misleading, misleading[:3]
    print(f"\n[db restart] {len(finished)}/{BUDGET} finished, lost 0, faults retried {faults}, heartbeat misses "
          f"{logs.count('Heartbeat for trial')}, " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()))


def test_database_fault_while_sampling_does_not_fail_the_trial(
    pg_url: str, study_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The moment a restart can hit that the sweep above rarely catches: the sampler writing a param.

    The first param write (``_set_trial_param``, which Optuna's cache wrapper calls) fails as a
    dropped connection does (Optuna's StorageInternalError over an OperationalError); the trial must
    be retried through db_call, not failed.
    """
    from optuna.exceptions import StorageInternalError

    from sweep.storage.engine import StorageConfig
    from sweep.study.budget import ReleaseSlotAndRetry
    from workers.parent.loop import WorkerLoop

    create_synthetic(pg_url, tmp_path, study_name, trials=1, epochs=1, dedup=False)
    storage = open_storage(pg_url, StorageConfig.for_worker(heartbeat_interval=1, grace_period=3),
                           stale_trial_callback=ReleaseSlotAndRetry())
    original = storage._set_trial_param
    faults: list[str] = []

    def flaky_set_trial_param(*args: object, **kwargs: object) -> object:
        if not faults:
            faults.append("_set_trial_param")
            try:
                raise sa.exc.OperationalError(
                    "UPDATE trial_params", {}, Exception("server closed the connection unexpectedly")
                )
            except sa.exc.OperationalError as error:
                raise StorageInternalError("An exception is raised during the commit.") from error
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(storage, "_set_trial_param", flaky_set_trial_param)
    WorkerLoop(storage, study_name, poll_interval=0.2).run()
    trials = trials_of(pg_url, study_name)
    assert faults, "the fault was not injected"
    assert [t.state for t in trials] == [TrialState.COMPLETE], [
        (t.state, t.user_attrs.get("fail_reason")) for t in trials
    ]
