"""What each placement did in a study: which placements were searched, accuracy by kind, and the
median accuracy with and without a penalty (the report's per-placement panels and table)."""

from __future__ import annotations

import statistics
from typing import Any

from sweep.penalties.kinds import PLACEMENTS
from sweep.report.data import KIND_ORDER, ReportData
from sweep.storage.trial_record import Attr

__all__ = ["kind_values", "placement_effects", "searched_placements", "unsearched_notes"]


def searched_placements(spec: Any) -> list[str]:
    """Placements the space searches: not tied to another and allowing more than kind none."""
    out = []
    for p in PLACEMENTS:
        ps = getattr(spec.space, p)
        if ps.tie is None and list(ps.kinds) != ["none"]:
            out.append(p)
    return out


def unsearched_notes(spec: Any) -> list[str]:
    """Why the other placements have no panel: tied to another, or never regularized."""
    notes = []
    for p in PLACEMENTS:
        ps = getattr(spec.space, p)
        if ps.tie is not None:
            notes.append(f"{p}: tied to {ps.tie} (same penalty)")
        elif list(ps.kinds) == ["none"]:
            notes.append(f"{p}: not searched (always none)")
    return notes


def kind_values(data: ReportData, placement: str) -> dict[str, list[float]]:
    """Validation accuracy of trained COMPLETE trials, grouped by the kind at ``placement``."""
    groups: dict[str, list[float]] = {}
    for r in data.trained:
        groups.setdefault(r.kind(placement), []).append(float(r.value))  # type: ignore[arg-type]  # trained: COMPLETE
    order = {k: i for i, k in enumerate(KIND_ORDER)}
    return dict(sorted(groups.items(), key=lambda kv: order.get(kv[0], len(order))))


def placement_effects(data: ReportData) -> list[dict[str, Any]]:
    """Per placement: trials with and without a penalty, their median accuracy and the difference."""
    out = []
    for p in PLACEMENTS:
        on = [float(r.value) for r in data.trained if r.kind(p) != "none"]  # type: ignore[arg-type]  # COMPLETE: valued
        off = [float(r.value) for r in data.trained if r.kind(p) == "none"]  # type: ignore[arg-type]  # as above
        no_effect = sum(1 for t in data.trials if p in (t.user_attrs.get(Attr.NO_EFFECT) or []))
        tie = getattr(getattr(data.spec.space, p), "tie", None)
        out.append({
            "placement": p,
            "tied_to": tie,
            "regularized": len(on),
            "unregularized": len(off),
            "median_on": statistics.median(on) if on else None,
            "median_off": statistics.median(off) if off else None,
            "best_on": max(on) if on else None,
            "delta": statistics.median(on) - statistics.median(off) if on and off else None,
            "no_effect": no_effect,
        })
    return out
