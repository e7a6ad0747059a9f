"""The report figures' shared look: the ``Figure`` type, fixed colours per regularizer kind, layout.

Every figure module (:mod:`sweep.report.figures`, :mod:`sweep.report.diagfigures`) styles through
here, so every figure reads the same.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import plotly.graph_objects as go

from sweep.report.data import TrialRow

__all__ = ["KIND_COLORS", "LINE_COLORS", "Figure", "hover", "log_axis", "style"]

#: A figure, or a sentence explaining why there is none.
Figure: TypeAlias = "go.Figure | str"
KIND_COLORS = {"none": "#7f7f7f", "l1": "#1f77b4", "l2": "#d62728", "l1_l2": "#9467bd", "custom": "#2ca02c"}
LINE_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_FONT = {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 13}


def style(fig: go.Figure, height: int, *, legend_below: bool = False, **layout: Any) -> go.Figure:
    """Apply the report's template, font, legend and margins to ``fig``."""
    # A long legend above the plot collides with subplot titles and the mode bar: put it below.
    legend = ({"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0} if legend_below
              else {"orientation": "h", "yanchor": "bottom", "y": 1.08, "x": 0})
    fig.update_layout(template="plotly_white", height=height, font=_FONT, legend=legend,
                      margin={"l": 60, "r": 20, "t": 60, "b": 40 if not legend_below else 60}, **layout)
    return fig


def hover(r: TrialRow) -> str:
    """The hover text naming a trial."""
    return f"trial {r.number}<br>{r.short}"


def log_axis(fig: go.Figure, **where: int) -> None:
    """A log x axis with one tick per decade."""
    # One tick per decade, written 1e-05: SI prefixes (10µ) read badly for penalty factors.
    fig.update_xaxes(type="log", dtick=1, exponentformat="e", showexponent="all", **where)
