"""``sweep report``: the morning report of a study, one self-contained HTML file plus a markdown summary.

The HTML embeds plotly.js once and every figure as inline data, so it opens offline (attach it to
an e-mail, copy it off the GPU host). The markdown summary (``report.md`` beside ``report.html``)
holds the counts, the best trial and the leaderboard for chat or a ticket. The storage URL is
shown masked (:func:`~sweep.masking.mask_url`) and free text (fail reasons) has passwords masked.
``sweep schedule`` writes the report of each night at its close (see :mod:`sweep.schedule.night`).

Sections live in :mod:`sweep.report.html`, figures in :mod:`sweep.report.figures` and
:mod:`sweep.report.diagfigures`, the data read
from storage in :mod:`sweep.report.data`.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from sweep.errors import SpecError
from sweep.masking import mask_secrets, mask_url
from sweep.penalties.kinds import PLACEMENTS
from sweep.report.data import ReportData, collect
from sweep.report.leaderboard import leaderboard_rows
from sweep.report.tutorial import check_order, comparison_table, order_sentences, reg_loss_table, tutorial_results
from sweep.study.sweeps import Sweep

__all__ = ["cmd_report", "register_cli", "render_markdown", "write_report"]

_logger = logging.getLogger(__name__)


def _md(text: object) -> str:
    return mask_secrets(str(text)).replace("|", "\\|").replace("\n", " ")


def render_markdown(data: ReportData, storage: str, html_name: str, top: int = 10) -> str:
    """The short summary: counts by state, best trial, leaderboard, failures, dedup and finalists.

    Args:
        data: The study's report data.
        storage: The storage URL, already masked.
        html_name: File name of the full report, linked at the end.
        top: Leaderboard rows.
    """
    from sweep.report.htmlparts import fmt

    counts = ", ".join(f"{n} {s.lower()}" for s, n in data.counts.items()) or "no trials yet"
    budget = data.attrs.get("budget") or {}
    lines = [f"# Regularization sweep `{data.name}`", "",
             f"- storage: `{storage}`", f"- trials: {counts}"]
    if budget.get("deadline"):
        lines.append(f"- deadline: {budget['deadline']}")
    short = {r.number: r.short for r in data.rows}
    if data.finalists:
        top_f = data.finalists[0]
        lines.append(
            f"- winner (finalists): `{_md(short.get(top_f.search_trial, top_f.label))}`, "
            f"mean **{top_f.mean:.4f}** over {len(top_f.values)} fresh seeds"
        )
    best = data.search[0] if data.search else None
    lines.append(f"- best trial: **{best.value:.4f}** (trial {best.number}: `{best.short}`)" if best else
                 "- best trial: none yet")
    if data.reused:
        lines.append(f"- deduplication: {len(data.reused)} trial(s) reused, "
                     f"{sum(r.epochs_saved for r in data.reused)} epochs saved")
    lines += ["", "## Leaderboard", ""]
    board = leaderboard_rows(data.search, top)
    if data.search:
        lines.append("| rank | trial | val accuracy | " + " | ".join(PLACEMENTS) + " | epochs |")
        lines.append("|---:|---:|---:|" + "---|" * len(PLACEMENTS) + "---:|")
        for row in board:
            cells = [str(row.rank), str(row.number), fmt(row.value), *row.penalties.values(), fmt(row.epochs)]
            lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
    else:
        lines.append("No completed trials yet.")
    results = tutorial_results(data)
    if results:
        head, rows = comparison_table(results)
        lines += ["", "## Tutorial experiments: ours beside the tutorial's", "",
                  "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
        lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
        lines += [""] + [f"- {_md(line)}" for line in order_sentences(check_order(results))]
        head, rows = reg_loss_table(results)
        lines += ["", "Regularization loss per epoch:", "", "| " + " | ".join(head) + " |",
                  "|" + "---:|" * len(head)] + ["| " + " | ".join(row) + " |" for row in rows]
    if data.pruned:
        lines += ["", f"## Pruned ({len(data.pruned)})", "",
                  "Stopped early by the pruner: trials " + ", ".join(str(r.number) for r in data.pruned)]
    if data.failures:
        lines += ["", f"## Failures ({len(data.failures)})", ""]
        for r in data.failures[:top]:
            reason = (r.fail_reason or "(no reason recorded)").splitlines()[0][:200]
            again = f" (re-queued as trial {r.requeued_as})" if r.requeued_as is not None else ""
            lines.append(f"- trial {r.number}: {_md(reason)}{again}")
    if data.finalists:
        lines += ["", "## Finalists (fresh seeds)", ""]
        for f in data.finalists:
            lines.append(
                f"- `{_md(short.get(f.search_trial, f.label))}`: mean {f.mean:.4f} "
                f"(95% CI {f.ci_low:.4f} .. {f.ci_high:.4f}, {len(f.values)} seeds)"
            )
    lines += ["", f"Full report with figures: [{html_name}]({html_name})", ""]
    return "\n".join(lines)


def write_report(sweep: Sweep, out: str | Path, *, storage_url: str | None = None, top: int = 15) -> tuple[Path, Path]:
    """Write ``out`` (HTML) and the markdown summary beside it (same name, ``.md``).

    Args:
        sweep: The study.
        out: The HTML file to write; its folder is created (``sweep report`` itself refuses a
            missing folder; the nightly closer writes into a report folder it owns).
        storage_url: Shown masked in the report (never with its password).
        top: Leaderboard rows.

    Returns:
        The HTML and markdown paths.
    """
    import plotly.offline

    from sweep.report.html import render_html

    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise SpecError(f"Invalid --out: expected an .html file, received out={str(out)!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    data = collect(sweep)
    storage = mask_url(storage_url) if storage_url else "(not given)"
    page = render_html(data, storage, plotly.offline.get_plotlyjs(), top=top)
    md_path = out.with_suffix(".md")
    # Write then rename: a reader (the dashboard volume, a mail job) never sees half a file.
    for path, text in ((out, page), (md_path, render_markdown(data, storage, out.name, top=min(top, 10)))):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    _logger.info("Wrote %s (%d KiB) and %s", out, out.stat().st_size // 1024, md_path)
    return out, md_path


def cmd_report(args: argparse.Namespace) -> int:
    """Handler of ``sweep report``."""
    from rich.console import Console

    from sweep.storage.engine import StorageConfig, open_storage
    from sweep.storage.url import require_existing, resolve_storage_url
    from sweep.study.sweeps import load_sweep

    if args.top < 1:
        raise SpecError(f"Invalid --top: expected a positive integer, received top={args.top}")
    folder = Path(args.out).parent
    if not folder.is_dir():  # a typo in a path must not leave a tree of new folders behind
        raise SpecError(f"Invalid --out: folder {str(folder)!r} does not exist, received out={args.out!r}")
    url = require_existing(resolve_storage_url(args.storage), args.storage)
    sweep = load_sweep(open_storage(url, StorageConfig(open_attempts=2, connect_timeout=5)), args.study, wait_s=0)
    html_path, md_path = write_report(sweep, args.out, storage_url=url, top=args.top)
    Console(highlight=False).print(f"Wrote [bold]{html_path}[/] and {md_path}")
    return 0


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sweep report`` to the ``sweep`` parser."""
    p = subparsers.add_parser("report", help="self-contained HTML report (+ markdown summary) of a study")
    p.add_argument("study", help="study name")
    p.add_argument(
        "--out", default="report.html", help="HTML file to write; report.md goes beside it (default report.html)"
    )
    p.add_argument("--top", type=int, default=15, help="leaderboard rows (default 15)")
    p.add_argument("--storage", help="storage URL (default: SWEEP_STORAGE, OPTUNA_STORAGE, sqlite:///regsweep.db)")
    p.set_defaults(handler=cmd_report)
