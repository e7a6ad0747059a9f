"""Deduplicate equivalent configs: never spend a GPU on a model that was already trained.

Configs whose canonical form is equal train the same model: kind ``none`` under any lambda, a
zero lambda, float noise, or a penalty at a placement that reaches no layer. With the same seed
they give the same result, so when a sampler proposes one that already finished, the worker
records that result on the new trial (``dedup_of``, ``epochs_saved``) instead of training.

Such a trial does not count toward the budget (``sweep.study.budget.counts_toward_budget``): a user who
asked for N trials expects N models trained on N different configs, not N minus the sampler's
repeats (a continued study used to spend slots on copies of trials that had already run). It stays
COMPLETE in the study so the sampler and the leaderboard see the value. After
``workers.parent.decisions.MAX_CONSECUTIVE_DUPLICATES`` of them in a row the space is taken as exhausted and
further duplicates count again (``dedup_counted``), so the study still finishes.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import optuna
from optuna.trial import TrialState

from sweep.penalties.config import RegularizerConfig
from sweep.storage.engine import db_call
from sweep.storage.trial_record import Attr, TrialRecord

__all__ = ["learned_no_effect", "find_duplicate", "reuse_result"]

_logger = logging.getLogger(__name__)


def learned_no_effect(trials: list[optuna.trial.FrozenTrial]) -> tuple[str, ...]:
    """Placements that reached no layer although a penalty was set there, learned from finished
    trials (all trials share one model, so one such trial per placement is proof enough)."""
    found: set[str] = set()
    for t in trials:
        record = TrialRecord(t.user_attrs)
        config = record.config
        for placement, count in record.placement_layers.items():
            if count == 0 and config.get(placement, {}).get("kind", "none") != "none":
                found.add(placement)
    return tuple(sorted(found))


def find_duplicate(study: optuna.Study, config: RegularizerConfig, seed: int) -> optuna.trial.FrozenTrial | None:
    """A COMPLETE trial that trained the same effective config with the same seed, if any.

    Args:
        study: The study to search.
        config: The new trial's config.
        seed: The new trial's seed (finalist seeds differ on purpose).
    """
    trials = db_call(lambda: study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), what="list trials")
    key = config.config_hash(learned_no_effect(trials))
    for t in trials:
        record = TrialRecord(t.user_attrs)
        if record.effective_hash == key and record.seed == seed and t.value is not None:
            return t
    return None


def reuse_result(study: optuna.Study, trial: optuna.Trial, source: optuna.trial.FrozenTrial) -> None:
    """Copy ``source``'s reports and attrs onto ``trial``; the caller then tells its value."""
    record = TrialRecord(source.user_attrs)
    origin = source.number if record.dedup_of is None else record.dedup_of
    epochs = record.epochs_run or 0
    _logger.info("Trial %d: same config and seed as trial %d; reusing its result (%d epochs saved, "
                 "no budget slot used)", trial.number, origin, epochs)
    for step, value in sorted(source.intermediate_values.items()):
        db_call(functools.partial(trial.report, value, step), what="report a reused value")
    copied = (Attr.CURVES, Attr.DIAGNOSTICS, Attr.EPOCHS_RUN, Attr.EFFECTIVE_HASH)
    attrs: dict[str, Any] = record.present(copied)
    attrs.update({Attr.DEDUP_OF: origin, Attr.EPOCHS_SAVED: epochs, Attr.DURATION_S: 0.0})
    for key, value in attrs.items():
        db_call(functools.partial(trial.set_user_attr, key, value), what=f"write trial attr {key!r}")
