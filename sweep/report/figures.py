"""The report's plotly figures. Each function returns a figure, or a note saying why there is none.

Figures are drawn from :class:`~sweep.report.data.ReportData` and its in-memory study snapshot,
never from the database. Colours are fixed per regularizer kind so every figure reads the same.
"""

from __future__ import annotations

import logging
import math
from typing import Any, TypeAlias

import optuna
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sweep.report.data import (
    ReportData,
    TrialRow,
    kind_values,
    searched_placements,
)
from sweep.report.tutorial import TUTORIAL_ORDER, TUTORIAL_RUNS, experiment_runs, tutorial_results

__all__ = [
    "KIND_COLORS",
    "Figure",
    "block_figure",
    "curves_figure",
    "diagnostics_figure",
    "diagnostics_epochs_figure",
    "history_figure",
    "importance_figure",
    "kinds_figure",
    "placement_figure",
    "sparsity_figure",
    "tutorial_figure",
]

_logger = logging.getLogger(__name__)
#: A figure, or a sentence explaining why there is none.
Figure: TypeAlias = "go.Figure | str"
KIND_COLORS = {"none": "#7f7f7f", "l1": "#1f77b4", "l2": "#d62728", "l1_l2": "#9467bd", "custom": "#2ca02c"}
_LINE_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_FONT = {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 13}


