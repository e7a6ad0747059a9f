"""The worker's decisions as pure functions (workers.parent.decisions, and the finalist choice of
sweep.study.finalists): no database, no process."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from sweep.errors import MAX_CONSECUTIVE_FAILURES, SystematicFailure, TrialDiverged, TrialError
from sweep.study.finalists import choose_finalists
from workers.parent import decisions
from workers.parent.decisions import Ending, FailureStreak


def test_sampler_seeds_differ_per_token_and_follow_the_spec_seed() -> None:
    assert decisions.sampler_seed(7, "00ff") == decisions.sampler_seed(7, "00ff")
    assert decisions.sampler_seed(7, "00ff") != decisions.sampler_seed(7, "0100")
    assert decisions.sampler_seed(7, "00ff") != decisions.sampler_seed(8, "00ff")
    assert 0 <= decisions.sampler_seed(None, "ffffffff") < 2**31 - 1


def test_failure_cause_masks_numbers_and_keeps_the_type() -> None:
    a = decisions.failure_cause(TrialError("trial 3 crashed at epoch 2\nmore"))
    b = decisions.failure_cause(TrialError("trial 14 crashed at epoch 0"))
    assert a == b == "TrialError: trial N crashed at epoch N"
    assert decisions.failure_cause(ValueError("")) == "ValueError: "


def test_objective_value_best_or_last_epoch() -> None:
    history = {"val_accuracy": [0.5, 0.9, 0.7]}
    assert decisions.objective_value(history, "best") == 0.9
    assert decisions.objective_value(history, "last") == 0.7
    with pytest.raises(TrialError, match="no val_accuracy"):
        decisions.objective_value({"loss": [1.0]}, "best")


def test_streak_stops_after_the_same_cause_in_a_row_only() -> None:
    streak = FailureStreak()
    for n in range(MAX_CONSECUTIVE_FAILURES - 1):
        streak.note(TrialError(f"boom in trial {n}"))
        streak.check()
    streak.note(TrialError("boom in trial 99"))
    with pytest.raises(SystematicFailure, match=f"{MAX_CONSECUTIVE_FAILURES} trials in a row.*boom in trial 99"):
        streak.check()


def test_streak_is_broken_by_a_success_a_divergence_or_another_cause() -> None:
    streak = FailureStreak(limit=2)
    streak.note(TrialError("a"))
    streak.note(None)
    streak.note(TrialError("a"))
    streak.check()
    streak.note(TrialDiverged("loss is nan"))
    streak.note(TrialError("a"))
    streak.check()
    streak.note(TrialError("b"))
    streak.check()  # two causes in the last two


def test_room_for_trial_against_the_deadline() -> None:
    assert decisions.room_for_trial(100.0, now=1000.0, deadline=None)
    assert decisions.room_for_trial(100.0, now=1000.0, deadline=1100.5)
    assert not decisions.room_for_trial(100.0, now=1000.0, deadline=1100.0)


def test_duplicates_count_only_once_the_space_looks_exhausted() -> None:
    assert not decisions.duplicate_counts(decisions.MAX_CONSECUTIVE_DUPLICATES - 1)
    assert decisions.duplicate_counts(decisions.MAX_CONSECUTIVE_DUPLICATES)


def test_finalist_waits_are_bounded_and_need_a_finalist_phase() -> None:
    assert not decisions.wait_for_finalists(0, 0)
    assert decisions.wait_for_finalists(2, decisions.FINALIST_WAITS - 1)
    assert not decisions.wait_for_finalists(2, decisions.FINALIST_WAITS)


def test_orphaned_claims_are_stale_after_grace_plus_one_beat() -> None:
    assert not decisions.orphans_are_stale(100.0, now=170.0, grace_s=60.0, interval_s=10.0)
    assert decisions.orphans_are_stale(100.0, now=170.5, grace_s=60.0, interval_s=10.0)


def _verdict(**kw: object) -> tuple[str, str | None]:
    args: dict[str, object] = {"epoch": 0, "total": 3, "now": 0.0, "deadline": None, "stop_requested": False,
                               "should_prune": lambda: False, **kw}
    return decisions.epoch_verdict(**args)  # type: ignore[arg-type]


def test_epoch_verdict_order_deadline_then_shutdown_then_pruner() -> None:
    asked: list[bool] = []

    def pruner() -> bool:
        asked.append(True)
        return True

    assert _verdict() == ("continue", None)
    assert _verdict(should_prune=pruner) == ("prune", None) and asked == [True]
    assert _verdict(now=10.0, deadline=5.0, stop_requested=True, should_prune=pruner) == ("stop", "deadline")
    assert _verdict(stop_requested=True, should_prune=pruner) == ("stop", "shutdown")
    assert asked == [True]  # the pruner is not asked once the trial stops anyway
    # The last epoch past the deadline is a finished trial, not a cut one.
    assert _verdict(epoch=2, now=10.0, deadline=5.0) == ("continue", None)


@pytest.mark.parametrize(("stopped", "reason", "ending"), [
    (None, None, Ending.COMPLETE),
    ("prune", None, Ending.PRUNED),
    ("stop", "deadline", Ending.DEADLINE),
    ("stop", "shutdown", Ending.SHUTDOWN),
    ("stop", None, Ending.SHUTDOWN),
])
def test_ending_of_a_training_run(stopped: str | None, reason: str | None, ending: Ending) -> None:
    assert decisions.ending_of(stopped, reason) is ending


def _trial(number: int, value: float | None, config_hash: str, phase: str = "search",
           state: TrialState = TrialState.COMPLETE) -> FrozenTrial:
    trial = optuna.trial.create_trial(state=state, value=value if state == TrialState.COMPLETE else None,
                                      user_attrs={"config_hash": config_hash, "phase": phase})
    trial.number = number
    return trial


def test_finalists_are_the_best_distinct_search_configs() -> None:
    trials = [
        _trial(0, 0.70, "a"),
        _trial(1, 0.90, "b"),
        _trial(2, 0.90, "c"),  # ties go to the earlier trial
        _trial(3, 0.95, "b"),  # b's best run counts once
        _trial(4, 0.99, "d", phase="finalist"),  # finalist re-runs are not candidates
        _trial(5, None, "e", state=TrialState.FAIL),
    ]
    assert [t.number for t in choose_finalists(trials, 2)] == [3, 2]
    assert [t.number for t in choose_finalists(trials, 5)] == [3, 2, 0]
    assert choose_finalists(trials, 0) == []
