"""The connection to the study database: opening the storage and the one database-call helper.

The calls regsweep's own code makes to the study database (create, budget claims, status,
report reads, the worker loop's asks and tells) are wrapped in :func:`db_call`, which retries
transient faults (a restarted or briefly unreachable server) as the one retry policy says
(:mod:`sweep.storage.retry`: jittered exponential backoff) and turns
driver errors into :class:`~sweep.errors.StorageError` whose message never carries a password.
Queries Optuna makes on its own inside those calls are retried as part of them; queries made
outside any regsweep call (optuna-dashboard's HTTP handlers) are not wrapped and rely on
``pool_pre_ping`` (a dead pooled connection is replaced before use). The worker, whose queries
are all wrapped (its heartbeat thread retries at the next beat), goes without the ping
(:attr:`StorageConfig.ping_before_use`).

The heartbeat and grace-period defaults live here once (:data:`HEARTBEAT_INTERVAL_S`,
:data:`GRACE_PERIOD_S`); the worker, ``sweep run`` and ``sweep schedule`` read them from here.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

import optuna
import sqlalchemy
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from sweep.errors import SpecError, StorageError
from sweep.masking import mask_secrets, mask_url
from sweep.storage.finish import EndingStorage
from sweep.storage.retry import DB_CALL, RetryPolicy
from sweep.storage.url import check_storage_url

__all__ = ["POOL_SIZE", "HEARTBEAT_INTERVAL_S", "GRACE_PERIOD_S", "StorageConfig", "open_storage", "db_call",
           "engine_of"]

_logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Connections one worker process may hold: the trial loop and the heartbeat thread.
#: 16 workers therefore stay under 32 connections (checked against pg_stat_activity in tests).
POOL_SIZE = 2

#: Defaults of a worker's heartbeat (``--heartbeat-interval``) and of the seconds without one after
#: which its trial is stale (``--grace-period``); ``sweep schedule`` closes a night with the same.
HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 60



def _default_driver(url: str) -> str:
    """``postgresql://`` means psycopg2, the driver regsweep installs.

    SQLAlchemy 2.1 made psycopg 3 the default for a bare ``postgresql://``; without it installed
    the URL form the README shows failed with an ImportError traceback.
    """
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return url


class StorageConfig:
    """How a process connects: heartbeat and pool settings.

    Args:
        heartbeat_interval: Seconds between heartbeats of a running trial (None disables them).
        grace_period: Seconds without a heartbeat after which a RUNNING trial is stale.
        pool_size: Connections kept per process (Postgres/MySQL only).
        connect_timeout: Seconds to wait for a connection before the attempt fails.
        open_attempts: Tries to open the storage: workers wait out a database that is still
            starting; interactive commands should fail fast.
        ping_before_use: Test each pooled connection with a round trip before use (SQLAlchemy's
            ``pool_pre_ping``), so a connection a restarted server dropped is replaced unseen. A
            process whose every query goes through :func:`db_call` (the worker) turns it off: such
            a connection then fails its query, SQLAlchemy discards the whole pool on that
            disconnect, and ``db_call`` retries on a fresh connection. The ping was a round trip
            on each of a trial's ~16 checkouts, measured 5-15 ms of a trivial trial's 70 ms.
    """

    def __init__(
        self,
        heartbeat_interval: int | None = None,
        grace_period: int | None = None,
        pool_size: int = POOL_SIZE,
        connect_timeout: int = 10,
        open_attempts: int = 8,
        ping_before_use: bool = True,
    ) -> None:
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.open_attempts = open_attempts
        self.ping_before_use = ping_before_use

    @classmethod
    def for_worker(cls, heartbeat_interval: int = HEARTBEAT_INTERVAL_S,
                   grace_period: int = GRACE_PERIOD_S) -> StorageConfig:
        """A worker's connection: heartbeats on, and no ping per checkout (every query it makes is
        retried by :func:`db_call`; its heartbeat thread retries at the next beat).

        Args:
            heartbeat_interval: Seconds between heartbeats of a running trial.
            grace_period: Seconds without a heartbeat after which a RUNNING trial is stale.
        """
        return cls(heartbeat_interval=heartbeat_interval, grace_period=grace_period, ping_before_use=False)


def _engine_kwargs(url: str, config: StorageConfig) -> dict[str, Any]:
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        # Several local worker processes share one file: wait for the lock instead of failing.
        return {"connect_args": {"timeout": 60}}
    kwargs: dict[str, Any] = {
        "pool_size": config.pool_size,
        "max_overflow": 0,
        # A restarted server leaves dead connections in the pool: test each before use, unless
        # every query is retried (see StorageConfig.ping_before_use).
        "pool_pre_ping": config.ping_before_use,
        "pool_recycle": 1800,
        "pool_timeout": 60,
    }
    if backend == "postgresql":
        kwargs["connect_args"] = {
            "connect_timeout": config.connect_timeout,
            "application_name": "regsweep",
        }
    return kwargs


def open_storage(
    url: str,
    config: StorageConfig | None = None,
    *,
    stale_trial_callback: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
) -> optuna.storages.RDBStorage:
    """Open (and if needed initialise) the Optuna RDB storage at ``url``.

    Args:
        url: Storage URL (see :func:`resolve_storage_url`).
        config: Heartbeat and pool settings; defaults suit the CLI (no heartbeat).
        stale_trial_callback: What ``optuna.storages.fail_stale_trials`` does with each trial this
            process fails as stale (Optuna's ``heartbeat_stale_trial_callback``); needs a heartbeat.
            Workers pass :class:`sweep.study.budget.ReleaseSlotAndRetry` (slot back, copy re-queued),
            the night closer ``ReleaseSlotAndRetry(max_retry=0)``; None: the trial is only failed.

    Returns:
        An ``optuna.storages.RDBStorage``.

    Raises:
        SpecError: The URL is malformed.
        StorageError: The database cannot be reached (after retries).
    """
    url = _default_driver(check_storage_url(url))
    config = config or StorageConfig()

    def _open() -> EndingStorage:
        # RDBStorage plus one-transaction trial ends (sweep.storage.finish).
        storage = EndingStorage(
            url,
            engine_kwargs=_engine_kwargs(url, config),
            heartbeat_interval=config.heartbeat_interval,
            grace_period=config.grace_period,
            heartbeat_stale_trial_callback=stale_trial_callback,
            # Optuna's own check holds a transaction open while it takes a second connection for
            # alembic: behind a transaction pooler, processes starting together each held one
            # server connection and waited for another until the pool was exhausted (64 workers,
            # pool 10: deadlocked until PgBouncer's query_wait_timeout). Checked below, one
            # connection at a time.
            skip_compatibility_check=True,
        )
        _check_schema_version(storage)
        if make_url(url).get_backend_name() == "sqlite":
            _serialize_sqlite_transactions(storage.engine)
        return storage

    try:
        return db_call(_open, what=f"open storage {mask_url(url)}", attempts=config.open_attempts)
    except ImportError as error:  # the URL names a driver that is not installed
        raise SpecError(
            f"Invalid storage: the database driver for {make_url(url).drivername!r} is not installed "
            f"({error.__cause__ or error}), received storage={mask_url(url)!r}"
        ) from None


def _serialize_sqlite_transactions(engine: sqlalchemy.engine.Engine) -> None:
    """Make every transaction on an SQLite file start with ``BEGIN IMMEDIATE``.

    Python's sqlite3 driver opens a transaction only at the first write, so a read-then-write
    transaction is not atomic across processes: two workers asking at the same moment both read
    the same WAITING trial, both marked it RUNNING and trained it twice (seen with three local
    workers on the embedded default). With ``BEGIN IMMEDIATE`` the second waits for the first
    (the driver's 60 s lock timeout) and then reads the trial as taken. SQLAlchemy's recipe for
    pysqlite; connections opened before it are dropped.
    """

    @sqlalchemy.event.listens_for(engine, "connect")
    def _driver_leaves_transactions_to_us(dbapi_connection: Any, connection_record: Any) -> None:
        dbapi_connection.isolation_level = None

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin_immediate(connection: sqlalchemy.engine.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()


def _check_schema_version(storage: optuna.storages.RDBStorage) -> None:
    """Optuna's schema compatibility check, without holding two connections at once."""
    if storage.get_current_version() != storage.get_head_version():
        # Incompatible (rare): Optuna's own check raises its message naming the fix.
        storage._version_manager.check_table_schema_compatibility()


#: Connection refusals by a running server that retrying cannot fix (wrong database, role, password).
_PERMANENT = re.compile(
    r"FATAL:\s+(database \".*\" does not exist|role \".*\" does not exist|password authentication failed"
    # PgBouncer's words for a wrong password (SCRAM) or a role missing from its auth file.
    r"|no pg_hba\.conf entry|SASL authentication failed|no such user)"
)


def _is_transient(error: BaseException) -> bool:
    """Faults worth retrying: lost or refused connections, and races on table creation."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, sa_exc.OperationalError) and _PERMANENT.search(str(seen)):
            return False  # the server answered: no retry will make the database or role exist
        if isinstance(seen, (sa_exc.OperationalError, sa_exc.DisconnectionError, sa_exc.InterfaceError)):
            return True
        if isinstance(seen, sa_exc.DBAPIError) and seen.connection_invalidated:
            return True
        # Concurrent first-time table creation on Postgres collides on pg_type (optuna#1092).
        if isinstance(seen, (sa_exc.IntegrityError, sa_exc.ProgrammingError)) and (
            "pg_type_typname_nsp_index" in str(seen) or "already exists" in str(seen)
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _driver_message(error: BaseException) -> str:
    """The database driver's own words for ``error``, found down its cause chain.

    Optuna wraps driver errors in a StorageInternalError whose text blames "invalid data in the
    commit, e.g. exceeding max length" even when the server merely went away.
    """
    seen: BaseException | None = error
    while seen is not None:
        orig = getattr(seen, "orig", None)
        if orig is not None:
            return str(orig)
        seen = seen.__cause__ or seen.__context__
    return str(error)


def db_call(
    fn: Callable[[], T],
    *,
    what: str,
    attempts: int | None = None,
    policy: RetryPolicy = DB_CALL,
) -> T:
    """Run one database operation, retrying transient faults as :mod:`sweep.storage.retry` says.

    Args:
        fn: The operation (a closure over storage or study calls).
        what: A short description for messages, e.g. ``"ask trial"``. Must not contain secrets.
        attempts: Tries before giving up, instead of the policy's (8 for :data:`~sweep.storage.retry.DB_CALL`).
        policy: The retry policy: jittered exponential backoff from 0.5 s up to 15 s by default.

    Returns:
        Whatever ``fn`` returns.

    Raises:
        StorageError: A non-transient driver error, or transient faults outlasting the policy.
    """
    if attempts is not None:
        policy = dataclasses.replace(policy, attempts=attempts)
    for attempt in itertools.count(1):
        try:
            return fn()
        except (sa_exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as error:
            detail = mask_secrets(_driver_message(error)).strip().splitlines()
            first_line = detail[0] if detail else type(error).__name__
            delay = policy.next_delay(attempt) if _is_transient(error) else None
            if delay is None:
                raise StorageError(f"Storage error while trying to {what}: {first_line}") from None
            _logger.warning(
                "Storage fault while trying to %s (attempt %d/%s): %s; retrying in %.1fs",
                what, attempt, policy.attempts or "-", first_line, delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def engine_of(storage: optuna.storages.BaseStorage) -> sqlalchemy.engine.Engine:
    """The SQLAlchemy engine behind an RDB storage (also through Optuna's cache wrapper)."""
    inner = getattr(storage, "_backend", storage)
    engine = getattr(inner, "engine", None)
    if engine is None:
        raise StorageError("regsweep needs an RDB storage (PostgreSQL, MySQL or SQLite)")
    return engine