def _style(fig: go.Figure, height: int, *, legend_below: bool = False, **layout: Any) -> go.Figure:
    # A long legend above the plot collides with subplot titles and the mode bar: put it below.
    legend = ({"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0} if legend_below
              else {"orientation": "h", "yanchor": "bottom", "y": 1.08, "x": 0})
    fig.update_layout(template="plotly_white", height=height, font=_FONT, legend=legend,
                      margin={"l": 60, "r": 20, "t": 60, "b": 40 if not legend_below else 60}, **layout)
    return fig


def _hover(r: TrialRow) -> str:
    return f"trial {r.number}<br>{r.short}"


def _log_axis(fig: go.Figure, **where: int) -> None:
    # One tick per decade, written 1e-05: SI prefixes (10µ) read badly for penalty factors.
    fig.update_xaxes(type="log", dtick=1, exponentformat="e", showexponent="all", **where)


def kinds_figure(data: ReportData) -> Figure:
    """Box plots of validation accuracy by kind, one panel per searched placement."""
    placements = searched_placements(data.spec)
    if not data.trained or not placements:
        return (
            "No completed trials yet."
            if not data.trained
            else "No placement is searched: every trial is unregularized."
        )
    fig = make_subplots(rows=1, cols=len(placements), shared_yaxes=True, subplot_titles=placements)
    shown: set[str] = set()
    for col, p in enumerate(placements, 1):
        groups = kind_values(data, p)
        rows_by_kind = {k: [r for r in data.trained if r.kind(p) == k] for k in groups}
        for kind, values in groups.items():
            common = {"name": kind, "legendgroup": kind, "showlegend": kind not in shown,
                      "text": [_hover(r) for r in rows_by_kind[kind]],
                      "hovertemplate": "%{text}<br>val acc %{y:.4f}<extra></extra>"}
            color = KIND_COLORS.get(kind, "#333")
            if len(values) >= 3:
                trace = go.Box(y=values, boxpoints="all", jitter=0.4, pointpos=0,
                               marker={"color": color, "size": 6}, **common)
            else:  # a box of one or two points is a flat line that reads as a distribution: dots only
                trace = go.Scatter(x=[kind] * len(values), y=values, mode="markers",
                                   marker={"color": color, "size": 11, "symbol": "diamond"}, **common)
            fig.add_trace(trace, row=1, col=col)
            shown.add(kind)
    fig.update_yaxes(title_text="validation accuracy", row=1, col=1)
    return _style(fig, 420)


def placement_figure(data: ReportData) -> Figure:
    """Validation accuracy against penalty strength (l1 + l2, log axis) per searched placement."""
    placements = [p for p in searched_placements(data.spec) if any(r.strength(p) for r in data.trained)]
    if not placements:
        return "No trial used a penalty with a lambda: nothing to plot against strength."
    fig = make_subplots(rows=1, cols=len(placements), shared_yaxes=True,
                        subplot_titles=[f"{p} penalty" for p in placements])
    shown: set[str] = set()
    for col, p in enumerate(placements, 1):
        for kind in ("l1", "l2", "l1_l2"):
            rows = [r for r in data.trained if r.kind(p) == kind and r.strength(p)]
            if not rows:
                continue
            fig.add_trace(
                go.Scatter(
                    x=[r.strength(p) for r in rows],
                    y=[r.value for r in rows],
                    mode="markers",
                    name=kind,
                    legendgroup=kind,
                    showlegend=kind not in shown,
                    marker={"color": KIND_COLORS[kind], "size": 8, "opacity": 0.8},
                    text=[_hover(r) for r in rows],
                    hovertemplate="%{text}<br>lambda %{x:.2g}<br>val acc %{y:.4f}<extra></extra>",
                ),
                row=1,
                col=col,
            )
            shown.add(kind)
        _log_axis(fig, row=1, col=col)
        fig.update_xaxes(title_text="lambda (l1 + l2)", row=1, col=col)
    fig.update_yaxes(title_text="validation accuracy", row=1, col=1)
    return _style(fig, 400)


def history_figure(study: optuna.Study) -> Figure:
    """Optuna's optimization history (objective per trial and best so far)."""
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        return "No completed trials yet."
    fig = optuna.visualization.plot_optimization_history(study, target_name="validation accuracy")
    return _style(fig, 400, title=None)


def importance_figure(study: optuna.Study) -> Figure:
    """Optuna's parameter importances (fANOVA), or why they cannot be computed."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2 or not any(t.params for t in complete):
        return (f"Parameter importances need at least 2 completed trials with parameters; "
                f"this study has {len(complete)} completed trial(s).")
    try:
        importances = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as error:  # e.g. no parameter shared by all trials
        return f"Parameter importances could not be computed: {error}"
    if not importances:
        return "Parameter importances could not be computed: no parameter varies across the completed trials."
    fig = optuna.visualization.plot_param_importances(study, target_name="validation accuracy")
    return _style(fig, max(260, 60 + 40 * len(importances)), title=None)


def _curve_panels(rows: list[TrialRow], names: dict[int, str], keys: tuple[str, ...], titles: tuple[str, ...],
                  height: int, colors: list[str] | None = None) -> go.Figure:
    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=titles)
    for i, r in enumerate(rows):
        color = colors[i] if colors else _LINE_COLORS[i % len(_LINE_COLORS)]
        for col, key in enumerate(keys, 1):
            ys = [y if math.isfinite(y) else None for y in r.curves.get(key, [])]
            fig.add_trace(go.Scatter(
                x=list(range(1, len(ys) + 1)), y=ys, mode="lines+markers", name=names[r.number],
                legendgroup=str(r.number), showlegend=col == 1, line={"color": color}, marker={"size": 5},
                hovertemplate=f"{names[r.number]}<br>epoch %{{x}}<br>{key} %{{y:.4g}}<extra></extra>",
            ), row=1, col=col)
            fig.update_xaxes(title_text="epoch", row=1, col=col)
    return _style(fig, height + 22 * len(rows), legend_below=True)


def curves_figure(data: ReportData, top: int = 5) -> Figure:
    """Validation accuracy, validation loss and regularization loss per epoch of the top trials."""
    rows, seen = [], set()
    for r in data.trained:  # distinct configs: a finalist's re-runs would repeat the same curve
        key = r.config_hash or repr(sorted(r.config.items()))
        if r.curves.get("val_accuracy") and key not in seen:
            seen.add(key)
            rows.append(r)
    rows = rows[:top]
    if not rows:
        return "No completed trial recorded per-epoch curves."
    names = {r.number: f"#{r.number} {r.short}" for r in rows}
    return _curve_panels(rows, names, ("val_accuracy", "val_loss", "reg_loss"),
                         ("validation accuracy", "validation loss", "regularization loss"), 430)


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
                text=[_hover(r) for r in sub],
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
    return _style(fig, 400)


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
    return _style(fig, 160 + 40 * len(rows))


def tutorial_figure(data: ReportData) -> Figure:
    """Ours beside the tutorial: validation accuracy per epoch and regularization loss (log scale).

    Each of our seeds is a thin line, coloured by experiment; the tutorial's regularization loss is
    dashed and its final validation accuracy a star at its last epoch.
    """
    results = tutorial_results(data)
    if not results:
        return "The seed-replication experiments have not completed."
    fig = make_subplots(rows=1, cols=2, subplot_titles=("validation accuracy", "regularization loss (log scale)"))
    by_kind = {kind: [r for r in experiment_runs(data) if r.kind("kernel") == kind] for kind in results}
    for kind in TUTORIAL_ORDER:
        ref, color = TUTORIAL_RUNS[kind], KIND_COLORS.get(kind, "#333")
        for i, r in enumerate(by_kind.get(kind, [])):
            ys = r.curves["val_accuracy"]
            fig.add_trace(go.Scatter(
                x=list(range(1, len(ys) + 1)), y=ys, mode="lines", name=f"{ref.name}, ours", legendgroup=kind,
                showlegend=i == 0, line={"color": color, "width": 1.5}, opacity=0.7,
                hovertemplate=(f"{ref.name} seed {r.seed} (trial {r.number})<br>epoch %{{x}}<br>%{{y:.4f}}"
                               "<extra></extra>"),
            ), row=1, col=1)
        fig.add_trace(go.Scatter(
            x=[10], y=[ref.val_accuracy], mode="markers", name=f"{ref.name}, tutorial", legendgroup=f"{kind}-ref",
            marker={"color": color, "symbol": "star", "size": 13, "line": {"width": 1, "color": "#000"}},
            hovertemplate=f"{ref.name}, tutorial: %{{y:.4f}} at its last epoch<extra></extra>",
        ), row=1, col=1)
        if kind in results and ref.reg_loss:
            mean = results[kind].mean_reg_loss()
            fig.add_trace(go.Scatter(x=list(range(1, len(mean) + 1)), y=mean, mode="lines+markers",
                                     name=f"{ref.name}, ours (mean of seeds)", legendgroup=kind, showlegend=False,
                                     line={"color": color}, marker={"size": 5}), row=1, col=2)
            fig.add_trace(go.Scatter(x=list(range(1, len(ref.reg_loss) + 1)), y=list(ref.reg_loss),
                                     mode="lines+markers", name=f"{ref.name}, tutorial", legendgroup=f"{kind}-ref",
                                     showlegend=False, line={"color": color, "dash": "dash"},
                                     marker={"size": 5, "symbol": "star"}), row=1, col=2)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    return _style(fig, 460, legend_below=True)


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
                legendgroup=kind, showlegend=col == 0, text=[_hover(r) for r in sub],
                marker={"color": KIND_COLORS.get(kind, "#333"), "size": 8, "opacity": 0.85},
                hovertemplate="%{text}<br>%{x:.4g}<br>val acc %{y:.4f}<extra></extra>",
            ), row=1, col=col + 1)
    fig.update_yaxes(title_text="validation accuracy", row=1, col=1)
    return _style(fig, 380, legend_below=True)


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
    return _style(fig, 120 + 18 * len(blocks))
