"""The nightly schedule: cron + time zone firings, each with a hard morning deadline (``sweep schedule``).

Each firing creates (or continues) that night's study ``<study.name>-<YYYY-MM-DD>`` (local date
of the firing) whose ``budget.deadline`` is the next ``--until`` wall time after the firing, runs
``--workers N`` local workers (or leaves the work to ``sweep-worker --follow``), closes the night
at the deadline and writes the morning report. Cron matching and DST come from croniter and
zoneinfo; the clock and the sleep are injectable so tests drive whole weeks in milliseconds. What a
firing does, and the command, are :mod:`sweep.schedule.runner`.

DST: a firing inside the hour skipped in spring runs once, at the jump (``30 2 * * *`` in
Europe/Berlin fires at 03:00 CEST on 2026-03-29); in the hour repeated in autumn croniter yields
02:30 twice, the second maps to the night already fired and is ignored. An ``--until`` inside the
skipped hour means the first instant after the jump; inside the repeated hour, its first occurrence.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from sweep.errors import RegsweepError, SpecError

__all__ = [
    "Night",
    "Schedule",
    "Scheduler",
    "parse_cron",
    "parse_tz",
    "parse_until",
    "fmt_time",
    "utcnow",
]

_logger = logging.getLogger(__name__)
_UNTIL = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
#: A firing handled within this many seconds of its time is on time; later ones are logged late.
ON_TIME_S = 60.0
#: Longest single sleep: a suspended machine is noticed at most this long after it wakes.
MAX_SLEEP_S = 60.0
_SKIP_LOG_LIMIT = 5


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def parse_until(value: str) -> dt.time:
    """``HH:MM`` (or ``HH:MM:SS``) wall time, e.g. ``07:00``; raises :class:`SpecError` naming it."""
    m = _UNTIL.match(value.strip())
    if not m or int(m[1]) > 23 or int(m[2]) > 59 or int(m[3] or 0) > 59:
        raise SpecError(f"Invalid --until: expected a wall time HH:MM such as 07:00, received until={value!r}")
    return dt.time(int(m[1]), int(m[2]), int(m[3] or 0))


def parse_tz(value: str) -> ZoneInfo:
    """An IANA time zone such as ``Europe/Berlin``; raises :class:`SpecError` naming it."""
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise SpecError(
            f"Invalid --tz: expected an IANA time zone such as Europe/Berlin or UTC, received tz={value!r}"
        ) from None


def parse_cron(value: str) -> str:
    """A cron expression croniter accepts, e.g. ``0 22 * * *``; raises :class:`SpecError` naming it."""
    if not croniter.is_valid(value):
        raise SpecError(
            f"Invalid --cron: expected a cron expression such as '0 22 * * *' "
            f"(minute hour day-of-month month day-of-week), received cron={value!r}"
        )
    return value


def fmt_time(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M %Z")


def _log_missed(night: Night) -> None:
    _logger.warning("Missed firing %s (night %s): its window ended at %s; skipped, no backlog is run",
                    fmt_time(night.firing), night.study_name, fmt_time(night.deadline))


@dataclass(frozen=True)
class Night:
    """One firing of the schedule: its study, its hard deadline and how late it was fired."""

    firing: dt.datetime
    study_name: str
    deadline: dt.datetime
    late_s: float = 0.0


class Schedule:
    """When nights start (cron in ``tz``) and end (``until`` wall time).

    Args:
        cron: A cron expression croniter accepts, e.g. ``"0 22 * * *"``.
        until: The wall time each night ends at.
        tz: Time zone of both.
        prefix: Study name prefix (the spec's ``study.name``).
    """

    def __init__(self, cron: str, until: dt.time, tz: ZoneInfo, prefix: str) -> None:
        self.cron, self.until, self.tz, self.prefix = parse_cron(cron), until, tz, prefix

    @classmethod
    def parse(cls, cron: str, until: str, tz: str, prefix: str) -> Schedule:
        """Validate the three CLI values (each error names its flag and value)."""
        return cls(parse_cron(cron), parse_until(until), parse_tz(tz), prefix)

    # Aware datetimes sharing one tzinfo compare and subtract by wall time (ignoring DST), so
    # every instant leaves this class in UTC and only Night shows local times.
    def next_firing(self, after: dt.datetime) -> dt.datetime:
        """The first firing strictly after ``after`` (UTC)."""
        return croniter(self.cron, after.astimezone(self.tz)).get_next(dt.datetime).astimezone(dt.timezone.utc)

    def latest_firing(self, now: dt.datetime) -> dt.datetime:
        """The last firing at or before ``now`` (UTC; croniter's get_prev is strict: start 1 s later)."""
        start = now.astimezone(self.tz).replace(microsecond=0) + dt.timedelta(seconds=1)
        return croniter(self.cron, start).get_prev(dt.datetime).astimezone(dt.timezone.utc)

    def firings_between(self, start: dt.datetime, end: dt.datetime) -> Iterator[dt.datetime]:
        """Firings in ``(start, end)``, both exclusive (UTC)."""
        it = croniter(self.cron, start.astimezone(self.tz))
        while (t := it.get_next(dt.datetime).astimezone(dt.timezone.utc)) < end:
            yield t

    def _wall(self, day: dt.date) -> dt.datetime:
        naive = dt.datetime.combine(day, self.until)
        first = naive.replace(tzinfo=self.tz)  # fold=0: the first of a repeated hour
        if first.astimezone(dt.timezone.utc).astimezone(self.tz).replace(tzinfo=None) == naive:
            return first
        # ``until`` lies in the hour skipped in spring: take the first instant at or after it.
        t = naive.replace(tzinfo=self.tz, fold=1).astimezone(dt.timezone.utc)
        while t.astimezone(self.tz).replace(tzinfo=None) < naive:
            t += dt.timedelta(minutes=1)
        return t.astimezone(self.tz)

    def deadline_for(self, firing: dt.datetime) -> dt.datetime:
        """The next ``until`` wall time after ``firing``, in ``tz``."""
        local = firing.astimezone(self.tz)
        deadline = self._wall(local.date())
        if deadline.astimezone(dt.timezone.utc) <= firing.astimezone(dt.timezone.utc):
            deadline = self._wall(local.date() + dt.timedelta(days=1))
        return deadline

    def night(self, firing: dt.datetime, now: dt.datetime) -> Night:
        """The night a firing starts, as seen at ``now``."""
        local = firing.astimezone(self.tz)
        return Night(
            firing=local,
            study_name=f"{self.prefix}-{local.date().isoformat()}",
            deadline=self.deadline_for(local),
            late_s=max((now - firing).total_seconds(), 0.0),
        )


class Scheduler:
    """Fires nights on time, late (missed but inside the window) or not at all; never a backlog.

    Args:
        schedule: When nights start and end.
        fire: Runs one night; returns when it is closed (its report written).
        catch_up: Called for a missed night whose window is over; returns whether it had run
            (its study exists), so the log says "already ran" instead of "skipped".
        clock: Aware current time (UTC).
        sleep: Sleeps that many seconds (a fake one advances a fake clock).
        max_sleep_s: Longest single sleep, so a wake-up from suspend is noticed soon.
    """

    def __init__(
        self,
        schedule: Schedule,
        fire: Callable[[Night], None],
        *,
        catch_up: Callable[[Night], bool] = lambda night: False,
        clock: Callable[[], dt.datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
        max_sleep_s: float = MAX_SLEEP_S,
    ) -> None:
        self.schedule, self.fire, self.catch_up = schedule, fire, catch_up
        self.clock, self.sleep, self.max_sleep_s = clock, sleep, max_sleep_s
        self._last_firing: dt.datetime | None = None
        self._last_night: str | None = None

    def run(self, max_nights: int | None = None) -> int:
        """Loop until ``max_nights`` nights were fired (forever with None); returns nights fired."""
        fired = 0
        while max_nights is None or fired < max_nights:
            if self.step() is not None:
                fired += 1
                continue
            now = self.clock()
            wait = (self.schedule.next_firing(now) - now).total_seconds()
            self.sleep(min(max(wait, 0.001), self.max_sleep_s))
        return fired

    def step(self) -> Night | None:
        """Handle the latest due firing, if not handled yet; returns the night fired, if any."""
        now = self.clock()
        due = self.schedule.latest_firing(now)
        if self._last_firing is not None and due <= self._last_firing:
            return None
        night = self.schedule.night(due, now)
        if self._last_firing is not None:
            self._log_skipped(self._last_firing, due, night, now)
        if night.study_name == self._last_night:
            # A second firing of a night already fired (autumn's repeated hour, a frequent cron).
            self._last_firing = due
            return None
        if now >= night.deadline:
            try:
                ran = self.catch_up(night)
            except RegsweepError as error:  # closing a past night must not stop the next ones
                _logger.error("Could not check or close past night %s: %s", night.study_name, error)
                ran = True
            if ran:
                _logger.info("Night %s already ran (firing %s)", night.study_name, fmt_time(night.firing))
            else:
                _log_missed(night)
            self._last_firing = due
            return None
        if night.late_s > ON_TIME_S and self._last_firing is None:
            # The first look after starting: the night began before this scheduler ran. Nothing
            # was missed by it; joining an open window is what starting mid-night means.
            _logger.info("Night %s opened at %s, before this scheduler started; joining it %.1f min in "
                         "(the window ends at %s)", night.study_name, fmt_time(night.firing), night.late_s / 60,
                         fmt_time(night.deadline))
        elif night.late_s > ON_TIME_S:
            _logger.warning("Firing %s was missed (machine off or asleep?); firing now, %.1f min late; "
                            "the window still ends at %s", fmt_time(night.firing), night.late_s / 60,
                            fmt_time(night.deadline))
        _logger.info("Night %s: firing %s, deadline %s", night.study_name, fmt_time(night.firing),
                     fmt_time(night.deadline))
        try:
            self.fire(night)
        except SpecError as error:  # will not get better by retrying: log it and wait for the next night
            _logger.error("Night %s not run: %s", night.study_name, error)
        except RegsweepError as error:  # e.g. the database is down: retried on the next step
            _logger.error("Night %s failed, retrying within %.0fs: %s", night.study_name, self.max_sleep_s, error)
            return None
        self._last_firing, self._last_night = due, night.study_name
        return night

    def _log_skipped(self, last: dt.datetime, due: dt.datetime, night: Night, now: dt.datetime) -> None:
        skipped = []
        for firing in self.schedule.firings_between(last, due):
            other = self.schedule.night(firing, now)
            if other.study_name not in (self._last_night, night.study_name):
                skipped.append(other)
            if len(skipped) > 1000:
                break
        for other in skipped[-_SKIP_LOG_LIMIT:]:
            _log_missed(other)
        if len(skipped) > _SKIP_LOG_LIMIT:
            _logger.warning("... and %d earlier missed firing(s), also skipped", len(skipped) - _SKIP_LOG_LIMIT)
