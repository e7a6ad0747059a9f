"""What a reader of the morning report missed (issue 13, item 13), on a real Optuna study in memory.

The trials are written as a worker leaves them (config, curves, diagnostics, fail reasons, Optuna's
own retry copy of a stopped trial), then the real report code reads and renders them.
"""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import plotly.colors
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from sweep.report.data import ReportData, collect
from sweep.report.diagfigures import block_figure, sparsity_figure
from sweep.report.html import render_html
from sweep.spec.load import load_spec
from sweep.study.sweeps import Sweep
from tests.helpers import synthetic_spec

KINDS = ["none", "l1", "l2"]


def _trial(state: TrialState, value: float | None, kind: str, *, sparsity: float = 0.0, epochs: int = 3,
           reason: str | None = None, system: dict | None = None) -> optuna.trial.FrozenTrial:
    penalty = {"kind": kind} if kind == "none" else {"kind": kind, kind: 1e-3}
    attrs = {
        "config": {"kernel": penalty, "bias": {"kind": "none"}, "activity": {"kind": "none"}},
        "curves": {"val_accuracy": [0.5 + 0.1 * i for i in range(epochs)]},
        "epochs_run": epochs,
        "diagnostics": {"sparsity": sparsity,
                        "block_norms": {"stem": {"l1": 1.0, "l2": 1.0, "sparsity": 0.0},
                                        "block_0": {"l1": 1.0, "l2": 1.0, "sparsity": sparsity}}},
    }
    if reason:
        attrs["fail_reason"] = reason
    intermediate = {i: 0.5 + 0.1 * i for i in range(epochs)}
    return create_trial(state=state, value=value, params={"kernel_kind": kind},
                        distributions={"kernel_kind": CategoricalDistribution(KINDS)}, user_attrs=attrs,
                        system_attrs=system or {}, intermediate_values=intermediate)


@pytest.fixture
def data(tmp_path: Path) -> ReportData:
    spec = load_spec(synthetic_spec(tmp_path, "morning", trials=8))
    study = optuna.create_study(direction="maximize", study_name="morning")
    study.add_trials([
        _trial(TrialState.COMPLETE, 0.91, "l2", sparsity=0.02),
        _trial(TrialState.COMPLETE, 0.88, "l1", sparsity=0.05),
        _trial(TrialState.PRUNED, None, "none", epochs=1),
        _trial(TrialState.FAIL, None, "l1", epochs=2, reason="shutdown: stopped by SIGTERM between epochs"),
        _trial(TrialState.COMPLETE, 0.86, "none"),
        _trial(TrialState.COMPLETE, 0.87, "l2", sparsity=0.01),
    ])
    # Optuna's RetryHeartbeatStaleTrialCallback copy of trial 3, as the worker's stop re-queues it.
    study.add_trial(_trial(TrialState.WAITING, None, "l1", system={"failed_trial": 3, "retry_history": [3]}))
    return collect(Sweep(study=study, spec=spec))


def _section(html: str, key: str) -> str:
    match = re.search(rf'<section id="{key}">(.*?)</section>', html, re.DOTALL)
    assert match, f"no section {key}"
    return match[1]


def test_pruned_trials_are_listed(data: ReportData) -> None:
    pruned = _section(render_html(data, "sqlite:///x.db", ""), "pruned")
    assert re.search(r"<td[^>]*>2</td>", pruned)  # trial 2, by number
    assert "1 pruned trial" in pruned


def test_a_stopped_and_requeued_trial_says_so(data: ReportData) -> None:
    failures = _section(render_html(data, "sqlite:///x.db", ""), "failures")
    assert "shutdown: stopped by SIGTERM" in failures
    assert "re-queued as trial 6" in failures


def test_block_heatmap_has_a_title_and_shows_small_sparsity(data: ReportData) -> None:
    fig = block_figure(data)
    assert not isinstance(fig, str)
    assert "sparsity" in (fig.layout.title.text or "").lower()
    heat = fig.data[0]
    position = (0.02 - heat.zmin) / (heat.zmax - heat.zmin)
    colour = plotly.colors.sample_colorscale([list(step) for step in heat.colorscale], [position])[0]
    rgb = [float(x) for x in re.findall(r"[\d.]+", colour)[:3]]
    assert min(rgb) < 200, f"0.02 renders as {colour}: too close to white"


def test_sparsity_axis_starts_at_zero(data: ReportData) -> None:
    fig = sparsity_figure(data)
    assert not isinstance(fig, str)
    assert fig.layout.xaxis.range[0] == 0


def test_importances_from_few_trials_carry_a_caveat(data: ReportData) -> None:
    importances = _section(render_html(data, "sqlite:///x.db", ""), "importances")
    assert 'data-figure="importances"' in importances
    assert "4 completed trials" in importances and "noisy" in importances
