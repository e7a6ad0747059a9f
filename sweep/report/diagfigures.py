"""The report's figures of what a penalty did to the weights: sparsity, per-block norms, per-epoch diagnostics.

Drawn from :class:`~sweep.report.data.ReportData` (``TrialRow.sparsity``, ``.diagnostics``,
``.by_epoch``), never from the database; the accuracy and search figures are :mod:`sweep.report.figures`.
"""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sweep.report.data import ReportData
from sweep.report.figstyle import KIND_COLORS, Figure, hover, style

__all__ = ["block_figure", "diagnostics_epochs_figure", "diagnostics_figure", "sparsity_figure"]


def sparsity_figure(data: ReportData) -> Figure:
    """Validation accuracy against the fraction of near-zero kernel weights, coloured by kernel kind."""
    rows = [r for r in data.trained if r.sparsity is not None]
    if not rows:
        return "No trial recorded sparsity diagnostics."
    fig = go.Figure()
    for kind in dict.fromkeys(r.kind("kernel") for r in rows):
        sub = [r for r in rows if r.kind("kernel") == kind]
        fig.add_trace(
            go.Scatter(
                x=[r.sparsity for r in sub],
                y=[r.value for r in sub],
                mode="markers",
                name=f"kernel {kind}",
                marker={"color": KIND_COLORS.get(kind, "#333"), "size": 9, "opacity": 0.85},
                text=[hover(r) for r in sub],
                hovertemplate="%{text}<br>sparsity %{x:.3f}<br>val acc %{y:.4f}<extra></extra>",
            )
        )
    top = max(float(r.sparsity or 0.0) for r in rows)
    # Padded range: points at sparsity 0 would otherwise sit half outside the plot on the axis.
    # From 0, as a fraction reads; markers are not clipped, so a point at 0 shows whole on the axis.
    fig.update_traces(cliponaxis=False)
    fig.update_xaxes(title_text="sparsity (fraction of kernel weights with |w| < 1e-3)",
                     range=[0, min(1.02, top * 1.1 + 0.05)])
    fig.update_yaxes(title_text="validation accuracy")
    return style(fig, 400)


def block_figure(data: ReportData, top: int = 5) -> Figure:
    """Per-block sparsity of the top trials (from ``diagnostics.block_norms``)."""
    rows = [r for r in data.trained if r.diagnostics.get("block_norms")][:top]
    if not rows:
        return "No trial recorded per-block norms (diagnostics.block_norms)."
    blocks = list(dict.fromkeys(b for r in rows for b in r.diagnostics["block_norms"]))
    z = [[(r.diagnostics["block_norms"].get(b) or {}).get("sparsity") for b in blocks] for r in rows]
    # Scaled to the largest value seen, not to 1: typical sparsities are a few percent, which a 0-1
    # scale paints white. Zero stays the lightest colour.
    top_value = max([float(v) for row in z for v in row if v is not None] + [0.0])
    fig = go.Figure(go.Heatmap(z=z, x=blocks, y=[f"#{r.number}" for r in rows], colorscale="Blues", zmin=0,
                               zmax=max(top_value, 0.01), colorbar={"title": "sparsity"},
                               hovertemplate="%{y} %{x}<br>sparsity %{z:.3f}<extra></extra>"))
    fig.update_layout(title_text=f"Per-block sparsity of the top {len(rows)} trial(s) (fraction of |w| < 1e-3; "
                                 f"colour scale 0 to {max(top_value, 0.01):.3g})", title_font_size=13)
    return style(fig, 160 + 40 * len(rows))


def _network_totals(epoch: dict[str, Any]) -> tuple[float, float, float]:
    """Whole-network kernel L2 norm, sparsity and mean |activation| of one epoch's diagnostics."""
    blocks = epoch.get("blocks") or {}
    l2 = math.sqrt(sum(float(b.get("l2", 0.0)) ** 2 for b in blocks.values()))
    acts = [float(b["activation"]) for b in blocks.values() if "activation" in b]
    return l2, float(epoch.get("sparsity") or 0.0), (sum(acts) / len(acts) if acts else math.nan)


def diagnostics_figure(data: ReportData) -> Figure:
    """Validation accuracy against the final epoch's weight norm, sparsity and activation, per kind."""
    rows = [r for r in data.trained if r.by_epoch]
    if not rows:
        return "No trial recorded per-epoch diagnostics (diagnostics_by_epoch)."
    titles = ("kernel L2 norm (whole network)", "kernel sparsity (|w| < 1e-3)", "mean |activation| of block outputs")
    fig = make_subplots(rows=1, cols=3, subplot_titles=titles, shared_yaxes=True, horizontal_spacing=0.05)
    for kind in dict.fromkeys(r.kind("kernel") for r in rows):
        sub = [r for r in rows if r.kind("kernel") == kind]
        totals = [_network_totals(r.by_epoch[-1]) for r in sub]
        for col in range(3):
            fig.add_trace(go.Scatter(
                x=[t[col] for t in totals], y=[r.value for r in sub], mode="markers", name=f"kernel {kind}",
                legendgroup=kind, showlegend=col == 0, text=[hover(r) for r in sub],
                marker={"color": KIND_COLORS.get(kind, "#333"), "size": 8, "opacity": 0.85},
                hovertemplate="%{text}<br>%{x:.4g}<br>val acc %{y:.4f}<extra></extra>",
            ), row=1, col=col + 1)
    fig.update_yaxes(title_text="validation accuracy", row=1, col=1)
    return style(fig, 380, legend_below=True)


def diagnostics_epochs_figure(data: ReportData) -> Figure:
    """How the best trial's penalty reshaped each block over epochs: kernel L2 norm and activation."""
    rows = [r for r in data.trained if r.by_epoch]
    if not rows:
        return "No trial recorded per-epoch diagnostics."
    best = rows[0]
    blocks = list(best.by_epoch[-1].get("blocks") or {})
    epochs = [int(e.get("epoch", i)) + 1 for i, e in enumerate(best.by_epoch)]
    titles = ("kernel L2 norm by block, relative to epoch 1", "mean |activation| by block, relative to epoch 1")
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles, horizontal_spacing=0.12)
    grids = []
    for key in ("l2", "activation"):
        # Relative to each block's first epoch (absolute values differ by orders of magnitude between
        # blocks), in log2 so that halving and doubling look equally strong on one shared scale.
        grid = []
        for b in blocks:
            series = [(e.get("blocks") or {}).get(b, {}).get(key) for e in best.by_epoch]
            first = next((v for v in series if v), None)
            grid.append([math.log2(v / first) if v and first else None for v in series])
        grids.append(grid)
    span = max([abs(v) for g in grids for row in g for v in row if v is not None] + [1.0])
    for col, grid in enumerate(grids, start=1):
        fig.add_trace(go.Heatmap(z=grid, x=epochs, y=blocks, coloraxis="coloraxis",
                                 hovertemplate="%{y} epoch %{x}<br>log2(x epoch 1) = %{z:.2f}<extra></extra>"),
                      row=1, col=col)
        fig.update_xaxes(title_text="epoch", dtick=1, row=1, col=col)
    ticks = [t for t in range(-int(span), int(span) + 1)]
    fig.update_layout(coloraxis={"colorscale": "RdBu", "cmin": -span, "cmax": span, "colorbar": {
        "title": "vs epoch 1", "tickvals": ticks, "ticktext": [f"x{2.0 ** t:g}" for t in ticks]}})
    fig.update_layout(title_text=f"best trial #{best.number}: {best.short}", title_font_size=13)
    return style(fig, 120 + 18 * len(blocks))
