"""The study: creating and loading a sweep, its sampler and pruner, the budget, finalists and ranking.

* :mod:`sweep.study.sweeps`: ``Sweep``, create/load (race-safe), sampler, pruner, ``UNLIMITED``;
* :mod:`sweep.study.budget`: the budget table (claim, release, extend, ``budget_state``; a trial's
  end settles or releases its slot with ``end_slot_on``), the budget rule and the stale-trial
  policy ``ReleaseSlotAndRetry`` (injected into ``open_storage``);
* :mod:`sweep.study.finalists`: the finalist phase and its ranking by mean over fresh seeds;
* :mod:`sweep.study.ranking`: the one ranking (``best_first``, ``ranked``) and the one trial label.
"""

from __future__ import annotations

from sweep.storage.trial_record import StopCause
from sweep.study.budget import (
    BudgetState,
    ReleaseSlotAndRetry,
    budget_state,
    claim,
    counts_toward_budget,
    extend,
    release,
)
from sweep.study.finalists import FinalistRow, finalist_ranking, open_finalist_phase
from sweep.study.ranking import best_first, ranked, trial_label, trial_value
from sweep.study.sweeps import (
    UNLIMITED,
    Sweep,
    budget_total,
    create_sweep,
    load_sweep,
    make_pruner,
    make_sampler,
)

__all__ = [
    "UNLIMITED",
    "BudgetState",
    "FinalistRow",
    "ReleaseSlotAndRetry",
    "StopCause",
    "Sweep",
    "best_first",
    "budget_state",
    "budget_total",
    "claim",
    "counts_toward_budget",
    "create_sweep",
    "extend",
    "finalist_ranking",
    "load_sweep",
    "make_pruner",
    "make_sampler",
    "open_finalist_phase",
    "ranked",
    "release",
    "trial_label",
    "trial_value",
]
