"""The commands that read a study: ``sweep status``, ``sweep best`` and ``sweep export``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich import box
from rich.table import Table

from sweep.cli.common import load_study, out, out_file
from sweep.penalties.kinds import PLACEMENTS

__all__ = ["cmd_best", "cmd_export", "cmd_status", "print_leaderboard"]


def cmd_status(args: argparse.Namespace) -> int:
    from sweep.report.summary import sweep_status
    from sweep.study.sweeps import UNLIMITED

    sweep = load_study(args)
    s = sweep_status(sweep)
    if args.json:
        print(json.dumps(s.as_json(), indent=2))  # plain print: rich would wrap long strings
        return 0
    counts = ", ".join(f"{k.lower()} {v}" for k, v in sorted(s.counts.items()) if v and k != "FAIL_COUNTED")
    budget = "unlimited" if s.budget_total is None or s.budget_total >= UNLIMITED else str(s.budget_total)
    out.print(f"[bold]{s.study}[/]: {counts or 'no trials yet'}; budget {s.finished}/{budget} finished")
    if s.best_value is not None:
        out.print(f"best: {s.best_value:.4f} (trial {s.best_number}: {s.best_label})")
    if s.eta_s is not None:
        out.print(f"ETA: {s.eta_s / 60:.1f} min (median trial {s.median_trial_s:.0f}s)")
    if s.reused:
        out.print(f"deduplicated: {s.reused} trial(s) reused an equal config, {s.epochs_saved} GPU-epochs saved")
    if s.running:
        # One line per trial in 80 columns: long penalty and GPU texts are cut, never wrapped.
        table = Table(title="running", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
        for name in ("trial", "ep", "started", *PLACEMENTS, "worker"):
            table.add_column(name, no_wrap=True, justify="right" if name in ("trial", "ep") else "left",
                             overflow="ellipsis", min_width=len(name))
        for r in s.running:
            started = "" if r.started is None else r.started.strftime("%H:%M")
            host, pid = r.worker.rsplit(":", 1) if ":" in r.worker else (r.worker, "?")
            # pid first: a cut-off tail loses the domain and GPU name, not what identifies the process.
            worker = f"{pid}@{host.split('.')[0]} {r.gpu}"
            table.add_row(
                str(r.number), str(r.epochs_reported), started, *(r.penalties.get(p, "?") for p in PLACEMENTS), worker
            )
        out.print(table, soft_wrap=False)
    return 0


def print_leaderboard(sweep: Any, top: int) -> None:
    from sweep.report.summary import leaderboard, pruned_count

    rows = leaderboard(sweep, top)
    pruned = pruned_count(sweep)
    # Light borders and unwrapped penalties: one line per trial even in an 80-column terminal.
    # Only the penalty texts are cut when space runs out; the numbers keep their full width.
    table = Table(title=f"leaderboard: {sweep.name}", box=box.SIMPLE_HEAD, pad_edge=False, padding=0)
    numbers = {"#": 3, "trial": 5, "val acc": 7, "epochs": 6, "seconds": 7}
    # What the numbers leave, shared by the three penalty columns; the box draws one space
    # between columns and one at each edge.
    gaps = len(numbers) + len(PLACEMENTS) + 1
    penalty_width = max(8, (out.width - sum(numbers.values()) - gaps) // len(PLACEMENTS))
    for name in ("#", "trial", "val acc", *PLACEMENTS, "epochs", "seconds"):
        if name in numbers:
            table.add_column(name, no_wrap=True, justify="right", min_width=numbers[name])
        else:
            table.add_column(name, no_wrap=True, overflow="ellipsis", max_width=penalty_width)
    for row in rows:
        seconds = "" if row.duration_s is None else f"{row.duration_s:.0f}"
        note = f" (= #{row.reused})" if row.reused is not None else ""
        table.add_row(str(row.rank), str(row.number) + note, f"{row.value:.4f}", *row.penalties.values(),
                      str(row.epochs), seconds)
    out.print(table if rows else "no completed trials yet")
    if pruned:
        out.print(f"{pruned} pruned trial(s) not shown (stopped early by the pruner; `sweep export` lists them)")


def cmd_best(args: argparse.Namespace) -> int:
    from sweep.report.summary import leaderboard

    sweep = load_study(args)
    if args.json:
        out.print_json(json.dumps([row.as_json() for row in leaderboard(sweep, args.top)]))
    else:
        print_leaderboard(sweep, args.top)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from sweep.report.summary import export_csv

    path = out_file(args.out)
    sweep = load_study(args)
    n = export_csv(sweep, path)
    out.print(f"Wrote {n} trials to {args.out}")
    return 0



