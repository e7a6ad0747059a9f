"""The tutorial's published experiment, and how a seed-replication study compares with it.

The tutorial (iThome 2021, day 22: "L1 vs L2 regularizers") trains the bottleneck classifier three
times for 10 epochs with plain SGD: no regularizer, ``l1(1e-3)`` and ``l2(1e-3)``. Its numbers are
kept here once, as published; the report puts ours beside them. What must reproduce is the
*finding*, not the digits (another data set, another input size): validation accuracy
none > L2 > L1, with margins larger than the seed noise, and regularization losses that fall.
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass, field

from sweep.report.data import ReportData, TrialRow
from sweep.study.finalists import mean_ci, welch_interval

__all__ = [
    "TUTORIAL_RUNS",
    "TUTORIAL_ORDER",
    "TutorialRun",
    "KindResult",
    "OrderCheck",
    "check_order",
    "is_seed_replication",
    "tutorial_rows",
    "tutorial_results",
    "experiment_runs",
    "comparison_table",
    "reg_loss_table",
    "order_sentences",
]


@dataclass(frozen=True)
class TutorialRun:
    """One of the tutorial's three runs as it published it (last epoch of ``model.fit``)."""

    kind: str
    name: str
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    #: ``add_n(model.losses)`` after each of the 10 epochs (the tutorial logs none for "none").
    reg_loss: tuple[float, ...] = ()


#: The tutorial's runs, by kernel kind, as printed in its output cells.
TUTORIAL_RUNS: dict[str, TutorialRun] = {
    "none": TutorialRun("none", "no regularizer", loss=0.2075, accuracy=0.9257, val_loss=0.6781, val_accuracy=0.8164),
    "l1": TutorialRun(
        "l1", "L1", loss=1.7935, accuracy=0.4739, val_loss=2.2774, val_accuracy=0.3328,
        reg_loss=(1.1237922, 0.58376014, 0.4727106, 0.3930303, 0.37723392,
                  0.37397617, 0.36347908, 0.3558346, 0.347651, 0.3464979),
    ),
    "l2": TutorialRun(
        "l2", "L2", loss=1.0696, accuracy=0.8059, val_loss=1.8243, val_accuracy=0.5945,
        reg_loss=(2.9584365, 1.793744, 1.1741993, 0.8488613, 0.67782825,
                  0.5916853, 0.54554325, 0.52234, 0.51154846, 0.50444514),
    ),
}
#: The tutorial's finding, best first: none 0.816 > L2 0.595 > L1 0.333.
TUTORIAL_ORDER: tuple[str, ...] = ("none", "l2", "l1")


@dataclass
class KindResult:
    """Our runs of one of the tutorial's experiments: one value and one curve per seed.

    Args:
        kind: ``none``, ``l1`` or ``l2``.
        values: Final validation accuracy of each seed.
        reg_loss: The per-epoch regularization loss of each seed.
        seeds: The seed of each run.
    """

    kind: str
    values: list[float] = field(default_factory=list)
    reg_loss: list[list[float]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)

    @property
    def ci(self) -> tuple[float, float, float]:
        """``(mean, low, high)`` of the validation accuracy."""
        return mean_ci(self.values)

    def mean_reg_loss(self) -> list[float]:
        """The per-epoch mean regularization loss over the seeds (as long as the shortest run)."""
        curves = [c for c in self.reg_loss if c]
        if not curves:
            return []
        length = min(len(c) for c in curves)
        return [statistics.fmean(c[e] for c in curves) for e in range(length)]


@dataclass(frozen=True)
class OrderCheck:
    """Whether ``better`` beats ``worse`` beyond seed noise (Welch's 95% interval of the difference).

    ``holds`` is None when either side has fewer than two seeds.
    """

    better: str
    worse: str
    difference: float
    low: float
    high: float
    holds: bool | None


def check_order(results: dict[str, KindResult], order: tuple[str, ...] = TUTORIAL_ORDER) -> list[OrderCheck]:
    """Check each adjacent pair of ``order`` (by default none > L2, then L2 > L1).

    Args:
        results: Our runs by kind; a kind without values is skipped.
        order: Kinds from best to worst.

    Returns:
        One :class:`OrderCheck` per adjacent pair that both have values.
    """
    checks = []
    for better, worse in itertools.pairwise(order):
        a, b = results.get(better), results.get(worse)
        if a is None or b is None or not a.values or not b.values:
            continue
        diff, low, high = welch_interval(a.values, b.values)
        holds = None if len(a.values) < 2 or len(b.values) < 2 else low > 0
        checks.append(OrderCheck(better, worse, diff, low, high, holds))
    return checks


def is_seed_replication(data: ReportData) -> bool:
    """Whether the study is the tutorial's grid (the ``seed-replication`` preset or its shape)."""
    space = data.spec.space
    structural = (
        data.spec.sampler.name == "grid"
        and set(space.kernel.kinds) == {"none", "l1", "l2"}
        and space.bias.tie == "kernel"
    )
    return structural or data.spec.study.name.startswith("seed-replication")


