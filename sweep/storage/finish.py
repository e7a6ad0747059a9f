"""Ending a trial in one transaction: its last attrs, its state and value, and what its end means
elsewhere (the budget slot), committed together or not at all.

``Study.tell`` writes the state and value in a transaction of its own; a worker used to write the
trial's last attrs before it and settle the budget after it, three commits where bare Optuna has
one. :class:`EndingStorage` is Optuna's ``RDBStorage`` with one addition: inside
:meth:`EndingStorage.ending` (a context manager, per thread), the ``set_trial_state_values`` that
``Study.tell`` makes for that trial also writes the staged attrs and runs the staged
``then(connection, state, attrs)`` in the same transaction. Everything else (the sampler's
``after_trial``, pruned trials' values, validation) stays ``Study.tell``'s own.

A trial that another process has already ended (failed as stale) is rejected by Optuna's
updatable check inside that transaction, so neither the attrs nor ``then`` land: the process that
ended it did what its end needed (see :class:`sweep.study.budget.ReleaseSlotAndRetry`).

A trial's start is one transaction the same way: the one in which ``Study.ask`` creates a RUNNING
trial, or takes a WAITING one, also writes the trial's first heartbeat (heartbeats on: a worker's
storage) and, inside :meth:`EndingStorage.starting`, runs a staged ``then(connection)`` (a
worker's budget claim; an exception from it rolls the start back and leaves ``Study.ask``).
Optuna never finds a trial without a heartbeat row stale, so a worker killed between its ask and a
separate first beat used to leave a trial RUNNING for good, as one killed between a separate claim
and its ask left a slot claimed with no trial; and each was one more commit per trial.

A trial's config is one transaction too: inside :meth:`EndingStorage.holding_params`, the params
``suggest_*`` writes for that trial (Optuna commits each on its own) wait for the trial's next
:meth:`EndingStorage.set_trial_user_attrs` and are committed with it, so a worker's sampled config
and the attrs that describe it (config, seed, worker) land together: 2-4 commits fewer per trial.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.distributions import BaseDistribution
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.study._tell import _tell_with_warning
from optuna.trial import TrialState
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql as sa_postgresql
from sqlalchemy.dialects import sqlite as sa_sqlite

from sweep.errors import StorageError

__all__ = ["EndingStorage", "OnStart", "TrialEnd", "ending_storage_of", "tell"]

_logger = logging.getLogger(__name__)

#: ``then(connection, state, user attrs after the staged ones)``: runs in the ending transaction.
Then = Callable[[sa.engine.Connection, TrialState, Mapping[str, Any]], None]
#: ``then(connection)``: runs in a trial's start transaction (see :meth:`EndingStorage.starting`).
OnStart = Callable[[sa.engine.Connection], object]


@dataclasses.dataclass(frozen=True)
class TrialEnd:
    """What is written with one trial's end.

    Attributes:
        trial_id: The storage's trial id.
        attrs: User attrs written in the same transaction (JSON-able values).
        then: Run last in the transaction with the trial's final state and all its user attrs.
    """

    trial_id: int
    attrs: Mapping[str, Any]
    then: Then | None = None


@dataclasses.dataclass
class _HeldParams:
    """Params of one trial that ``suggest_*`` wrote while held: ``(name, internal value,
    distribution, the study's earlier distribution of that name or None)``, in order."""

    trial_id: int
    params: list[tuple[str, float, BaseDistribution, BaseDistribution | None]] = dataclasses.field(
        default_factory=list)


class EndingStorage(optuna.storages.RDBStorage):
    """``optuna.storages.RDBStorage`` whose trial end can carry staged writes (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._local = threading.local()

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state.pop("_local", None)
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._local = threading.local()

    def ending(self, end: TrialEnd) -> contextlib.AbstractContextManager[None]:
        """Within this block, this thread's ending of ``end.trial_id`` also writes ``end``."""
        return self._staged("end", end)

    def starting(self, then: OnStart) -> contextlib.AbstractContextManager[None]:
        """Within this block, this thread's trial start (``Study.ask``) also runs ``then(connection)``
        in its transaction; an exception from ``then`` rolls the start back and propagates."""
        return self._staged("start", then)

    @contextlib.contextmanager
    def holding_params(self, trial_id: int) -> Iterator[None]:
        """Within this block, this thread's param writes for ``trial_id`` are committed with the
        trial's next :meth:`set_trial_user_attrs`; any still held when the block ends normally are
        committed then, in one transaction. A block left by an exception drops them: the trial's
        start failed, and its config with it.

        Args:
            trial_id: The storage's id of the trial being sampled.
        """
        held = _HeldParams(trial_id)
        with self._staged("params", held):
            yield
        if held.params:
            with _create_scoped_session(self.scoped_session, True) as session:
                self._write_held(session, held)

    def _held_for(self, trial_id: int) -> _HeldParams | None:
        held: _HeldParams | None = getattr(self._local, "params", None)
        return held if held is not None and held.trial_id == trial_id else None

    def _set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                         distribution: BaseDistribution, previous_distribution: BaseDistribution | None) -> None:
        # Optuna's _CachedStorage.set_trial_param writes through this method.
        held = self._held_for(trial_id)
        if held is None:
            super()._set_trial_param(trial_id, param_name, param_value_internal, distribution,
                                     previous_distribution)
            return
        held.params.append((param_name, param_value_internal, distribution, previous_distribution))

    def _write_held(self, session: Any, held: _HeldParams) -> None:
        """The held params, by Optuna's own per-param steps (the updatable and distribution checks)."""
        for name, value, distribution, previous in held.params:
            self._set_trial_param_without_commit(session, held.trial_id, name, value, distribution, previous)
        _logger.debug("trial %d: %d held params written", held.trial_id, len(held.params))

    @contextlib.contextmanager
    def _staged(self, name: str, value: object) -> Iterator[None]:
        """``value`` as this thread's ``name`` (``end``, ``start`` or ``params``) for the block."""
        setattr(self._local, name, value)
        try:
            yield
        finally:
            setattr(self._local, name, None)

    @property
    def _on_start(self) -> OnStart | None:
        return getattr(self._local, "start", None)

    @property
    def beats_at_start(self) -> bool:
        """Whether a trial's start writes its first heartbeat (heartbeats are on)."""
        return self.heartbeat_interval is not None

    def _get_prepared_new_trial(self, study_id: int, template_trial: optuna.trial.FrozenTrial | None,
                                session: Any) -> models.TrialModel:
        trial = super()._get_prepared_new_trial(study_id, template_trial, session)
        if trial.state == TrialState.RUNNING:  # asked, not enqueued or added
            self._started(trial.trial_id, session, new=True)  # type: ignore[arg-type]  # a mapped int column
        return trial

    def _started(self, trial_id: int, session: Any, *, new: bool) -> None:
        """What a trial's start writes besides Optuna's own rows, in the same transaction."""
        if self.beats_at_start and (new or models.TrialHeartbeatModel.where_trial_id(trial_id, session) is None):
            session.add(models.TrialHeartbeatModel(trial_id=trial_id))
        if self._on_start is not None:
            self._on_start(session.connection())

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        if state == TrialState.RUNNING and (self.beats_at_start or self._on_start is not None):
            return self._start_waiting_trial(trial_id)
        end: TrialEnd | None = getattr(self._local, "end", None)
        if end is None or end.trial_id != trial_id or not state.is_finished():
            return super().set_trial_state_values(trial_id, state, values)
        try:
            # Optuna's own steps (RDBStorage.set_trial_state_values) with the staged writes between.
            with _create_scoped_session(self.scoped_session) as session:
                trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
                self.check_trial_is_updatable(trial_id, trial.state)  # type: ignore[arg-type]  # as Optuna's
                self._upsert_user_attrs(session, trial_id, end.attrs)
                for objective, v in enumerate(values or ()):
                    self._set_trial_value_without_commit(session, trial, objective, v)
                trial.state = state
                trial.datetime_complete = datetime.datetime.now()
                if end.then is not None:
                    session.flush()
                    end.then(session.connection(), state, _user_attrs(session, trial_id))
        except sa_exc.IntegrityError:
            return False
        return True

    def _start_waiting_trial(self, trial_id: int) -> bool:
        """Optuna's WAITING -> RUNNING (how ``Study.ask`` takes an enqueued trial) with what a start writes."""
        try:
            with _create_scoped_session(self.scoped_session) as session:
                trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
                self.check_trial_is_updatable(trial_id, trial.state)  # type: ignore[arg-type]  # as Optuna's
                if trial.state != TrialState.WAITING:  # another worker took it first
                    return False
                trial.state = TrialState.RUNNING
                trial.datetime_start = datetime.datetime.now()
                self._started(trial_id, session, new=False)
        except sa_exc.IntegrityError:
            return False
        return True

    def set_trial_user_attrs(self, trial_id: int, attrs: Mapping[str, Any]) -> None:
        """Write several user attrs of a running trial in one transaction (Optuna's
        ``set_trial_user_attr`` commits one at a time), with its params held by :meth:`holding_params`."""
        held = self._held_for(trial_id)
        with _create_scoped_session(self.scoped_session, True) as session:
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
            self.check_trial_is_updatable(trial_id, trial.state)  # type: ignore[arg-type]  # as Optuna's
            if held is not None:
                self._write_held(session, held)
            self._upsert_user_attrs(session, trial_id, attrs)
        if held is not None:  # committed (a failed commit raised and keeps them held for a retry)
            held.params.clear()

    def _upsert_user_attrs(self, session: Any, trial_id: int, attrs: Mapping[str, Any]) -> None:
        """All ``attrs`` in one statement where the dialect has an upsert (the row lock is held)."""
        if not attrs:
            return
        table = models.TrialUserAttributeModel
        rows = [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()]
        insert: Any
        if self.engine.name == "postgresql":
            insert = sa_postgresql.insert(table)
        elif self.engine.name == "sqlite":
            insert = sa_sqlite.insert(table)
        else:  # MySQL and others: Optuna's own upsert, one attr at a time
            for key, value in attrs.items():
                self._set_trial_attr_without_commit(session, table, trial_id, key, value)
            return
        session.execute(insert.values(rows).on_conflict_do_update(
            index_elements=[table.trial_id, table.key], set_={"value_json": insert.excluded.value_json}))


