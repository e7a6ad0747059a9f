"""The worker's decisions as pure functions: no database, no clock, no process (tested in
``tests/test_worker_decisions.py``); the loop, the trial runner and the epoch handler feed them
what they read and act on what they answer.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from sweep.errors import MAX_CONSECUTIVE_FAILURES, SystematicFailure, TrialDiverged, TrialError

__all__ = [
    "FINALIST_WAITS",
    "MAX_CONSECUTIVE_DUPLICATES",
    "Ending",
    "FailureStreak",
    "duplicate_counts",
    "ending_of",
    "epoch_verdict",
    "failure_cause",
    "objective_value",
    "orphans_are_stale",
    "room_for_trial",
    "sampler_seed",
    "wait_for_finalists",
]

#: Reused duplicates in a row after which they count toward the budget again: the sampler keeps
#: proposing configs that already ran (a small categorical space is exhausted, or TPE has settled
#: on a config without lambdas), and the study must still be able to finish.
MAX_CONSECUTIVE_DUPLICATES = 20
#: Polls a worker waits, with the budget spent, for another worker that may have just won the
#: finalist flip and still be enqueuing the finalists.
FINALIST_WAITS = 3


def sampler_seed(spec_seed: int | None, token: str) -> int:
    """This process's sampler seed: the spec's seed mixed with the worker's random identity token.

    Two workers (any host, any index) never share a seed, so they do not propose the same
    configs; the seed is recorded in the trial's ``worker`` attr so a run can be replayed.

    Args:
        spec_seed: ``sampler.seed`` of the spec (None: none given).
        token: The worker's random hex token.
    """
    mixed = (0 if spec_seed is None else int(spec_seed)) * 1_000_003 + int(token, 16)
    return mixed % (2**31 - 1)


def failure_cause(error: BaseException) -> str:
    """What "the same cause" means for consecutive failures: the error type and its message with
    numbers (trial numbers, epochs, pids) masked.

    Args:
        error: The trial's error (a remote one carries the child's type name).
    """
    name = getattr(error, "type_name", type(error).__name__)
    return f"{name}: " + re.sub(r"\d+", "N", str(error).splitlines()[0] if str(error) else "")


def objective_value(history: dict[str, list[float]], reduce: str) -> float:
    """Score of a finished trial: validation accuracy at its best or its last epoch.

    Args:
        history: Per-epoch metric lists.
        reduce: ``"best"`` or ``"last"`` (the spec's ``objective.reduce``).

    Raises:
        TrialError: No validation accuracy was reported.
    """
    values = history.get("val_accuracy") or []
    if not values:
        raise TrialError("the trainer reported no val_accuracy")
    return float(max(values) if reduce == "best" else values[-1])


@dataclass
class FailureStreak:
    """The causes of the failures just seen in a row; a success or a diverged loss ends the streak.

    Args:
        limit: Failures in a row with one cause that make a systematic failure.
    """

    limit: int = MAX_CONSECUTIVE_FAILURES
    causes: list[str] = field(default_factory=list)
    last: str = ""

    def note(self, error: BaseException | None) -> None:
        """Record a trial's outcome: None for a success, else its error.

        Args:
            error: The error that ended the trial, or None.
        """
        if error is None or isinstance(error, TrialDiverged):  # a diverged loss is what a config does
            self.causes.clear()
            return
        self.causes.append(failure_cause(error))
        self.last = str(error).splitlines()[0] if str(error) else type(error).__name__

    def check(self) -> None:
        """Raise :class:`SystematicFailure` when the last ``limit`` failures had one cause."""
        if len(self.causes) >= self.limit and len(set(self.causes[-self.limit:])) == 1:
            raise SystematicFailure(
                f"{self.limit} trials in a row failed with the same cause, stopping this worker: {self.last}")


def room_for_trial(predicted_s: float, now: float, deadline: float | None) -> bool:
    """Whether a trial predicted to take ``predicted_s`` can still finish before the deadline.

    Args:
        predicted_s: Predicted trial duration in seconds.
        now: Current time (seconds since the epoch).
        deadline: The sweep's deadline (seconds since the epoch), None for none.
    """
    return deadline is None or deadline - now > predicted_s


def duplicate_counts(duplicates_in_a_row: int) -> bool:
    """Whether a reused duplicate takes a budget slot: only once the space looks exhausted.

    Args:
        duplicates_in_a_row: Reused duplicates this worker saw just before this one.
    """
    return duplicates_in_a_row >= MAX_CONSECUTIVE_DUPLICATES


def wait_for_finalists(top_k: int, waits: int) -> bool:
    """With the budget spent and the flip lost: poll again, as the finalists may still be coming?

    Args:
        top_k: The spec's ``finalists.top_k`` (0: no finalist phase).
        waits: Polls already spent waiting.
    """
    return bool(top_k) and waits < FINALIST_WAITS


def orphans_are_stale(orphan_since: float, now: float, grace_s: float, interval_s: float) -> bool:
    """Whether claimed slots with no RUNNING trial have waited long enough to be released.

    Args:
        orphan_since: When the claims were first seen without a trial (monotonic seconds).
        now: Current monotonic time.
        grace_s: The storage's grace period.
        interval_s: The heartbeat interval.
    """
    return now - orphan_since > grace_s + interval_s


def epoch_verdict(*, epoch: int, total: int, now: float, deadline: float | None, stop_requested: bool,
                  should_prune: Callable[[], bool]) -> tuple[str, str | None]:
    """What the trainer does after an epoch: ``(answer, stop reason)``.

    The answer is ``"continue"``, ``"prune"`` or ``"stop"`` (with the reason ``"deadline"`` or
    ``"shutdown"``). A trial that just ran its last epoch is done, not cut off by the deadline.

    Args:
        epoch: The epoch just finished (0-based).
        total: Epochs the trial runs.
        now: Current time (seconds since the epoch).
        deadline: The sweep's deadline, None for none.
        stop_requested: Whether the worker was asked to stop.
        should_prune: Asks the pruner (called last, only when nothing else stopped the trial).
    """
    last_epoch = epoch + 1 >= total
    if deadline is not None and now >= deadline and not last_epoch:
        return "stop", "deadline"
    if stop_requested:
        return "stop", "shutdown"
    if should_prune():
        return "prune", None
    return "continue", None


class Ending(enum.Enum):
    """How a trial that trained to the end of its run is closed."""

    COMPLETE = "complete"
    PRUNED = "pruned"
    DEADLINE = "deadline"
    SHUTDOWN = "shutdown"


def ending_of(stopped: str | None, stop_reason: str | None) -> Ending:
    """The ending of a training run from the trainer's ``stopped`` and the handler's stop reason.

    Args:
        stopped: The result's ``stopped``: None, ``"prune"`` or ``"stop"``.
        stop_reason: Why the epoch handler answered ``"stop"`` (``"deadline"`` or ``"shutdown"``).
    """
    if stopped is None:
        return Ending.COMPLETE
    if stopped == "prune":
        return Ending.PRUNED
    return Ending.DEADLINE if stop_reason == "deadline" else Ending.SHUTDOWN
