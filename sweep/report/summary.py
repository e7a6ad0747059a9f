"""Read-only views of a sweep: status, leaderboard and CSV export (no Keras, no writes)."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweep.penalties.config import penalty_text
from sweep.penalties.kinds import PLACEMENTS
from sweep.report.leaderboard import LeaderboardRow, TrialEntry, leaderboard_rows
from sweep.storage.engine import db_call
from sweep.storage.trial_record import TrialRecord
from sweep.study.budget import budget_of, counts_toward_budget
from sweep.study.ranking import trial_label, trial_value
from sweep.study.sweeps import UNLIMITED, Sweep

__all__ = ["SweepStatus", "RunningTrial", "eta_seconds", "sweep_status", "leaderboard", "pruned_count", "export_csv"]

_COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class RunningTrial:
    """A trial in progress and who runs it."""

    number: int
    label: str
    worker: str
    epochs_reported: int
    started: dt.datetime | None
    #: Penalty text per placement (``penalty_text``), for one column each.
    penalties: dict[str, str] = field(default_factory=dict)
    gpu: str = "?"


@dataclass
class SweepStatus:
    """Everything ``sweep status`` shows."""

    study: str
    counts: dict[str, int]
    budget_total: int | None
    budget_claimed: int | None
    best_value: float | None
    best_number: int | None
    best_label: str | None
    running: list[RunningTrial] = field(default_factory=list)
    median_trial_s: float | None = None
    eta_s: float | None = None
    reused: int = 0
    epochs_saved: int = 0
    counted: int = 0

    @property
    def finished(self) -> int:
        """Trials that count toward the budget and are done (:func:`sweep.study.budget.counts_toward_budget`)."""
        return self.counted

    def as_json(self) -> dict[str, Any]:
        """Plain JSON types only (``sweep status --json``): datetimes as ISO 8601 text."""
        data = dataclasses.asdict(self)
        data["finished"] = self.finished
        for running in data["running"]:
            started = running["started"]
            running["started"] = started.isoformat() if started is not None else None
        return data


def _trials(study: optuna.Study) -> list[FrozenTrial]:
    return db_call(lambda: study.get_trials(deepcopy=False), what=f"list trials of {study.study_name!r}")


def eta_seconds(budget_total: int | None, counted: int, median_trial_s: float | None, running: int) -> float | None:
    """Seconds until the budget is spent: the trials left, at the median trial time, over the running workers.

    Pure: ``sweep status`` feeds it what it read (the budget row, the trials the budget rule counts,
    the median duration of trials that trained).

    Args:
        budget_total: The budget's total (None: no budget row; ``UNLIMITED``: until the deadline).
        counted: Trials that count toward the budget so far.
        median_trial_s: Median duration of a trained trial (None: none finished yet).
        running: Trials running now (at least one is assumed, so a paused sweep still gets an ETA).

    Returns:
        None when there is no budget to count down to or no duration to go by.
    """
    if budget_total is None or budget_total >= UNLIMITED or median_trial_s is None:
        return None
    return max(budget_total - counted, 0) * median_trial_s / max(running, 1)


def sweep_status(sweep: Sweep) -> SweepStatus:
    """Counts by state, best so far, running trials with their workers, ETA and dedup savings."""
    study = sweep.study
    trials = _trials(study)
    counts = Counter(t.state.name for t in trials)
    state = budget_of(study)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    best = max(complete, key=trial_value, default=None)
    running = []
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        record = TrialRecord(t.user_attrs)
        w, config = record.worker, record.config
        running.append(
            RunningTrial(
                number=t.number,
                label=trial_label(t),
                worker=f"{w.get('host', '?')}:{w.get('pid', '?')}",
                epochs_reported=len(t.intermediate_values),
                started=t.datetime_start,
                penalties={p: penalty_text(config.get(p)) for p in PLACEMENTS} if config else {},
                gpu=str(w.get("gpu", "?")),
            )
        )
    records = [TrialRecord(t.user_attrs) for t in trials]
    durations = [
        r.duration_s for t, r in zip(trials, records, strict=True)
        if t.state in _COUNTED and r.duration_s and r.dedup_of is None
    ]
    median = statistics.median(durations) if durations else None
    # The one budget rule, applied once per trial: it feeds "finished", FAIL_COUNTED and the ETA.
    counting = [t for t in trials if counts_toward_budget(t.state, t.user_attrs)]
    eta = eta_seconds(None if state is None else state.total, len(counting), median, len(running))
    reused = [r for r in records if r.dedup_of is not None]
    epochs_saved = sum(r.epochs_saved for r in reused)
    counts_dict = dict(counts)
    counts_dict["FAIL_COUNTED"] = sum(1 for t in counting if t.state == TrialState.FAIL)
    return SweepStatus(
        study=study.study_name,
        counts=counts_dict,
        budget_total=None if state is None else state.total,
        budget_claimed=None if state is None else state.claimed,
        best_value=None if best is None else best.value,
        best_number=None if best is None else best.number,
        best_label=None if best is None else trial_label(best),
        running=running,
        median_trial_s=median,
        eta_s=eta,
        reused=len(reused),
        epochs_saved=epochs_saved,
        counted=len(counting),
    )


def leaderboard(sweep: Sweep, top: int = 10) -> list[LeaderboardRow]:
    """Best COMPLETE trials first (finalist re-runs included), as :func:`~sweep.report.leaderboard.leaderboard_rows`."""
    complete = (t for t in _trials(sweep.study) if t.state == TrialState.COMPLETE)
    return leaderboard_rows([TrialEntry.of(t) for t in complete], top)


def pruned_count(sweep: Sweep) -> int:
    """PRUNED trials: the leaderboard ranks COMPLETE ones only and says how many it left out."""
    return sum(1 for t in _trials(sweep.study) if t.state == TrialState.PRUNED)


def export_csv(sweep: Sweep, path: str | Path) -> int:
    """Write one row per trial (params, value, state, diagnostics) to ``path``; returns the row count."""
    trials = _trials(sweep.study)
    param_names = sorted({name for t in trials for name in t.params})
    columns = [
        "number", "state", "value", "label", "config_hash", "phase", "seed", "epochs_run",
        "duration_s", "sparsity", "worker_host", "gpu", "fail_reason", "dedup_of", *param_names,
    ]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for t in trials:
            record = TrialRecord(t.user_attrs)
            row: dict[str, Any] = {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "label": trial_label(t),
                "config_hash": record.config_hash,
                "phase": record.written_phase,
                "seed": record.seed,
                "epochs_run": record.epochs_run,
                "duration_s": record.duration_s,
                "sparsity": record.sparsity,
                "worker_host": record.worker.get("host"),
                "gpu": record.worker.get("gpu"),
                "fail_reason": record.fail_reason,
                "dedup_of": record.dedup_of,
            }
            row.update({name: t.params.get(name) for name in param_names})
            writer.writerow(row)
    return len(trials)
