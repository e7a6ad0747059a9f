"""The report's plotly figures of accuracy and the search: by kind, by strength, history, importances,
curves, the tutorial comparison. Each function returns a figure, or a note saying why there is none.

Figures are drawn from :class:`~sweep.report.data.ReportData` and its in-memory study snapshot,
never from the database. Their look (colours fixed per regularizer kind) is :mod:`sweep.report.figstyle`;
the weight and diagnostics figures are :mod:`sweep.report.diagfigures`.
"""

from __future__ import annotations

import math

import optuna
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sweep.report.data import (
    ReportData,
    TrialRow,
)
from sweep.report.figstyle import KIND_COLORS, LINE_COLORS, Figure, hover, log_axis, style
from sweep.report.placements import kind_values, searched_placements
from sweep.report.tutorial import TUTORIAL_ORDER, TUTORIAL_RUNS, experiment_runs, tutorial_results

__all__ = [
    "curves_figure",
    "history_figure",
    "importance_figure",
    "kinds_figure",
    "placement_figure",
    "tutorial_figure",
]


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
                      "text": [hover(r) for r in rows_by_kind[kind]],
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
    return style(fig, 420)


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
                    text=[hover(r) for r in rows],
                    hovertemplate="%{text}<br>lambda %{x:.2g}<br>val acc %{y:.4f}<extra></extra>",
                ),
                row=1,
                col=col,
            )
            shown.add(kind)
        log_axis(fig, row=1, col=col)
        fig.update_xaxes(title_text="lambda (l1 + l2)", row=1, col=col)
    fig.update_yaxes(title_text="validation accuracy", row=1, col=1)
    return style(fig, 400)


def history_figure(study: optuna.Study) -> Figure:
    """Optuna's optimization history (objective per trial and best so far)."""
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        return "No completed trials yet."
    fig = optuna.visualization.plot_optimization_history(study, target_name="validation accuracy")
    return style(fig, 400, title=None)


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
    return style(fig, max(260, 60 + 40 * len(importances)), title=None)


def _curve_panels(rows: list[TrialRow], names: dict[int, str], keys: tuple[str, ...], titles: tuple[str, ...],
                  height: int, colors: list[str] | None = None) -> go.Figure:
    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=titles)
    for i, r in enumerate(rows):
        color = colors[i] if colors else LINE_COLORS[i % len(LINE_COLORS)]
        for col, key in enumerate(keys, 1):
            ys = [y if math.isfinite(y) else None for y in r.curves.get(key, [])]
            fig.add_trace(go.Scatter(
                x=list(range(1, len(ys) + 1)), y=ys, mode="lines+markers", name=names[r.number],
                legendgroup=str(r.number), showlegend=col == 1, line={"color": color}, marker={"size": 5},
                hovertemplate=f"{names[r.number]}<br>epoch %{{x}}<br>{key} %{{y:.4g}}<extra></extra>",
            ), row=1, col=col)
            fig.update_xaxes(title_text="epoch", row=1, col=col)
    return style(fig, height + 22 * len(rows), legend_below=True)


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
    return style(fig, 460, legend_below=True)
