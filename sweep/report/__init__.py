"""Reading a study: ``sweep status``/``best``/``export``, the HTML and markdown report, the dashboard.

* :mod:`sweep.report.leaderboard`: the leaderboard's rows (one pure function over the one ranking);
* :mod:`sweep.report.summary`: status, the ``sweep best`` leaderboard and CSV export;
* :mod:`sweep.report.data`: one read of the study flattened into rows for tables and figures;
* :mod:`sweep.report.figures`, :mod:`sweep.report.diagfigures` (styled by :mod:`sweep.report.figstyle`),
  :mod:`sweep.report.html`, :mod:`sweep.report.write`: the report files;
* :mod:`sweep.report.tutorial`: the tutorial's published numbers beside ours;
* :mod:`sweep.report.dashboard`: ``sweep dashboard`` (optuna-dashboard with the artifact store).
"""

from __future__ import annotations

from sweep.report.data import ReportData, TrialRow, collect
from sweep.report.leaderboard import LeaderboardRow, leaderboard_rows
from sweep.report.summary import SweepStatus, export_csv, leaderboard, pruned_count, sweep_status
from sweep.report.write import render_markdown, write_report

__all__ = [
    "LeaderboardRow",
    "ReportData",
    "SweepStatus",
    "TrialRow",
    "collect",
    "export_csv",
    "leaderboard",
    "leaderboard_rows",
    "pruned_count",
    "render_markdown",
    "sweep_status",
    "write_report",
]
