"""``sweep schedule``: cron + time zone firings driven by a fake clock, DST, missed firings, bad flags,
and one real night end to end (real Postgres, real local workers, report at the close)."""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import optuna
import pytest
from optuna.trial import TrialState

from sweep.cli import main as sweep_main
from sweep.errors import SpecError, StorageError
from sweep.schedule.cron import Night, Schedule, Scheduler
from tests.helpers import run_cli, synthetic_spec

UTC = dt.timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")


class FakeClock:
    """Aware UTC time that only moves when someone sleeps (or a test jumps it)."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> dt.datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += dt.timedelta(seconds=seconds)


def _run(cron: str, start: dt.datetime, nights: int, *, until: str = "07:00", tz: str = "Europe/Berlin",
         night_length: Callable[[Night], dt.datetime] | None = None,
         sleep: Callable[[FakeClock, float], None] | None = None,
         catch_up: Callable[[Night], bool] = lambda n: False) -> tuple[list[tuple[Night, dt.datetime]], FakeClock]:
    """Run a scheduler on a fake clock; each fired night 'runs' until its deadline (or ``night_length``)."""
    clock = FakeClock(start)
    fired: list[tuple[Night, dt.datetime]] = []

    def fire(night: Night) -> None:
        fired.append((night, clock.now))
        clock.now = night_length(night) if night_length else night.deadline + dt.timedelta(seconds=70)

    scheduler = Scheduler(Schedule.parse(cron, until, tz, "nightly"), fire, catch_up=catch_up, clock=clock,
                          sleep=(lambda s: sleep(clock, s)) if sleep else clock.sleep)
    assert scheduler.run(max_nights=nights) == nights
    return fired, clock


def _utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def test_fires_at_local_time_across_autumn_dst_change() -> None:
    fired, clock = _run("0 22 * * *", _utc(2026, 10, 23, 12), nights=4)
    nights = [n for n, _ in fired]
    # 22:00 local every day: 20:00 UTC in summer time, 21:00 UTC after the 2026-10-25 change.
    assert [n.firing.astimezone(UTC) for n in nights] == [
        _utc(2026, 10, 23, 20), _utc(2026, 10, 24, 20), _utc(2026, 10, 25, 21), _utc(2026, 10, 26, 21)]
    assert [at for _, at in fired] == [n.firing for n in nights]  # fired on time, not a tick later
    assert all(n.late_s == 0 for n in nights)
    assert [n.study_name for n in nights] == [f"nightly-2026-10-{d}" for d in (23, 24, 25, 26)]
    for n in nights:
        local = n.deadline.astimezone(BERLIN)
        assert (local.date(), local.time()) == (n.firing.date() + dt.timedelta(days=1), dt.time(7, 0))
    # The night spanning the change is an hour longer.
    assert [(n.deadline.astimezone(UTC) - n.firing.astimezone(UTC)) / dt.timedelta(hours=1) for n in nights] == [
        9,
        10,
        9,
        9,
    ]
    assert max(clock.sleeps) <= 60  # sleeps in short chunks, so a wake-up from suspend is noticed


def test_spring_forward_firing_in_skipped_hour_runs_once_at_the_jump() -> None:
    fired, _ = _run("30 2 * * *", _utc(2026, 3, 27, 12), nights=3)
    nights = [n for n, _ in fired]
    assert [n.study_name for n in nights] == [f"nightly-2026-03-{d}" for d in (28, 29, 30)]
    # 02:30 does not exist on 2026-03-29 (02:00 CET -> 03:00 CEST): it fires at the jump, 03:00 CEST.
    assert [n.firing.astimezone(UTC) for n in nights] == [
        _utc(2026, 3, 28, 1, 30), _utc(2026, 3, 29, 1, 0), _utc(2026, 3, 30, 0, 30)]
    assert nights[1].firing.astimezone(BERLIN).strftime("%H:%M %Z") == "03:00 CEST"
    assert [n.deadline.astimezone(BERLIN).strftime("%d %H:%M") for n in nights] == ["28 07:00", "29 07:00", "30 07:00"]


def test_until_in_skipped_hour_is_the_first_instant_after_the_jump() -> None:
    schedule = Schedule.parse("0 1 * * *", "02:30", "Europe/Berlin", "nightly")
    deadline = schedule.deadline_for(dt.datetime(2026, 3, 29, 1, 0, tzinfo=BERLIN))
    assert deadline.astimezone(UTC) == _utc(2026, 3, 29, 1, 0)  # 03:00 CEST, not 03:30
    assert deadline.astimezone(BERLIN).strftime("%H:%M %Z") == "03:00 CEST"


def test_autumn_repeated_hour_fires_the_night_once() -> None:
    # croniter yields 02:30 twice on 2026-10-25; a short night ends before the second one.
    fired, _ = _run("30 2 * * *", _utc(2026, 10, 24, 12), nights=2,
                    night_length=lambda n: n.firing + dt.timedelta(minutes=10))
    nights = [n for n, _ in fired]
    assert [n.study_name for n in nights] == ["nightly-2026-10-25", "nightly-2026-10-26"]
    assert nights[0].firing.astimezone(UTC) == _utc(2026, 10, 25, 0, 30)  # the first 02:30 (CEST)


def test_missed_firing_inside_window_fires_at_once_late(caplog: pytest.LogCaptureFixture) -> None:
    start = dt.datetime(2026, 10, 24, 1, 30, tzinfo=BERLIN)  # started 3.5 h after the 22:00 firing
    with caplog.at_level(logging.INFO, logger="sweep.schedule"):
        fired, _ = _run("0 22 * * *", start.astimezone(UTC), nights=1)
    night, at = fired[0]
    assert at == start  # at once, no sleep first
    assert night.study_name == "nightly-2026-10-23"
    assert night.late_s == pytest.approx(3.5 * 3600)
    assert night.deadline == dt.datetime(2026, 10, 24, 7, 0, tzinfo=BERLIN)
    # A first start inside an open window joins it; nothing was missed (no warning: issue 13 item 11).
    assert any("before this scheduler started" in r.message and "210.0 min in" in r.message for r in caplog.records)
    assert not [r.message for r in caplog.records if r.levelno >= logging.WARNING]


def test_missed_firing_after_its_window_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    start = dt.datetime(2026, 10, 24, 8, 0, tzinfo=BERLIN)  # the 23rd's window ended at 07:00
    asked: list[str] = []
    with caplog.at_level(logging.WARNING, logger="sweep.schedule"):
        fired, _ = _run("0 22 * * *", start.astimezone(UTC), nights=1,
                        catch_up=lambda n: asked.append(n.study_name) is not None)
    assert asked == ["nightly-2026-10-23"]
    assert [(n.study_name, n.late_s) for n, _ in fired] == [("nightly-2026-10-24", 0.0)]
    assert [r.message for r in caplog.records] == [
        ("Missed firing 2026-10-23 22:00 CEST (night nightly-2026-10-23): its window ended at 2026-10-24 07:00 CEST; "
        "skipped, no backlog is run")]


def test_wake_from_suspend_fires_latest_night_only(caplog: pytest.LogCaptureFixture) -> None:
    wake = dt.datetime(2026, 10, 28, 2, 0, tzinfo=BERLIN)
    suspended = []

    def sleep(clock: FakeClock, seconds: float) -> None:
        if clock.now > _utc(2026, 10, 25, 12) and not suspended:  # the lid closes after the first night
            suspended.append(clock.now)
            clock.now = wake.astimezone(UTC)
        else:
            clock.sleep(seconds)

    with caplog.at_level(logging.WARNING, logger="sweep.schedule"):
        fired, _ = _run("0 22 * * *", _utc(2026, 10, 24, 12), nights=2, sleep=sleep)
    nights = [n for n, _ in fired]
    assert [n.study_name for n in nights] == ["nightly-2026-10-24", "nightly-2026-10-27"]  # no backlog
    assert fired[1][1] == wake and nights[1].late_s == pytest.approx(4 * 3600)
    skipped = [re.search(r"\(night (\S+)\)", r.message)[1] for r in caplog.records if "Missed firing" in r.message]
    assert skipped == ["nightly-2026-10-23", "nightly-2026-10-25", "nightly-2026-10-26"]  # 23rd: before start


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--cron", "0 25 * * *", ("Invalid --cron: expected a cron expression such as '0 22 * * *' (minute hour "
                                 "day-of-month month day-of-week), received cron='0 25 * * *'")),
        ("--cron", "every night", "received cron='every night'"),
        ("--tz", "Europe/Berlinn", ("Invalid --tz: expected an IANA time zone such as Europe/Berlin or UTC, "
                                   "received tz='Europe/Berlinn'")),
        ("--until", "7am", "Invalid --until: expected a wall time HH:MM such as 07:00, received until='7am'"),
        ("--until", "24:00", "received until='24:00'"),
    ],
)
def test_bad_flags_give_clear_errors(flag: str, value: str, message: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    args = {"--cron": "0 22 * * *", "--tz": "Europe/Berlin", "--until": "07:00", flag: value}
    spec = synthetic_spec(tmp_path, "nightly")
    code = sweep_main(["schedule", str(spec), *[x for kv in args.items() for x in kv]])
    assert code == 2
    assert message in capsys.readouterr().err
    with pytest.raises(SpecError, match="received"):
        Schedule.parse(args["--cron"], args["--until"], args["--tz"], "nightly")


def test_one_real_night_closes_and_writes_the_report(pg_url: str, study_name: str, tmp_path: Path) -> None:
    """--once with a firing this minute: the study gets the dated name and the deadline, two local
    workers run until it, nothing is left RUNNING and the report is written at the close."""
    now = dt.datetime.now(UTC)
    firing = now.replace(second=0, microsecond=0)
    until = now + dt.timedelta(seconds=14)
    spec = synthetic_spec(tmp_path, study_name, trials=1000, epochs=3, epoch_seconds=0.4)
    reports = tmp_path / "reports"
    result = run_cli("schedule", str(spec), "--cron", f"{firing.minute} {firing.hour} * * *",
                     "--until", until.strftime("%H:%M:%S"), "--tz", "UTC", "--workers", "2", "--once",
                     "--report-dir", str(reports), "--log-dir", str(tmp_path / "logs"),
                     "--grace-period", "2", "--heartbeat-interval", "1", "--storage", pg_url, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    name = f"{study_name}-{firing.date().isoformat()}"
    study = optuna.load_study(study_name=name, storage=pg_url)
    deadline = dt.datetime.fromisoformat(study.user_attrs["budget"]["deadline"])
    assert deadline == until.replace(microsecond=0)
    trials = study.get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) >= 2
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    local_deadline = deadline.astimezone().replace(tzinfo=None)  # Optuna stores naive local times
    assert all(t.datetime_complete <= local_deadline for t in trials if t.state == TrialState.COMPLETE)
    html = (reports / f"{name}.html").read_text()
    assert f"Regularization sweep {name}" in html and 'id="leaderboard"' in html
    assert f"# Regularization sweep `{name}`" in (reports / f"{name}.md").read_text()
    assert sorted(p.name for p in (tmp_path / "logs" / name).iterdir()) == ["worker-0.log", "worker-1.log"]


def test_storage_errors_retry_the_night_and_never_stop_the_scheduler(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(dt.datetime(2026, 10, 24, 8, 0, tzinfo=BERLIN).astimezone(UTC))
    attempts: list[dt.datetime] = []

    def catch_up(night: Night) -> bool:
        raise StorageError("Storage error while trying to list studies: connection refused")

    def fire(night: Night) -> None:
        attempts.append(clock.now)
        if len(attempts) == 1:  # the database is down at the firing
            raise StorageError("Storage error while trying to create study: connection refused")
        clock.now = night.deadline + dt.timedelta(seconds=70)

    scheduler = Scheduler(Schedule.parse("0 22 * * *", "07:00", "Europe/Berlin", "nightly"), fire,
                          catch_up=catch_up, clock=clock, sleep=clock.sleep)
    with caplog.at_level(logging.ERROR, logger="sweep.schedule"):
        assert scheduler.run(max_nights=1) == 1
    firing = dt.datetime(2026, 10, 24, 22, 0, tzinfo=BERLIN)
    assert attempts[0] == firing and 0 < (attempts[1] - firing).total_seconds() <= 60  # retried within a minute
    assert [r.message.split(":")[0] for r in caplog.records] == [
        "Could not check or close past night nightly-2026-10-23",
        "Night nightly-2026-10-24 failed, retrying within 60s",
    ]
