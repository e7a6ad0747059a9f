"""The leaderboard's rows: one pure function over ranked trials, drawn by three thin renderers.

``sweep best`` (a terminal table, or JSON with ``--json``), the HTML report and the markdown summary
all take their rows from :func:`leaderboard_rows`, which orders with the one ranking
(:func:`sweep.study.ranking.ranked`) and names each trial with the one label; the renderers only
format cells. Which trials enter is the caller's choice: ``sweep best`` every COMPLETE trial, the
report the search phase (finalist re-runs have their own table).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from optuna.trial import FrozenTrial

from sweep.penalties.config import penalty_text
from sweep.penalties.kinds import PLACEMENTS
from sweep.storage.trial_record import TrialRecord
from sweep.study.ranking import ranked, trial_label, trial_value

__all__ = ["LeaderboardEntry", "LeaderboardRow", "TrialEntry", "leaderboard_rows"]


class LeaderboardEntry(Protocol):
    """What a leaderboard row is made of: a report row, or a :class:`TrialEntry` of an Optuna trial."""

    @property
    def number(self) -> int: ...

    @property
    def value(self) -> float | None: ...

    @property
    def label(self) -> str: ...

    @property
    def config(self) -> dict[str, Any]: ...

    @property
    def config_hash(self) -> str | None: ...

    @property
    def phase(self) -> str: ...

    @property
    def epochs_run(self) -> int | None: ...

    @property
    def duration_s(self) -> float | None: ...

    @property
    def dedup_of(self) -> int | None: ...


@dataclass(frozen=True)
class TrialEntry:
    """An Optuna trial read through its :class:`~sweep.storage.trial_record.TrialRecord`."""

    number: int
    value: float | None
    label: str
    config: dict[str, Any]
    config_hash: str | None
    phase: str
    epochs_run: int | None
    duration_s: float | None
    dedup_of: int | None

    @classmethod
    def of(cls, trial: FrozenTrial) -> TrialEntry:
        """The entry of ``trial``."""
        record = TrialRecord(trial.user_attrs)
        return cls(number=trial.number, value=trial.value, label=trial_label(trial), config=record.config,
                   config_hash=record.config_hash, phase=record.phase, epochs_run=record.epochs_run,
                   duration_s=record.duration_s, dedup_of=record.dedup_of)


@dataclass(frozen=True)
class LeaderboardRow:
    """One leaderboard row; ``rank`` 1 is the best."""

    rank: int
    number: int
    value: float
    label: str
    #: Penalty text per placement (:func:`sweep.penalties.config.penalty_text`), in ``PLACEMENTS`` order.
    penalties: dict[str, str]
    epochs: int | None
    duration_s: float | None
    config_hash: str | None
    phase: str
    #: Number of the trial whose result this one reused (None: trained itself).
    reused: int | None

    def as_json(self) -> dict[str, Any]:
        """The row as ``sweep best --json`` prints it (the rank is the list position)."""
        return {"number": self.number, "value": self.value, "label": self.label, "penalties": self.penalties,
                "epochs": self.epochs, "duration_s": self.duration_s, "config_hash": self.config_hash,
                "phase": self.phase, "reused": self.reused}


def leaderboard_rows(entries: Iterable[LeaderboardEntry], top: int) -> list[LeaderboardRow]:
    """The best ``top`` of ``entries`` (those with a value), ranked by :func:`~sweep.study.ranking.ranked`.

    Args:
        entries: Report rows or :class:`TrialEntry`; their order does not matter.
        top: At most this many rows.
    """
    return [
        LeaderboardRow(
            rank=rank, number=e.number, value=trial_value(e), label=e.label,
            penalties={p: penalty_text((e.config or {}).get(p)) for p in PLACEMENTS},
            epochs=e.epochs_run, duration_s=e.duration_s, config_hash=e.config_hash, phase=e.phase,
            reused=e.dedup_of,
        )
        for rank, e in enumerate(ranked(entries)[:top], 1)
    ]
