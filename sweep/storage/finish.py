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
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import TrialState
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql as sa_postgresql
from sqlalchemy.dialects import sqlite as sa_sqlite

from sweep.errors import StorageError

__all__ = ["EndingStorage", "TrialEnd", "ending_storage_of"]

#: ``then(connection, state, user attrs after the staged ones)``: runs in the ending transaction.
Then = Callable[[sa.engine.Connection, TrialState, Mapping[str, Any]], None]


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

    @contextlib.contextmanager
    def ending(self, end: TrialEnd) -> Iterator[None]:
        """Within this block, this thread's ending of ``end.trial_id`` also writes ``end``."""
        self._local.end = end
        try:
            yield
        finally:
            self._local.end = None

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
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

    def set_trial_user_attrs(self, trial_id: int, attrs: Mapping[str, Any]) -> None:
        """Write several user attrs of a running trial in one transaction (Optuna's
        ``set_trial_user_attr`` commits one at a time)."""
        with _create_scoped_session(self.scoped_session, True) as session:
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
            self.check_trial_is_updatable(trial_id, trial.state)  # type: ignore[arg-type]  # as Optuna's
            self._upsert_user_attrs(session, trial_id, attrs)

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
