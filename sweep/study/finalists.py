"""Finalists: re-run the best configs with fresh seeds and rank them by mean with 95% CIs.

Regularization often moves validation accuracy less than the seed does. After the search budget
is spent, the first worker to find the search finished opens the finalist phase (an INSERT that
the database lets only one process win), enqueues ``top_k`` configs x ``seeds`` fresh seeds and
only then extends the budget, so no worker can claim a slot and sample a stray search trial.

Ranking uses the fresh seeds only: the search run of a finalist was *selected* for being good,
so including it would bias its mean upwards (the winner's curse).
"""

from __future__ import annotations

import functools
import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import exc as sa_exc

from sweep.spec.model import SweepSpec
from sweep.storage.engine import db_call, engine_of
from sweep.storage.tables import PHASE, ensure_tables
from sweep.storage.trial_record import Attr, TrialRecord
from sweep.study import budget
from sweep.study.ranking import ranked, trial_label, trial_value

__all__ = ["FinalistRow", "choose_finalists", "open_finalist_phase", "finalist_ranking", "t_quantile_975", "mean_ci",
           "welch_interval"]

_logger = logging.getLogger(__name__)
# Two-sided 95% Student-t quantiles by degrees of freedom (1..30); beyond 30 the normal 1.96.
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
         2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
         2.052, 2.048, 2.045, 2.042]


def t_quantile_975(df: float) -> float:
    """Two-sided 95% quantile of Student's t with ``df`` degrees of freedom (no scipy needed)."""
    if df < 1:
        return math.inf
    return _T975[int(df) - 1] if df <= 30 else 1.96


def choose_finalists(trials: Sequence[FrozenTrial], top_k: int) -> list[FrozenTrial]:
    """The best ``top_k`` distinct configs of the search phase, best first (a pure function).

    Args:
        trials: The study's trials (only COMPLETE search-phase ones with a value are considered).
        top_k: How many configs; a config that ran more than once is chosen once, by its best run.
    """
    search = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None
              and TrialRecord(t.user_attrs).phase == "search"]
    chosen: list[FrozenTrial] = []
    seen: set[Any] = set()
    for t in ranked(search) if top_k > 0 else []:
        key = TrialRecord(t.user_attrs).config_hash
        if key not in seen:
            seen.add(key)
            chosen.append(t)
        if len(chosen) == top_k:
            break
    return chosen


def open_finalist_phase(study: optuna.Study, spec: SweepSpec) -> bool:
    """Open the finalist phase if this process wins the race; returns whether it did.

    Args:
        study: The study (its search trials must all be finished).
        spec: Its spec; ``finalists.top_k`` configs get ``finalists.seeds`` fresh seeds each.
    """
    if spec.finalists.top_k <= 0:
        return False
    engine = engine_of(study._storage)

    ensure_tables(engine)

    def _flip() -> bool:
        try:
            with engine.begin() as conn:
                conn.execute(PHASE.insert().values(study_name=study.study_name, phase="finalist"))
            return True
        except sa_exc.IntegrityError:
            return False

    if not db_call(_flip, what="open the finalist phase"):
        return False
    trials = db_call(lambda: study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), what="list trials")
    chosen = choose_finalists(trials, spec.finalists.top_k)
    base = spec.training.seed
    count = 0
    for t in chosen:
        for s in range(1, spec.finalists.seeds + 1):
            attrs = {Attr.PHASE: "finalist", Attr.SEED: base + s, Attr.FINALIST_OF: t.number}
            db_call(functools.partial(study.enqueue_trial, t.params, user_attrs=attrs), what="enqueue a finalist")
            count += 1
    budget.extend(engine, study.study_name, count)  # last: only now can workers claim these
    _logger.info("Finalist phase: %d config(s) x %d seeds enqueued", len(chosen), spec.finalists.seeds)
    return True


@dataclass
class FinalistRow:
    """One finalist config: mean of its fresh-seed runs with a 95% confidence interval."""

    config_hash: str
    label: str
    search_trial: int
    search_value: float | None
    values: list[float]
    mean: float
    ci_low: float
    ci_high: float
    #: Whether the best finalist's mean is higher than this one's beyond seed noise (Welch, 5%).
    worse_than_best: bool | None = None


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean and two-sided 95% Student-t interval of ``values`` (infinite with one value).

    Args:
        values: One value per seed.

    Returns:
        ``(mean, low, high)``.
    """
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, -math.inf, math.inf
    half = t_quantile_975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def welch_interval(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Mean of ``a`` minus mean of ``b`` with Welch's two-sided 95% interval.

    Args:
        a: One value per seed.
        b: One value per seed.

    Returns:
        ``(difference, low, high)``; infinite bounds when either side has fewer than two values.
    """
    diff = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return diff, -math.inf, math.inf
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_quantile_975(df) * math.sqrt(va + vb)
    return diff, diff - half, diff + half


def _welch_ci_excludes_zero(a: list[float], b: list[float]) -> bool | None:
    if len(a) < 2 or len(b) < 2:
        return None
    diff, low, _ = welch_interval(a, b)
    return diff != 0 if low == diff else low > 0


def finalist_ranking(study: optuna.Study) -> list[FinalistRow]:
    """Finalist configs ranked by mean fresh-seed accuracy, best first."""
    trials = db_call(lambda: study.get_trials(deepcopy=False), what="list trials")
    by_number = {t.number: t for t in trials}
    groups: dict[str, list[optuna.trial.FrozenTrial]] = {}
    for t in trials:
        record = TrialRecord(t.user_attrs)
        if record.phase == "finalist" and t.state == TrialState.COMPLETE and t.value is not None:
            groups.setdefault(record.config_hash or "?", []).append(t)
    rows = []
    for key, group in groups.items():
        values = [trial_value(t) for t in group]
        mean, ci_low, ci_high = mean_ci(values)
        finalist_of = TrialRecord(group[0].user_attrs).finalist_of
        source = None if finalist_of is None else by_number.get(finalist_of)
        rows.append(FinalistRow(
            config_hash=key,
            label=trial_label(group[0]),
            search_trial=source.number if source else -1,
            search_value=source.value if source else None,
            values=values,
            mean=mean,
            ci_low=ci_low,
            ci_high=ci_high,
        ))
    rows.sort(key=lambda r: -r.mean)
    if rows:
        for row in rows[1:]:
            row.worse_than_best = _welch_ci_excludes_zero(rows[0].values, row.values)
    return rows