def experiment_runs(data: ReportData) -> list[TrialRow]:
    """COMPLETE trials of either phase that trained themselves (a dedup copy repeats another)."""
    return sorted((r for r in data.rows if r.state == "COMPLETE" and r.value is not None and r.dedup_of is None
                   and r.curves.get("val_accuracy")), key=lambda r: r.number)


def tutorial_rows(data: ReportData) -> list[TrialRow] | None:
    """One trial per experiment (kernel none / L1 / L2): the first search-phase run of each.

    None unless the study is the tutorial's grid.
    """
    if not is_seed_replication(data):
        return None
    chosen: dict[str, TrialRow] = {}
    for r in experiment_runs(data):
        if r.phase == "search" and r.kind("kernel") not in chosen:
            chosen[r.kind("kernel")] = r
    rows = [chosen[k] for k in TUTORIAL_ORDER if k in chosen]
    return rows or None


def tutorial_results(data: ReportData) -> dict[str, KindResult] | None:
    """Every seed of each experiment: the search run and the finalists' fresh seeds.

    In this grid the finalists are all three configs, so the search run was not *selected* for
    being good and its seed counts like the others (no winner's curse to avoid). The value is
    the study's objective (the tutorial's is the last epoch: the preset says ``reduce = "last"``).

    Returns:
        Results by kernel kind, in the tutorial's order; None unless the study is its grid.
    """
    if not is_seed_replication(data):
        return None
    results = {kind: KindResult(kind) for kind in TUTORIAL_ORDER}
    for r in experiment_runs(data):
        result = results.get(r.kind("kernel"))
        if result is None:
            continue
        result.values.append(float(r.value or 0.0))  # experiment_runs keeps only trials with a value
        result.reg_loss.append(list(r.curves.get("reg_loss", [])))
        result.seeds.append(-1 if r.seed is None else int(r.seed))
    return {kind: result for kind, result in results.items() if result.values} or None


def _interval(low: float, high: float) -> str:
    return "n/a (one seed)" if not math.isfinite(low) else f"{low:.3f} .. {high:.3f}"


def comparison_table(results: dict[str, KindResult]) -> tuple[list[str], list[list[str]]]:
    """The tutorial's final numbers beside ours: one row per experiment.

    Args:
        results: From :func:`tutorial_results`.

    Returns:
        ``(header, rows)`` of display strings (for the HTML and the markdown report alike).
    """
    head = ["experiment", "tutorial val acc", "ours val acc (mean)", "ours 95% CI", "seeds",
            "tutorial reg loss, epoch 1 → 10", "ours reg loss, first → last epoch (mean)"]
    rows = []
    for kind in TUTORIAL_ORDER:
        ref, ours = TUTORIAL_RUNS[kind], results.get(kind)
        ref_reg = f"{ref.reg_loss[0]:.3g} → {ref.reg_loss[-1]:.3g}" if ref.reg_loss else "0 (none)"
        if ours is None:
            rows.append([ref.name, f"{ref.val_accuracy:.3f}", "not run yet", "", "0", ref_reg, ""])
            continue
        mean, low, high = ours.ci
        curve = ours.mean_reg_loss()
        our_reg = f"{curve[0]:.3g} → {curve[-1]:.3g}" if curve else ""
        rows.append([ref.name, f"{ref.val_accuracy:.3f}", f"{mean:.3f}", _interval(low, high),
                     str(len(ours.values)), ref_reg, our_reg])
    return head, rows


def reg_loss_table(results: dict[str, KindResult]) -> tuple[list[str], list[list[str]]]:
    """Per-epoch regularization loss: the tutorial's 10 values beside our mean, for L1 and L2."""
    kinds = [k for k in ("l1", "l2") if TUTORIAL_RUNS[k].reg_loss]
    head = ["epoch", *(f"{TUTORIAL_RUNS[k].name} {who}" for k in kinds for who in ("tutorial", "ours"))]
    ours = {k: results[k].mean_reg_loss() if k in results else [] for k in kinds}
    length = max([len(TUTORIAL_RUNS[k].reg_loss) for k in kinds] + [len(v) for v in ours.values()])
    rows = []
    for e in range(length):
        cells = [str(e + 1)]
        for k in kinds:
            ref = TUTORIAL_RUNS[k].reg_loss
            cells += [f"{ref[e]:.4g}" if e < len(ref) else "", f"{ours[k][e]:.4g}" if e < len(ours[k]) else ""]
        rows.append(cells)
    return head, rows


def order_sentences(checks: list[OrderCheck]) -> list[str]:
    """One sentence per pair of the tutorial's ordering, saying whether ours reproduces it."""
    names = {k: run.name for k, run in TUTORIAL_RUNS.items()}
    lines = []
    for c in checks:
        pair = f"{names[c.better]} > {names[c.worse]}"
        if c.holds is None:
            verdict = "needs at least two seeds on each side to tell from seed noise"
        elif c.holds:
            verdict = "reproduced, beyond seed noise"
        elif c.difference > 0:
            verdict = "same direction, but within seed noise"
        else:
            verdict = "NOT reproduced"
        lines.append(f"{pair}: difference {c.difference:+.3f} (Welch 95% CI {_interval(c.low, c.high)}): {verdict}")
    return lines
