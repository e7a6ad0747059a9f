"""The building blocks of the report page: its CSS, cell formats, tables, figures and sections.

Every text that reaches the page goes through :func:`esc`: HTML-escaped, passwords masked.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from sweep.masking import mask_secrets
from sweep.report.figstyle import Figure

__all__ = ["CSS", "esc", "figure_html", "fmt", "fmt_seconds", "html_table", "section_html", "when"]

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;margin:0;background:#f6f7f9}
main{max-width:1280px;margin:0 auto;padding:24px 32px 64px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:0 0 12px;padding-top:4px}
section{background:#fff;border:1px solid #e3e5e8;border-radius:8px;padding:18px 22px;margin:18px 0}
.meta{color:#555;margin:0 0 8px}nav{margin:10px 0 0;line-height:2}
nav a{display:inline-block;margin-right:6px;padding:1px 9px;border:1px solid #d5d9de;border-radius:12px;
color:#1f4f8f;text-decoration:none;font-size:13px;background:#fff}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{padding:5px 10px;border-bottom:1px solid #eceef1;text-align:left;vertical-align:top}
th{background:#f3f5f7;font-weight:600}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.best td{background:#eef7ee}.note{color:#666;font-style:italic}.chips span{display:inline-block;margin:0 8px 6px 0;
padding:3px 10px;border-radius:12px;background:#eef1f5;font-size:13px}.chips b{margin-left:4px}
.st-COMPLETE{background:#e3f3e3!important}.st-FAIL{background:#fbe4e4!important}.st-PRUNED{background:#fff2d9!important}
.st-RUNNING{background:#e3ecfb!important}code{font-size:12px;background:#f3f5f7;padding:1px 4px;border-radius:3px}
details{margin:6px 0}summary{cursor:pointer;color:#1f4f8f}.figure{margin:8px 0 4px}
.kv td:first-child{color:#555;padding-left:0}.kv td{border:none;padding:2px 14px 2px 0}
"""


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: floats to ``digits`` decimals, None as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_seconds(value: float | None) -> str:
    """Durations: one decimal below 100 s (fast trials would all read 0), whole seconds above."""
    if value is None:
        return ""
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def esc(text: Any) -> str:
    return html.escape(mask_secrets(str(text)), quote=True)


def html_table(head: Sequence[str], rows: Iterable[Sequence[Any]], num: AbstractSet[int] = frozenset(),
           row_class: Sequence[str] | None = None) -> str:
    cells = "".join(f'<th class="num">{esc(h)}</th>' if i in num else f"<th>{esc(h)}</th>" for i, h in enumerate(head))
    body = []
    for n, row in enumerate(rows):
        cls = f' class="{row_class[n]}"' if row_class and row_class[n] else ""
        tds = "".join(f'<td class="num">{esc(c)}</td>' if i in num else f"<td>{esc(c)}</td>" for i, c in enumerate(row))
        body.append(f"<tr{cls}>{tds}</tr>")
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def figure_html(key: str, fig: Figure) -> str:
    if isinstance(fig, str):
        return f'<p class="note" data-note="{key}">{esc(fig)}</p>'
    body = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{key}",
                       default_height=f"{fig.layout.height or 420}px", default_width="100%",
                       config={"displaylogo": False, "responsive": True})
    return f'<div class="figure" data-figure="{key}">{body}</div>'


def section_html(key: str, title: str, *parts: str) -> str:
    return f'<section id="{key}"><h2>{esc(title)}</h2>{"".join(parts)}</section>'


def when(iso: str | None) -> str:
    if not iso:
        return "none"
    try:
        return dt.datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S (UTC%z)")
    except ValueError:
        return iso