def _user_attrs(session: Any, trial_id: int) -> dict[str, Any]:
    table = models.TrialUserAttributeModel
    rows = session.execute(sa.select(table.key, table.value_json).where(table.trial_id == trial_id))
    return {key: json.loads(value) for key, value in rows}


def ending_storage_of(study: optuna.Study) -> EndingStorage:
    """The :class:`EndingStorage` behind ``study`` (Optuna wraps it in its ``_CachedStorage``).

    Raises:
        StorageError: The study was loaded from another storage than :func:`sweep.storage.open_storage`'s.
    """
    storage = getattr(study._storage, "_backend", study._storage)
    if not isinstance(storage, EndingStorage):
        raise StorageError("a regsweep worker needs the storage sweep.storage.open_storage returns, "
                           f"received storage={type(storage).__name__}")
    return storage


def tell(study: optuna.Study, trial: optuna.Trial, value: float | None, state: TrialState) -> None:
    """``study.tell(trial, value, state=state, skip_if_finished=True)`` without its last step.

    ``Study.tell`` is Optuna's ``_tell_with_warning`` followed by a second read of the whole trial
    (params, attrs, values) only to return a copy of it, which a worker does not use: one read of
    six queries less per trial.

    Args:
        study: The trial's study.
        trial: The running trial.
        value: The objective value (None unless ``state`` is COMPLETE).
        state: COMPLETE, PRUNED or FAIL.
    """
    _tell_with_warning(study=study, trial=trial, value_or_values=value, state=state, skip_if_finished=True)
