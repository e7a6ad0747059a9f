"""The project's own tables beside Optuna's, in one ``MetaData``, created on first use.

* ``regsweep_budget``: one row per study, the budget's one home (``total`` allowed, ``claimed``,
  ``settled``: in flight = claimed - settled), used by :mod:`sweep.study.budget`;
* ``regsweep_phase``: one row per study once its finalist phase is open (the flip is the
  insert: exactly one worker wins it), used by :mod:`sweep.study.finalists`.

:data:`TRIAL_HEARTBEATS` is Optuna's own table, declared here only to be read (never created).
"""

from __future__ import annotations

import sqlalchemy as sa

from sweep.storage.engine import db_call

__all__ = ["BUDGET", "METADATA", "PHASE", "TRIAL_HEARTBEATS", "ensure_tables"]

METADATA = sa.MetaData()

BUDGET = sa.Table(
    "regsweep_budget",
    METADATA,
    sa.Column("study_name", sa.String(512), primary_key=True),
    sa.Column("total", sa.Integer, nullable=False),
    sa.Column("claimed", sa.Integer, nullable=False, default=0),
    # Slots whose trial finished and counts. claimed - settled = trials in flight (a worker claims
    # in the transaction that creates its trial and settles in the one that ends it).
    sa.Column("settled", sa.Integer, nullable=False, default=0),
)

PHASE = sa.Table(
    "regsweep_phase",
    METADATA,
    sa.Column("study_name", sa.String(512), primary_key=True),
    sa.Column("phase", sa.String(32), nullable=False),
)

#: Optuna's heartbeat table (RDBStorage with heartbeats), read by the night closer.
TRIAL_HEARTBEATS = sa.table("trial_heartbeats", sa.column("trial_id", sa.Integer), sa.column("heartbeat", sa.DateTime))

_ready: set[int] = set()


def ensure_tables(engine: sa.engine.Engine) -> None:
    """Create the project's tables if missing: once per engine, since budget claims are on the hot path.

    Args:
        engine: The storage's engine.
    """
    if id(engine) not in _ready:
        db_call(lambda: METADATA.create_all(engine, checkfirst=True), what="create the regsweep tables")
        _ready.add(id(engine))
