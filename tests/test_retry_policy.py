"""The one retry policy for storage faults, as pure decisions (no database, no sleeping)."""

from __future__ import annotations

import pytest

from sweep.storage.retry import DB_CALL, OUTAGE_RETRY_S, RetryPolicy, worker_outage


def test_db_call_backs_off_doubling_to_15s_and_gives_up_after_8_tries() -> None:
    waits = [DB_CALL.next_delay(attempt, rand=lambda: 0.5) for attempt in range(1, 9)]
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0, None]


def test_jitter_spreads_each_wait_between_half_and_one_and_a_half_times() -> None:
    assert DB_CALL.next_delay(3, rand=lambda: 0.0) == pytest.approx(1.0)
    assert DB_CALL.next_delay(3, rand=lambda: 0.999) == pytest.approx(2.998)
    assert RetryPolicy(jitter=False).next_delay(3, rand=lambda: 0.999) == 2.0


def test_worker_outage_retries_every_30s_until_max_outage_has_passed() -> None:
    policy = worker_outage(900)
    assert [policy.next_delay(n, elapsed) for n, elapsed in ((1, 0.0), (20, 600.0), (31, 900.0))] == [
        OUTAGE_RETRY_S, OUTAGE_RETRY_S, OUTAGE_RETRY_S]
    assert policy.next_delay(32, 900.5) is None
    assert worker_outage(0).next_delay(1, 0.0) == OUTAGE_RETRY_S  # the first failure always waits once


def test_attempt_and_time_limits_each_end_the_retries() -> None:
    assert RetryPolicy(attempts=2).next_delay(1) is not None
    assert RetryPolicy(attempts=2).next_delay(2) is None
    assert RetryPolicy(attempts=None, max_elapsed=10).next_delay(100, 9.0) is not None
    assert RetryPolicy(attempts=None, max_elapsed=10).next_delay(100, 10.5) is None


def test_sweep_worker_waits_out_an_outage_by_the_policy_then_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse
    import threading

    import workers.cli as cli
    from sweep.errors import StorageError

    failures = {"left": 2}
    waits: list[float] = []

    class FlakyLoop:
        def __init__(self, *args: object, **kwargs: object) -> None:
            if failures["left"]:
                failures["left"] -= 1
                raise StorageError("Storage error while trying to load the study: connection refused")

        def run(self) -> None:
            pass

    class Stops(cli._Stops):
        def __init__(self) -> None:
            super().__init__()
            self.stopping = _Event()

    class _Event(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(float(timeout or 0.0))
            return False

    monkeypatch.setattr(cli, "WorkerLoop", FlakyLoop)
    args = argparse.Namespace(study="s", follow=None, follow_poll=1.0, heartbeat_file=None, heartbeat_interval=1,
                              worker_index=0, max_trials=None, artifacts=None, keep_models=False, max_outage=900.0)
    cli._serve(args, storage=None, stops=Stops())
    assert waits == [OUTAGE_RETRY_S, OUTAGE_RETRY_S]

    failures["left"] = 1
    args.max_outage = -1.0  # any time at all is past it: the first failure is raised
    with pytest.raises(StorageError):
        cli._serve(args, storage=None, stops=Stops())
