"""``sweep schedule``: run a spec every night (cron + time zone) until a hard morning deadline.

Each firing creates (or continues) that night's study ``<study.name>-<YYYY-MM-DD>`` (local date
of the firing) whose ``budget.deadline`` is the next ``--until`` wall time after the firing, runs
``--workers N`` local workers (or leaves the work to ``sweep-worker --follow``), closes the night
at the deadline and writes the morning report. Cron matching and DST come from croniter and
zoneinfo; the clock and the sleep are injectable so tests drive whole weeks in milliseconds.

DST: a firing inside the hour skipped in spring runs once, at the jump (``30 2 * * *`` in
Europe/Berlin fires at 03:00 CEST on 2026-03-29); in the hour repeated in autumn croniter yields
02:30 twice, the second maps to the night already fired and is ignored. An ``--until`` inside the
skipped hour means the first instant after the jump; inside the repeated hour, its first occurrence.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from sweep.envargs import env_number
from sweep.errors import RegsweepError, SpecError
from sweep.schedule.night import NightCloser
from sweep.spec.model import SweepSpec
from sweep.storage.engine import GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S

__all__ = [
    "Night",
    "NightRunner",
    "Schedule",
    "Scheduler",
    "cmd_schedule",
    "parse_cron",
    "parse_tz",
    "parse_until",
    "register_cli",
]

_logger = logging.getLogger(__name__)
_UNTIL = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
#: A firing handled within this many seconds of its time is on time; later ones are logged late.
ON_TIME_S = 60.0
#: Longest single sleep: a suspended machine is noticed at most this long after it wakes.
MAX_SLEEP_S = 60.0
_SKIP_LOG_LIMIT = 5


def _utcnow() -> dt.datetime:
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


def _fmt(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M %Z")


def _log_missed(night: Night) -> None:
    _logger.warning("Missed firing %s (night %s): its window ended at %s; skipped, no backlog is run",
                    _fmt(night.firing), night.study_name, _fmt(night.deadline))


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
        clock: Callable[[], dt.datetime] = _utcnow,
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
                _logger.info("Night %s already ran (firing %s)", night.study_name, _fmt(night.firing))
            else:
                _log_missed(night)
            self._last_firing = due
            return None
        if night.late_s > ON_TIME_S and self._last_firing is None:
            # The first look after starting: the night began before this scheduler ran. Nothing
            # was missed by it; joining an open window is what starting mid-night means.
            _logger.info("Night %s opened at %s, before this scheduler started; joining it %.1f min in "
                         "(the window ends at %s)", night.study_name, _fmt(night.firing), night.late_s / 60,
                         _fmt(night.deadline))
        elif night.late_s > ON_TIME_S:
            _logger.warning("Firing %s was missed (machine off or asleep?); firing now, %.1f min late; "
                            "the window still ends at %s", _fmt(night.firing), night.late_s / 60, _fmt(night.deadline))
        _logger.info("Night %s: firing %s, deadline %s", night.study_name, _fmt(night.firing), _fmt(night.deadline))
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


class NightRunner:
    """What a firing does: create or continue the night's study, run local workers, close it.

    Args:
        spec: The scheduled spec (name and deadline are set per night).
        storage_url: Where the studies live.
        workers: Local worker processes per night; 0 leaves the work to ``sweep-worker --follow``.
        artifacts: Artifact directory passed to local workers.
        report_dir: Where ``<study>.html`` and ``<study>.md`` are written at the close.
        log_dir: Local workers log to ``LOG_DIR/<study>/worker-N.log``.
        heartbeat_interval: The workers' heartbeat interval (seconds).
        grace_period: Seconds without a heartbeat after which a trial is stale.
        clock: Aware current time; sleep: sleeps that many seconds (both injectable for tests).
    """

    def __init__(self, spec: SweepSpec, storage_url: str, *, workers: int = 0, artifacts: str | None = None,
                 report_dir: Path = Path("regsweep-reports"), log_dir: Path = Path("regsweep-logs"),
                 heartbeat_interval: int = HEARTBEAT_INTERVAL_S, grace_period: int = GRACE_PERIOD_S,
                 clock: Callable[[], dt.datetime] = _utcnow, sleep: Callable[[float], None] = time.sleep) -> None:
        self.spec, self.url, self.workers, self.artifacts = spec, storage_url, workers, artifacts
        self.log_dir = log_dir
        self.closer = NightCloser(storage_url, report_dir, heartbeat_interval=heartbeat_interval,
                                  grace_period=grace_period, clock=clock, sleep=sleep)

    def night_spec(self, night: Night) -> SweepSpec:
        """The spec of one night: dated study name, hard deadline (kept out of validation on purpose:
        only name and deadline change, both already checked)."""
        return self.spec.model_copy(update={
            "study": self.spec.study.model_copy(update={"name": night.study_name}),
            "budget": self.spec.budget.model_copy(update={"deadline": night.deadline}),
        })

    def fire(self, night: Night) -> None:
        """Create or continue the night's study, run the local workers, then close it at the end."""
        from sweep.launcher.local import run_local_workers
        from sweep.masking import mask_url
        from sweep.storage.engine import open_storage
        from sweep.study.sweeps import create_sweep

        sweep, created = create_sweep(self.night_spec(night), open_storage(self.url))
        _logger.info("%s study %r in %s", "Created" if created else "Continuing", sweep.name, mask_url(self.url))
        if self.workers > 0:
            env = {"SWEEP_HEARTBEAT_INTERVAL": str(self.closer.heartbeat_interval),
                   "SWEEP_GRACE_PERIOD": str(self.closer.grace_period)}
            if self.artifacts:
                env["SWEEP_ARTIFACTS"] = self.artifacts
            codes = run_local_workers(sweep, self.url, self.workers, extra_env=env,
                                      log_dir=self.log_dir / sweep.name)
            if any(codes):
                _logger.error("Night %s: worker exit codes %s", sweep.name, codes)
        self.closer.wait_and_close(sweep.name, night.deadline)

    def catch_up(self, night: Night) -> bool:
        """A missed night whose window is over: if it ran, make sure it is closed and reported."""
        return self.closer.close_if_exists(night.study_name)


