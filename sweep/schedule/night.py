"""The end of a night: wait for the deadline, leave no trial RUNNING, write the morning report.

Optuna fails a stale trial only when some process calls ``fail_stale_trials`` (a worker does before
each new trial), so after the deadline nobody would: a worker killed in the night's last hour would
leave its trial RUNNING forever. At ``deadline + grace + heartbeat interval`` the closer:

1. tags RUNNING trials whose heartbeat is older than the grace period with a ``deadline: ...``
   ``fail_reason`` and ``stop_cause = "deadline"`` (they do not count: see
   ``sweep.study.budget.counts_toward_budget``) and fails them with
   ``optuna.storages.fail_stale_trials`` (no retry: the night is over; the budget slot is given back);
2. fails RUNNING trials that never wrote a heartbeat (Optuna never considers those stale);
3. waits up to ``drain_s`` for trials whose worker is alive (an epoch longer than the grace
   period: the worker stops them between epochs), then fails what is still RUNNING;
4. writes ``<study>.html`` and ``<study>.md`` into the report directory.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import sqlalchemy as sa
from optuna.trial import FrozenTrial, TrialState

from sweep.errors import StorageError
from sweep.storage.engine import GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S, StorageConfig, db_call, engine_of, open_storage
from sweep.storage.tables import TRIAL_HEARTBEATS
from sweep.storage.trial_record import Attr, StopCause, TrialRecord
from sweep.study import budget

__all__ = ["NightCloser", "fail_trial", "heartbeat_ages"]

_logger = logging.getLogger(__name__)


def heartbeat_ages(storage: optuna.storages.RDBStorage, trial_ids: list[int]) -> dict[int, float]:
    """Seconds since each trial's last heartbeat, by the database clock (as Optuna measures it).

    Trials without any heartbeat row are absent from the result.
    """
    if not trial_ids:
        return {}
    engine = engine_of(storage)

    def _run() -> dict[int, float]:
        with engine.connect() as conn:
            now: object = conn.execute(sa.select(sa.func.now())).scalar()
            rows = conn.execute(
                sa.select(TRIAL_HEARTBEATS.c.trial_id, TRIAL_HEARTBEATS.c.heartbeat)
                .where(TRIAL_HEARTBEATS.c.trial_id.in_(trial_ids))
            ).all()
        if isinstance(now, str):  # SQLite returns CURRENT_TIMESTAMP as text
            now = dt.datetime.fromisoformat(now)
        if not isinstance(now, dt.datetime):
            raise StorageError(f"The database's now() returned {now!r}, not a time")
        now = now.replace(tzinfo=None)  # heartbeats are stored naive, like Optuna compares them
        return {int(r[0]): (now - r[1].replace(tzinfo=None)).total_seconds() for r in rows}

    return db_call(_run, what="read trial heartbeats")


def fail_trial(study: optuna.Study, trial: FrozenTrial, reason: str) -> bool:
    """Fail a RUNNING trial with ``fail_reason`` and give its budget slot back; False if it had finished."""
    storage = study._storage

    def _run() -> bool:
        try:
            storage.set_trial_user_attr(trial._trial_id, Attr.FAIL_REASON, reason)
            storage.set_trial_user_attr(trial._trial_id, Attr.STOP_CAUSE, StopCause.DEADLINE.value)
            return bool(storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL))
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            return False  # its worker told it in the meantime

    if not db_call(_run, what=f"fail trial {trial.number}"):
        return False
    budget.release(engine_of(storage), study.study_name)
    _logger.warning("Trial %d failed at the close of the night: %s", trial.number, reason)
    return True


class NightCloser:
    """Closes nightly studies at their deadline and writes their reports.

    Args:
        storage_url: Where the studies live.
        report_dir: Where reports go.
        heartbeat_interval: The workers' heartbeat interval (seconds).
        grace_period: Seconds without heartbeat after which a trial is stale.
        clock: Aware current time; sleep: sleeps that many seconds.
        poll_s: Seconds between checks while waiting.
        drain_s: How long past the close a trial with a live worker may still run.
    """

    def __init__(
        self,
        storage_url: str,
        report_dir: Path,
        *,
        heartbeat_interval: int = HEARTBEAT_INTERVAL_S,
        grace_period: int = GRACE_PERIOD_S,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
        sleep: Callable[[float], None] = time.sleep,
        poll_s: float = 30.0,
        drain_s: float = 600.0,
    ) -> None:
        self.url, self.report_dir = storage_url, Path(report_dir)
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.clock, self.sleep, self.poll_s, self.drain_s = clock, sleep, poll_s, drain_s

    def close_at(self, deadline: dt.datetime) -> dt.datetime:
        """When a night is closed: after the workers' own last stale check (deadline + grace + beat)."""
        return deadline + dt.timedelta(seconds=self.grace_period + self.heartbeat_interval)

    def wait_and_close(self, study_name: str, deadline: dt.datetime) -> None:
        """Sleep until the close (earlier if the study is finished), then close and report."""
        storage = open_storage(self.url)
        end = self.close_at(deadline)
        while (now := self.clock()) < end:
            if self._finished(storage, study_name):
                _logger.info("Study %r finished before its deadline; closing it now", study_name)
                break
            self.sleep(min((end - now).total_seconds(), self.poll_s))
        self.close(study_name)

    def close_if_exists(self, study_name: str) -> bool:
        """Close and report a past night that ran (when its report is missing); False if it never ran."""
        storage = open_storage(self.url)
        names = db_call(lambda: optuna.get_all_study_names(storage), what="list studies")
        if study_name not in names:
            return False
        if not (self.report_dir / f"{study_name}.html").exists():
            self.close(study_name)
        return True

    def _finished(self, storage: optuna.storages.RDBStorage, study_name: str) -> bool:
        from sweep.study.sweeps import load_sweep

        sweep = load_sweep(storage, study_name, wait_s=0)
        state = budget.budget_state(engine_of(storage), study_name)
        if state is None or state.left > 0 or state.in_flight > 0:
            return False
        trials = db_call(lambda: sweep.study.get_trials(deepcopy=False), what="list trials")
        if any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials):
            return False
        # With finalists configured, a spent search budget is followed by the finalist phase.
        return sweep.spec.finalists.top_k == 0 or any(TrialRecord(t.user_attrs).phase == "finalist" for t in trials)

    def close(self, study_name: str) -> list[int]:
        """Leave no trial RUNNING, then write the report; returns the numbers of trials failed here."""
        config = StorageConfig(heartbeat_interval=self.heartbeat_interval, grace_period=self.grace_period)
        # Past the deadline a stale trial gets its slot back but no copy: nobody would run it.
        storage = open_storage(self.url, config, stale_trial_callback=budget.ReleaseSlotAndRetry(max_retry=0))
        study = db_call(lambda: optuna.load_study(study_name=study_name, storage=storage), what=f"load {study_name!r}")
        give_up = self.clock() + dt.timedelta(seconds=self.drain_s)
        failed: list[int] = []
        while True:
            running = db_call(lambda: study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)),
                              what="list running trials")
            if not running:
                break
            ages = heartbeat_ages(storage, [t._trial_id for t in running])
            live, tagged, overdue = [], [], self.clock() >= give_up
            for t in running:
                age = ages.get(t._trial_id)
                if age is None or overdue:
                    reason = ("deadline: still RUNNING at the close of the night and never wrote a heartbeat"
                              if age is None else
                              f"deadline: still running {self.drain_s:.0f}s after the close of the night")
                    failed += [t.number] if fail_trial(study, t, reason) else []
                elif age > self.grace_period:
                    # fail_stale_trials sets no reason: tag it first so the report says why.
                    reason = f"deadline: no heartbeat for {age:.0f}s at the close of the night (worker died or hung)"
                    def _tag(t: FrozenTrial = t, r: str = reason) -> None:
                        storage.set_trial_user_attr(t._trial_id, Attr.FAIL_REASON, r)
                        storage.set_trial_user_attr(
                            t._trial_id, Attr.STOP_CAUSE, StopCause.DEADLINE.value
                        )

                    db_call(_tag, what="tag a stale trial")
                    tagged.append(t.number)
                else:
                    live.append(t)
            db_call(lambda: optuna.storages.fail_stale_trials(study), what="fail stale trials")
            failed += tagged
            if live:
                _logger.info("%d trial(s) still running with a live worker; waiting", len(live))
                self.sleep(min(self.poll_s, max((give_up - self.clock()).total_seconds(), 0.001)))
            elif tagged:
                self.sleep(1.0)  # failed just now by fail_stale_trials; look once more
        if failed:
            failed = sorted(set(failed))
            _logger.warning(
                "Study %r: failed %d trial(s) left RUNNING at the deadline: %s", study_name, len(failed), failed
            )
        self._report(study_name)
        return failed

    def _report(self, study_name: str) -> None:
        from sweep.report.write import write_report
        from sweep.study.sweeps import load_sweep

        try:
            sweep = load_sweep(open_storage(self.url), study_name, wait_s=0)
            html, md = write_report(sweep, self.report_dir / f"{study_name}.html", storage_url=self.url)
            _logger.info("Report of %r written: %s and %s", study_name, html, md)
        except StorageError:
            raise
        except Exception:  # a plotting bug must not stop the scheduler from running the next night
            _logger.exception("Could not write the report of %r", study_name)
