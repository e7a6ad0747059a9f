"""What the report shows, read once from storage into plain rows (no plotting here).

Every database read goes through :func:`~sweep.storage.engine.db_call`; the figures are drawn from an
in-memory snapshot of the study (:func:`snapshot`), so plotting never touches the database.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweep.penalties.config import penalty_text
from sweep.storage.engine import db_call
from sweep.storage.trial_record import Attr, TrialRecord
from sweep.study.budget import budget_of
from sweep.study.finalists import FinalistRow, finalist_ranking
from sweep.study.ranking import ranked, trial_label
from sweep.study.sweeps import Sweep

__all__ = [
    "CURVE_KEYS",
    "CURVE_NAMES",
    "KIND_ORDER",
    "ReportData",
    "TrialRow",
    "collect",
    "penalty_text",
    "snapshot",
]

_logger = logging.getLogger(__name__)

KIND_ORDER = ("none", "l1", "l2", "l1_l2", "custom")
#: Per-epoch metrics of the tutorial's table, in its column order, with their column names.
CURVE_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "reg_loss")
CURVE_NAMES = {"loss": "loss", "accuracy": "accuracy", "val_loss": "val loss", "val_accuracy": "val accuracy",
               "reg_loss": "reg loss"}


@dataclass
class TrialRow:
    """One trial, flattened for tables and figures."""

    number: int
    state: str
    value: float | None
    label: str
    config: dict[str, Any]
    config_hash: str | None
    phase: str
    seed: int | None
    epochs_run: int | None
    duration_s: float | None
    curves: dict[str, list[float]]
    diagnostics: dict[str, Any]
    fail_reason: str | None
    dedup_of: int | None
    epochs_saved: int
    gpu: str
    #: Per-epoch diagnostics: ``[{"epoch", "sparsity", "blocks": {block: {l1, l2, sparsity, activation}}}]``.
    by_epoch: list[dict[str, Any]] = field(default_factory=list)
    #: Number of the copy Optuna's retry callback queued of this (stopped or stale) trial, if any.
    requeued_as: int | None = None

    @property
    def short(self) -> str:
        """Compact label for legends and tables (the one trial label, :func:`sweep.study.ranking.trial_label`)."""
        return self.label

    def kind(self, placement: str) -> str:
        """The regularizer kind at ``placement`` (``none`` when not regularized)."""
        return str((self.config.get(placement) or {}).get("kind", "none"))

    def strength(self, placement: str) -> float | None:
        """l1 + l2 at ``placement`` (None for kind none): one axis for every kind."""
        penalty = self.config.get(placement) or {}
        total = float(penalty.get("l1", 0.0)) + float(penalty.get("l2", 0.0))
        return total or None

    @property
    def sparsity(self) -> float | None:
        """Fraction of near-zero kernel weights (``diagnostics``, or the older top-level attr)."""
        value = self.diagnostics.get("sparsity")
        return None if value is None else float(value)


@dataclass
class ReportData:
    """Everything the report renders for one study."""

    name: str
    spec: Any
    trials: list[FrozenTrial]
    rows: list[TrialRow]
    attrs: dict[str, Any]
    finalists: list[FinalistRow] = field(default_factory=list)
    #: Trials the study may run, from the budget table (``sweep extend`` raises it; the spec does not).
    budget_total: int | None = None
    generated: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))

    @property
    def counts(self) -> dict[str, int]:
        """Trials by state, in Optuna's state order."""
        counter = Counter(r.state for r in self.rows)
        return {s.name: counter[s.name] for s in TrialState if counter[s.name]}

    @property
    def complete(self) -> list[TrialRow]:
        """COMPLETE trials with a value, best first."""
        return ranked(r for r in self.rows if r.state == "COMPLETE")

    @property
    def search(self) -> list[TrialRow]:
        """COMPLETE search-phase trials, best first (finalist re-runs are ranked separately)."""
        return [r for r in self.complete if r.phase != "finalist"]

    @property
    def trained(self) -> list[TrialRow]:
        """COMPLETE search trials that trained themselves, best first.

        The statistics use these only: a dedup copy repeats another trial's result, and finalist
        re-runs are the top configs again, which would weigh the winners' kinds several times.
        """
        return [r for r in self.search if r.dedup_of is None]

    @property
    def failures(self) -> list[TrialRow]:
        """FAIL trials."""
        return [r for r in self.rows if r.state == "FAIL"]

    @property
    def pruned(self) -> list[TrialRow]:
        """PRUNED trials (stopped early by the pruner), by number."""
        return [r for r in self.rows if r.state == "PRUNED"]

    @property
    def reused(self) -> list[TrialRow]:
        """Trials that reused an equal config's result."""
        return [r for r in self.rows if r.dedup_of is not None]


