"""Exact trial budgets shared by racing workers.

Optuna's ``MaxTrialsCallback`` counts finished trials *after* the fact, so N workers overshoot by
up to N-1 (optuna#3518). Here a worker claims a slot as it asks for a trial, with one
conditional UPDATE that the database serialises::

    UPDATE regsweep_budget SET claimed = claimed + 1
    WHERE study_name = :s AND claimed < total RETURNING claimed

A worker runs it in the transaction that creates its trial (:func:`claim_on_or_raise` as the
storage's start hook, :meth:`sweep.storage.finish.EndingStorage.starting`): the trial and its slot
exist together or not at all, as its end settles the slot in the tell's own transaction.

A trial failed because its worker died gives its slot back (see :func:`release`), and its
re-queued copy is claimed like any other trial, so the study ends with exactly ``total`` trials
that count. Which trials count is decided in one place, :func:`counts_toward_budget`, from the
structured ``stop_cause`` attr every regsweep process writes on a trial it ends early.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from sweep.errors import BudgetSpent, StorageError
from sweep.storage.engine import db_call, engine_of
from sweep.storage.tables import BUDGET, ensure_tables
from sweep.storage.trial_record import Attr, StopCause

_logger = logging.getLogger(__name__)

__all__ = [
    "counts_toward_budget",
    "requeue_copy",
    "ReleaseSlotAndRetry",
    "BudgetState",
    "ensure_budget",
    "claim",
    "claim_on",
    "claim_on_or_raise",
    "release",
    "settle_on",
    "release_on",
    "end_slot_on",
    "extend",
    "budget_state",
    "budget_of",
]

_COUNTING_CAUSES = frozenset({StopCause.TRIAL_ERROR.value})


def counts_toward_budget(state: Any, user_attrs: Mapping[str, Any]) -> bool:
    """The one rule: does a trial in ``state`` with ``user_attrs`` use a budget slot?

    * COMPLETE and PRUNED count, except a COMPLETE that reused a finished trial's result
      (``dedup_of``: no model was trained, so the budget buys a new config instead) unless it is
      marked ``dedup_counted`` (after many duplicates in a row: the space is exhausted);
    * FAIL counts only with ``stop_cause = "trial_error"``; a FAIL without a ``stop_cause`` was
      failed as stale (its worker died; its slot was released when it was re-queued). Trials of
      studies from before ``stop_cause`` existed fall back to their ``fail_reason`` text;
    * RUNNING and WAITING do not (yet).

    Args:
        state: An ``optuna.trial.TrialState`` (or its name).
        user_attrs: The trial's user attrs.
    """
    name = getattr(state, "name", state)
    if name == "COMPLETE":
        return user_attrs.get(Attr.DEDUP_OF) is None or bool(user_attrs.get(Attr.DEDUP_COUNTED))
    if name == "PRUNED":
        return True
    if name != "FAIL":
        return False
    cause = user_attrs.get(Attr.STOP_CAUSE)
    if cause is not None:
        return cause in _COUNTING_CAUSES
    reason = str(user_attrs.get(Attr.FAIL_REASON) or "")  # legacy trials, written before stop_cause
    return bool(reason) and not reason.startswith(("shutdown", "deadline"))


def requeue_copy(study: optuna.Study, trial: Any, why: str) -> None:
    """Enqueue a WAITING copy of a trial that did not get to count (same params and user attrs,
    so it resumes from the trial's checkpoint); ``failed_trial`` names the original.

    Unlike Optuna's stale-trial retry this is not bounded by ``max_retry``: a deliberate stop is
    not the config's fault.
    """
    system_attrs: dict[str, Any] = {"failed_trial": trial.number, "retry_history": [], **trial.system_attrs}
    system_attrs["retry_history"] = [*system_attrs["retry_history"], trial.number]
    system_attrs = {k: v for k, v in system_attrs.items() if not k.startswith("artifacts:")}
    user_attrs = {k: v for k, v in trial.user_attrs.items() if k != Attr.STOP_CAUSE and k != Attr.FAIL_REASON}
    db_call(lambda: study.add_trial(optuna.create_trial(
        state=optuna.trial.TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs=user_attrs, system_attrs=system_attrs,
    )), what=f"re-queue a copy of trial {trial.number}")
    _logger.info("Trial %d %s; its slot was given back and a copy re-queued", trial.number, why)


@dataclass(frozen=True)
class BudgetState:
    """Slots of a study: ``total`` allowed, ``claimed`` so far."""

    total: int
    claimed: int
    settled: int = 0

    @property
    def in_flight(self) -> int:
        """Claimed slots whose trial has not finished (or not even been asked for yet)."""
        return max(self.claimed - self.settled, 0)

    @property
    def left(self) -> int:
        """Slots not yet claimed."""
        return max(self.total - self.claimed, 0)


def ensure_budget(engine: sa.engine.Engine, study_name: str, total: int) -> None:
    """Create the table if needed and the study's row if missing (idempotent, race-safe).

    Args:
        engine: Engine of the study database.
        study_name: The study.
        total: Number of trials the study may run.
    """

    ensure_tables(engine)

    def _run() -> None:
        try:
            with engine.begin() as conn:
                conn.execute(BUDGET.insert().values(study_name=study_name, total=total, claimed=0, settled=0))
        except sa_exc.IntegrityError:
            pass  # another creator inserted it first: same spec, same total

    db_call(_run, what=f"set up the budget of study {study_name!r}")


def claim(engine: sa.engine.Engine, study_name: str) -> int | None:
    """Claim one slot in a transaction of its own; returns its 1-based index, or None when the budget is spent.

    A study without a budget row (created outside regsweep) has an unlimited budget: returns 0.
    """

    def _run() -> int | None:
        with engine.begin() as conn:
            return claim_on(conn, study_name)

    ensure_tables(engine)
    return db_call(_run, what=f"claim a budget slot of study {study_name!r}")


def claim_on(conn: sa.engine.Connection, study_name: str) -> int | None:
    """:func:`claim` within the caller's transaction."""
    row = conn.execute(
        sa.update(BUDGET)
        .where(BUDGET.c.study_name == study_name, BUDGET.c.claimed < BUDGET.c.total)
        .values(claimed=BUDGET.c.claimed + 1)
        .returning(BUDGET.c.claimed)
    ).first()
    if row is not None:
        return int(row[0])
    exists = conn.execute(sa.select(BUDGET.c.total).where(BUDGET.c.study_name == study_name)).first()
    return None if exists is not None else 0


def claim_on_or_raise(conn: sa.engine.Connection, study_name: str) -> int:
    """:func:`claim_on`, raising when no slot is left: as a trial's start hook, that rolls the start back.

    Raises:
        BudgetSpent: Every slot is claimed.
    """
    slot = claim_on(conn, study_name)
    if slot is None:
        raise BudgetSpent(f"the budget of study {study_name!r} has no slot left")
    return slot


def release(engine: sa.engine.Engine, study_name: str, n: int = 1) -> None:
    """Give ``n`` slots back (a trial that did not count: its worker died or was stopped)."""

    def _run() -> None:
        with engine.begin() as conn:
            release_on(conn, study_name, n)

    db_call(_run, what=f"release a budget slot of study {study_name!r}")


def settle_on(conn: sa.engine.Connection, study_name: str) -> None:
    """Mark one claimed slot's trial as finished (it counts toward the budget), in the caller's
    transaction (a trial's end: :func:`end_slot_on`)."""
    conn.execute(sa.update(BUDGET).where(BUDGET.c.study_name == study_name).values(settled=BUDGET.c.settled + 1))


def release_on(conn: sa.engine.Connection, study_name: str, n: int = 1) -> None:
    """:func:`release` within the caller's transaction."""
    conn.execute(
        sa.update(BUDGET)
        .where(BUDGET.c.study_name == study_name, BUDGET.c.claimed >= n)
        .values(claimed=BUDGET.c.claimed - n)
    )


def end_slot_on(conn: sa.engine.Connection, study_name: str, state: Any, user_attrs: Mapping[str, Any]) -> None:
    """Settle the slot of a trial ending in ``state`` if it counts, else give it back, in the caller's
    transaction (the trial's end: :class:`sweep.storage.finish.EndingStorage`)."""
    if counts_toward_budget(state, user_attrs):
        settle_on(conn, study_name)
    else:
        release_on(conn, study_name)


def extend(engine: sa.engine.Engine, study_name: str, n: int) -> None:
    """Add ``n`` slots (e.g. the finalist phase after the search budget)."""

    def _run() -> None:
        with engine.begin() as conn:
            conn.execute(
                sa.update(BUDGET).where(BUDGET.c.study_name == study_name).values(total=BUDGET.c.total + n)
            )

    db_call(_run, what=f"extend the budget of study {study_name!r}")


def budget_state(engine: sa.engine.Engine, study_name: str) -> BudgetState | None:
    """Current slots, or None for a study without a budget row."""

    def _run() -> BudgetState | None:
        with engine.connect() as conn:
            row = conn.execute(
                sa.select(BUDGET.c.total, BUDGET.c.claimed, BUDGET.c.settled).where(BUDGET.c.study_name == study_name)
            ).first()
        return None if row is None else BudgetState(total=int(row[0]), claimed=int(row[1]), settled=int(row[2]))

    ensure_tables(engine)
    return db_call(_run, what=f"read the budget of study {study_name!r}")


def budget_of(study: optuna.Study) -> BudgetState | None:
    """The study's budget as it stands: the one reader behind ``sweep status``, the report and ``sweep run``.

    The budget lives in one place, the ``regsweep_budget`` row: the finalist phase and ``sweep extend``
    grow it there, so every reader going through here shows the same total. (The spec's
    ``budget.trials`` keeps what the study was created with; the study attr ``budget`` holds
    only the deadline and trial timeout.)

    Args:
        study: The study; one not in an RDB storage (in-memory) has no budget row.

    Returns:
        The slots, or None for a study without a budget row.
    """
    try:
        engine = engine_of(study._storage)
    except StorageError:  # not an RDB study: no budget table
        return None
    return budget_state(engine, study.study_name)


class ReleaseSlotAndRetry(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Optuna's stale-trial retry, plus giving the dead trial's budget slot back first.

    Optuna calls this once per trial that *this* process failed as stale, so each slot is
    released exactly once; the re-queued copy then claims a slot like any other trial. The copy
    does not list the dead trial's artifacts (Optuna's own retry copies their metadata).

    Args:
        max_retry: How often one trial may be re-queued.
    """

    def __init__(self, max_retry: int | None = 2) -> None:
        super().__init__(max_retry=max_retry, inherit_intermediate_values=False)

    def __call__(self, study: optuna.Study, trial: Any) -> None:
        grace = getattr(study._storage, "grace_period", None)
        _logger.warning("Trial %d went stale (no heartbeat for %ss: its worker died or hung)",
                        trial.number, grace if grace is not None else "?")
        release(engine_of(study._storage), study.study_name)
        retries = len(trial.system_attrs.get("retry_history", [])) + 1
        if self._max_retry is not None and retries > self._max_retry:
            _logger.warning("Trial %d: not re-queued, it was retried %d time(s) already", trial.number, retries - 1)
            return
        requeue_copy(study, trial, "went stale")
