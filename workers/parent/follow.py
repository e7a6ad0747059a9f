"""``sweep-worker --follow PREFIX``: find the study a long-running worker should work on now.

Nightly studies are created by ``sweep schedule`` as ``PREFIX-YYYY-MM-DD`` with a deadline.
A following worker takes the newest such study that is still open (deadline in the future and
budget not spent), works it to the end, then waits for the next night's.
"""

from __future__ import annotations

import datetime as dt
import logging

import optuna

from sweep.storage.engine import db_call, engine_of
from sweep.study.budget import budget_state

__all__ = ["next_open_study"]

_logger = logging.getLogger(__name__)


def next_open_study(storage: optuna.storages.BaseStorage, prefix: str, now: dt.datetime | None = None) -> str | None:
    """Name of the newest open study called ``PREFIX-*``, or None.

    Args:
        storage: Opened storage.
        prefix: Study name prefix (the spec's ``study.name``).
        now: Current time (aware); default now.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    summaries = db_call(lambda: optuna.get_all_study_summaries(storage, include_best_trial=False),
                        what="list studies")
    candidates = sorted(
        (s for s in summaries if s.study_name.startswith(f"{prefix}-")),
        key=lambda s: s.datetime_start or dt.datetime.min,
        reverse=True,
    )
    for summary in candidates:
        budget = summary.user_attrs.get("budget") or {}
        if "spec" not in summary.user_attrs:
            continue
        deadline = budget.get("deadline")
        if deadline and dt.datetime.fromisoformat(deadline) <= now:
            continue
        state = budget_state(engine_of(storage), summary.study_name)
        if state is not None and state.left == 0:
            continue
        _logger.info("Following study %r", summary.study_name)
        return summary.study_name
    return None
