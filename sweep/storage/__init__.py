"""Storage: where studies live and the one way regsweep's code talks to the database.

* :mod:`sweep.storage.url`: the storage URL (precedence, validation, existing databases only);
* :mod:`sweep.storage.engine`: opening Optuna's RDB storage, :func:`db_call` (retries, clean errors),
  the pool and the heartbeat/grace-period defaults (their one home);
* :mod:`sweep.storage.finish`: a trial's end (last attrs, tell, budget slot) in one transaction;
* :mod:`sweep.storage.retry`: the one retry policy for storage faults (``db_call``'s, and
  ``sweep-worker``'s wait through a longer outage).

Secret masking lives in :mod:`sweep.masking` (logging needs it without SQLAlchemy).
"""

from __future__ import annotations

from sweep.masking import mask_secrets, mask_url
from sweep.storage.engine import (
    GRACE_PERIOD_S,
    HEARTBEAT_INTERVAL_S,
    POOL_SIZE,
    StorageConfig,
    db_call,
    engine_of,
    open_storage,
)
from sweep.storage.finish import EndingStorage, TrialEnd
from sweep.storage.retry import DB_CALL, RetryPolicy, worker_outage
from sweep.storage.url import (
    DEFAULT_STORAGE,
    check_storage_url,
    hide_password_from_ps,
    require_existing,
    resolve_storage_url,
)

__all__ = [
    "DB_CALL",
    "DEFAULT_STORAGE",
    "EndingStorage",
    "GRACE_PERIOD_S",
    "HEARTBEAT_INTERVAL_S",
    "POOL_SIZE",
    "RetryPolicy",
    "StorageConfig",
    "TrialEnd",
    "check_storage_url",
    "db_call",
    "engine_of",
    "hide_password_from_ps",
    "mask_secrets",
    "mask_url",
    "open_storage",
    "require_existing",
    "resolve_storage_url",
    "worker_outage",
]
