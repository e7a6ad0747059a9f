"""Nightly sweeps: the cron schedule (:mod:`sweep.schedule.cron`) and closing a night at its deadline
(:mod:`sweep.schedule.night`: stale trials failed, slots given back, the report written)."""

from __future__ import annotations

from sweep.schedule.cron import Night, Schedule, Scheduler, parse_cron, parse_tz, parse_until
from sweep.schedule.night import NightCloser, fail_trial, heartbeat_ages
from sweep.schedule.runner import NightRunner

__all__ = [
    "Night",
    "NightCloser",
    "NightRunner",
    "Schedule",
    "Scheduler",
    "fail_trial",
    "heartbeat_ages",
    "parse_cron",
    "parse_tz",
    "parse_until",
]