# -- CLI -----------------------------------------------------------------------------------------
def cmd_schedule(args: argparse.Namespace) -> int:
    """Handler of ``sweep schedule``."""
    from rich.console import Console

    from sweep.masking import mask_url
    from sweep.spec.model import load_spec
    from sweep.storage.url import check_storage_url, resolve_storage_url

    # The flags first: a typo in --cron should not wait for the spec (or the database) to be read.
    cron, until, tz = parse_cron(args.cron), parse_until(args.until), parse_tz(args.tz)
    if args.local_workers < 0:
        raise SpecError(f"Invalid --workers: expected 0 or more, received workers={args.local_workers}")
    spec = load_spec(args.spec)
    if len(spec.study.name) > 89:  # the dated name must stay a valid study name (100 chars)
        raise SpecError(
            f"Invalid study.name: at most 89 characters for nightly studies, received name={spec.study.name!r}"
        )
    schedule = Schedule(cron, until, tz, spec.study.name)
    url = check_storage_url(resolve_storage_url(args.storage, spec.study.storage))
    artifacts = args.artifacts or os.environ.get("SWEEP_ARTIFACTS")
    report_dir = Path(args.report_dir or os.environ.get("SWEEP_REPORT_DIR")
                      or (Path(artifacts) / "reports" if artifacts else "regsweep-reports"))
    runner = NightRunner(spec, url, workers=args.local_workers, artifacts=artifacts, report_dir=report_dir,
                         log_dir=Path(args.log_dir),
                         heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period)
    scheduler = Scheduler(schedule, runner.fire, catch_up=runner.catch_up)
    now = _utcnow()
    current = schedule.night(schedule.latest_firing(now), now)
    upcoming = (f"night {current.study_name} is still open (until {_fmt(current.deadline)})" if now < current.deadline
                else f"next firing {_fmt(schedule.night(schedule.next_firing(now), now).firing)}")
    Console(stderr=True, highlight=False).print(
        f"Scheduling [bold]{spec.study.name}[/] in {mask_url(url)}: cron {args.cron!r} ({args.tz}), "
        f"nights end at {args.until}; {upcoming}; reports in {report_dir}/; "
        + (f"{args.local_workers} local worker(s)" if args.local_workers
           else f"workers: sweep-worker --follow {spec.study.name}")
    )
    scheduler.run(max_nights=1 if args.once else None)
    return 0


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sweep schedule`` to the ``sweep`` parser."""
    p = subparsers.add_parser("schedule", help="run a spec every night (cron, time zone) until a deadline")
    p.add_argument("spec", help="spec file (.toml); nightly studies are named <study.name>-YYYY-MM-DD")
    p.add_argument("--cron", required=True, help='when nights start, e.g. "0 22 * * *"')
    p.add_argument("--until", required=True, help="wall time nights end at (hard deadline), e.g. 07:00")
    p.add_argument("--tz", default="UTC", help="IANA time zone of --cron and --until (default UTC)")
    # dest is not "workers": sweep.cli requires a positive --workers, and 0 is meaningful here.
    p.add_argument("--workers", dest="local_workers", type=int, default=0,
                   help="local worker processes per night (default 0: workers run `sweep-worker --follow`)")
    p.add_argument("--artifacts", help="artifact directory for local workers (env SWEEP_ARTIFACTS)")
    p.add_argument("--report-dir", help="where each night's report goes (env SWEEP_REPORT_DIR; "
                                        "default ARTIFACTS/reports or ./regsweep-reports)")
    p.add_argument("--log-dir", default="regsweep-logs", help="local workers' logs (default regsweep-logs/)")
    p.add_argument(
        "--heartbeat-interval",
        **env_number("SWEEP_HEARTBEAT_INTERVAL", str(HEARTBEAT_INTERVAL_S)),
        help=f"workers' heartbeat interval in seconds (env SWEEP_HEARTBEAT_INTERVAL, default {HEARTBEAT_INTERVAL_S})",
    )
    p.add_argument(
        "--grace-period",
        **env_number("SWEEP_GRACE_PERIOD", str(GRACE_PERIOD_S)),
        help=f"seconds without heartbeat before a trial is stale (env SWEEP_GRACE_PERIOD, default {GRACE_PERIOD_S})",
    )
    p.add_argument("--once", action="store_true", help="run one night (the current or the next), then exit")
    p.add_argument("--storage", help="storage URL (default: SWEEP_STORAGE, OPTUNA_STORAGE, spec, sqlite:///regsweep.db)")
    p.set_defaults(handler=cmd_schedule)
