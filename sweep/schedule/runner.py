"""What a nightly firing does (:class:`NightRunner`) and the ``sweep schedule`` command."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from sweep.envargs import env_number
from sweep.errors import SpecError
from sweep.schedule.cron import Night, Schedule, Scheduler, fmt_time, parse_cron, parse_tz, parse_until, utcnow
from sweep.schedule.night import NightCloser
from sweep.spec.model import SweepSpec
from sweep.storage.engine import GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S

__all__ = ["NightRunner", "cmd_schedule", "register_cli"]

_logger = logging.getLogger(__name__)


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
                 clock: Callable[[], dt.datetime] = utcnow, sleep: Callable[[float], None] = time.sleep) -> None:
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
    from sweep.spec.load import load_spec
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
    now = utcnow()
    current = schedule.night(schedule.latest_firing(now), now)
    upcoming = (f"night {current.study_name} is still open (until {fmt_time(current.deadline)})"
                if now < current.deadline
                else f"next firing {fmt_time(schedule.night(schedule.next_firing(now), now).firing)}")
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
