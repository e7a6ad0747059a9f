"""`sweep schedule` started in the middle of an open night, for real: it joins the night without a
"missed firing ... min late" warning (nothing was missed: the scheduler was not running)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from tests.helpers import run_cli, synthetic_spec


def test_first_start_inside_an_open_night_warns_nothing(pg_url: str, study_name: str, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    firing = now - dt.timedelta(minutes=92)  # the night opened 92 minutes before we start
    until = now + dt.timedelta(seconds=30)  # the CLI must start (imports) well before it
    spec = synthetic_spec(tmp_path, study_name, trials=2)
    result = run_cli("schedule", str(spec), "--cron", f"{firing.minute} {firing.hour} * * *",
                     "--until", until.strftime("%H:%M:%S"), "--tz", "UTC", "--once", "--workers", "0",
                     "--report-dir", str(tmp_path / "reports"), "--grace-period", "2", "--heartbeat-interval", "1",
                     "--storage", pg_url, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "is still open" in output, output[-2000:]
    assert "late" not in output and "missed" not in output.lower(), output[-2000:]
    assert not [line for line in output.splitlines() if " WARNING " in line], output[-2000:]
