"""The recorded learning-curve table (``bench.search_record``) and its nearest-config lookup."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path
from typing import Any

from sweep.penalties.kinds import PLACEMENTS

__all__ = ["Table", "load_table"]

def _kinds(config: dict[str, Any]) -> tuple[str, ...]:
    return tuple((config.get(p) or {}).get("kind", "none") for p in PLACEMENTS)


@dataclasses.dataclass
class Table:
    """Curves by config and seed; :meth:`curve` answers for any config of the same space.

    Attributes:
        epochs: Epochs of every curve.
        seeds: Seeds recorded per config (``0 .. seeds-1``).
        rows: The recorded configs, each with ``config`` (canonical), ``curves`` and ``diverged``
            keyed by seed.
        ranges: ``{placement: {"l1"|"l2": (log10 low, log10 high)}}`` of the space.
        meta: What the recording file says about itself (setup, CPU time, machine).
    """

    epochs: int
    seeds: int
    rows: list[dict[str, Any]]
    ranges: dict[str, dict[str, tuple[float, float]]]
    meta: dict[str, Any]

    def __post_init__(self) -> None:
        self._by_kinds: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in self.rows:
            self._by_kinds.setdefault(_kinds(row["config"]), []).append(row)

    def _distance(self, a: dict[str, Any], b: dict[str, Any]) -> float:
        total = 0.0
        for placement, keys in self.ranges.items():
            for key, (low, high) in keys.items():
                if key in (a.get(placement) or {}):
                    x, y = math.log10(a[placement][key]), math.log10(b[placement][key])
                    total += ((x - y) / (high - low)) ** 2
        return total

    def nearest(self, config: dict[str, Any]) -> dict[str, Any]:
        """The recorded config with the same kinds and the nearest lambdas (log scale, ranges scaled to 1)."""
        candidates = self._by_kinds.get(_kinds(config))
        if not candidates:
            raise KeyError(f"no recorded config with kinds {_kinds(config)}")
        return min(candidates, key=lambda row: self._distance(config, row["config"]))

    def curve(self, config: dict[str, Any], seed: int) -> tuple[list[float], bool]:
        """``(validation accuracy per epoch, diverged)`` of the nearest recorded config at ``seed``."""
        row = self.nearest(config)
        return list(row["curves"][str(seed)]), bool(row["diverged"][str(seed)])

    def top_seed_noise(self, share: float = 0.1) -> float:
        """Mean difference between two seeds' best values over the best ``share`` of the configs."""
        def mean_best(row: dict[str, Any]) -> float:
            return statistics.fmean(max(c) for c in row["curves"].values())

        top = sorted(self.rows, key=mean_best, reverse=True)[:max(1, int(share * len(self.rows)))]
        diffs = [abs(max(r["curves"]["0"]) - max(r["curves"][str(s)])) for r in top for s in range(1, self.seeds)]
        return round(statistics.fmean(diffs), 5) if diffs else 0.0

    def mean_value(self, config: dict[str, Any], reduce: str) -> float:
        """The objective of the nearest recorded config averaged over its seeds (``reduce``: best or last)."""
        curves = [c for c in self.nearest(config)["curves"].values() if c]
        return statistics.fmean(max(c) if reduce == "best" else c[-1] for c in curves)

    def describe(self) -> dict[str, Any]:
        """Size, cost and spread of the table, for the result file."""
        best = {s: [max(r["curves"][str(s)]) for r in self.rows if r["curves"][str(s)]] for s in range(self.seeds)}
        pairs = [abs(max(r["curves"]["0"]) - max(r["curves"][str(s)])) for r in self.rows for s in range(1, self.seeds)]
        return {
            "configs": len(self.rows), "seeds": self.seeds, "epochs": self.epochs,
            "kind_combinations": len(self._by_kinds),
            "diverged_runs": sum(d for r in self.rows for d in r["diverged"].values()),
            "best_value_by_seed": {s: round(max(v), 4) for s, v in best.items()},
            "median_best_value": round(statistics.median(best[0]), 4),
            "mean_seed_to_seed_difference_of_best": round(statistics.fmean(pairs), 4) if pairs else None,
            "top_decile_seed_to_seed_difference_of_best": self.top_seed_noise(),
            **{k: self.meta.get(k) for k in ("training_cpu_s", "commit", "date", "machine", "setup")},
        }


def load_table(path: Path) -> Table:
    """Read ``search-curves-table.json``; only configs recorded at every seed are kept."""
    from bench.search_record import full_spec

    doc = json.loads(path.read_text(encoding="utf-8"))
    seeds = min(len(r["curves"]) for r in doc["configs"])
    rows = [r for r in doc["configs"] if len(r["curves"]) >= seeds]
    space = full_spec(int(doc["epochs"])).space
    ranges: dict[str, dict[str, tuple[float, float]]] = {}
    for placement in PLACEMENTS:
        ps = getattr(space, placement)
        ranges[placement] = {key: (math.log10(getattr(ps, key).low), math.log10(getattr(ps, key).high))
                             for key in ("l1", "l2") if getattr(ps, key, None) is not None}
    meta = {k: v for k, v in doc.items() if k != "configs"}
    return Table(epochs=int(doc["epochs"]), seeds=seeds, rows=rows, ranges=ranges, meta=meta)