def _per_epoch(t: FrozenTrial, artifacts: str | None, by_number: dict[int, FrozenTrial]) -> dict[str, Any]:
    """A trial's per-epoch record: ``curves`` and ``diagnostics_by_epoch``.

    Trials written before the record moved out of the attrs (or by a worker with no artifact
    store) carry both as attrs; newer ones point to ``trial-N-record.json`` in the artifact store
    (``record`` attr), read from ``artifacts`` (``SWEEP_ARTIFACTS``) or else the directory the
    worker wrote to. A trial that reused another's result shows that trial's record.
    """
    a = t.user_attrs
    pointer = TrialRecord(a).record
    if not pointer and a.get(Attr.DEDUP_OF) is not None and not a.get(Attr.CURVES):
        source = by_number.get(int(a[Attr.DEDUP_OF]))
        if source is not None and source.number != t.number:
            return _per_epoch(source, artifacts, {})
    out = {Attr.CURVES: a.get(Attr.CURVES) or {}, Attr.DIAGNOSTICS_BY_EPOCH: a.get(Attr.DIAGNOSTICS_BY_EPOCH) or []}
    if not pointer:
        return out
    artifact_id = str(pointer.get("artifact_id", ""))
    for directory in dict.fromkeys(d for d in (artifacts, pointer.get("store")) if d):
        path = Path(directory) / artifact_id
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        return {key: stored.get(key) or out[key] for key in out}
    _logger.warning("Trial %d: per-epoch record %s not found in %s; its curves are not shown", t.number,
                    artifact_id, " or ".join(d for d in (artifacts, pointer.get("store")) if d) or "no artifact store")
    return out


def _row(t: FrozenTrial, per_epoch: dict[str, Any] | None = None) -> TrialRow:
    a, record = t.user_attrs, TrialRecord(t.user_attrs)
    per_epoch = per_epoch or {}
    curves = per_epoch.get(Attr.CURVES, record.curves) or {}
    diagnostics = record.diagnostics
    for key in ("sparsity", "block_norms"):  # older workers wrote these as top-level attrs
        if key not in diagnostics and key in a:
            diagnostics[key] = a[key]
    return TrialRow(
        number=t.number,
        state=t.state.name,
        value=t.value,
        label=trial_label(t),
        config=record.config,
        config_hash=record.config_hash,
        phase=record.phase,
        seed=a.get(Attr.SEED),
        epochs_run=a.get(Attr.EPOCHS_RUN),
        duration_s=a.get(Attr.DURATION_S),
        curves={k: [float(x) for x in v] for k, v in curves.items() if isinstance(v, list)},
        diagnostics=diagnostics,
        fail_reason=record.fail_reason,
        dedup_of=record.dedup_of,
        epochs_saved=int(a.get(Attr.EPOCHS_SAVED, 0) or 0),
        gpu=str(record.worker.get("gpu", "")),
        by_epoch=list(per_epoch.get(Attr.DIAGNOSTICS_BY_EPOCH, a.get(Attr.DIAGNOSTICS_BY_EPOCH)) or []),
    )


def collect(sweep: Sweep, artifacts: str | None = None) -> ReportData:
    """Read a sweep's trials, attrs and finalist ranking.

    Args:
        sweep: The sweep.
        artifacts: The workers' artifact directory, where per-epoch records live (default:
            ``SWEEP_ARTIFACTS``, else the directory each trial's ``record`` names).
    """
    artifacts = artifacts or os.environ.get("SWEEP_ARTIFACTS") or None
    study = sweep.study
    trials = db_call(lambda: study.get_trials(deepcopy=True), what=f"list trials of {sweep.name!r}")
    attrs = db_call(lambda: study.user_attrs, what=f"read attrs of {sweep.name!r}")
    finalists = finalist_ranking(study) if any(t.user_attrs.get(Attr.PHASE) == "finalist" for t in trials) else []
    state = budget_of(study)  # the one budget: sweep status shows the same total
    total = None if state is None else state.total
    by_number = {t.number: t for t in trials}
    rows = [_row(t, _per_epoch(t, artifacts, by_number)) for t in trials]
    # Optuna's retry copy names the trial it copies: the last entry of its retry history.
    copies = {}
    for t in trials:
        history = t.system_attrs.get("retry_history") or ([t.system_attrs["failed_trial"]]
                                                           if "failed_trial" in t.system_attrs else [])
        if history:
            copies[int(history[-1])] = t.number
    for r in rows:
        r.requeued_as = copies.get(r.number)
    return ReportData(name=sweep.name, spec=sweep.spec, trials=trials, rows=rows,
                      attrs=attrs, finalists=finalists, budget_total=total)


def snapshot(data: ReportData) -> optuna.Study:
    """An in-memory copy of the study's finished search trials, for ``optuna.visualization``.

    Finalist re-runs are left out: a lucky seed of a re-run is not progress of the search, and
    the same config several times would skew the importances.
    """
    study = optuna.create_study(direction="maximize", study_name=data.name)
    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    study.add_trials([t for t in data.trials if t.state in finished and t.user_attrs.get(Attr.PHASE) != "finalist"])
    return study
