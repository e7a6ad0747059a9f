"""The one ranking of trials and the one label of a trial.

``sweep best``, ``sweep status``, the report's leaderboard and tables, and the finalist choice all
rank with :func:`best_first` (highest value first, ties to the earlier trial) and name a trial
with :func:`trial_label`; nothing else sorts trials by value or builds a label.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, TypeVar

from optuna.trial import FrozenTrial

from sweep.penalties.config import config_label
from sweep.storage.trial_record import TrialRecord

__all__ = ["Ranked", "best_first", "ranked", "trial_label", "trial_value"]


class Ranked(Protocol):
    """Anything with a trial number and an objective value: an Optuna trial or a report row."""

    @property
    def number(self) -> int: ...

    @property
    def value(self) -> float | None: ...


R = TypeVar("R", bound=Ranked)


def trial_value(trial: Ranked) -> float:
    """The objective value of a trial that has one (callers keep only such trials).

    Args:
        trial: A trial (or report row) with a value.

    Raises:
        ValueError: The trial has no value (a filter upstream let it through).
    """
    if trial.value is None:
        raise ValueError(f"trial {trial.number} has no value")
    return float(trial.value)


def best_first(trial: Ranked) -> tuple[float, int]:
    """Sort key of the ranking: the highest value first, ties to the earlier trial.

    Args:
        trial: A trial (or report row) with a value.
    """
    return (-trial_value(trial), trial.number)


def ranked(trials: Iterable[R]) -> list[R]:
    """The trials that have a value, best first.

    Args:
        trials: Trials or report rows; those without a value are left out.
    """
    return sorted((t for t in trials if t.value is not None), key=best_first)


def trial_label(trial: FrozenTrial | dict[str, Any] | None) -> str:
    """Human label of a trial's regularizers, from its stored canonical config.

    Args:
        trial: An Optuna trial, or its canonical config dict (None or empty: not started).
    """
    config = TrialRecord(trial.user_attrs).config if isinstance(trial, FrozenTrial) else trial
    return config_label(config)
