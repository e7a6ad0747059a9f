"""One exception tree for regsweep.

Like KerasTuner's ``errors.py`` failures are classified, and the class decides what happens:

* a *trial* error (:class:`TrialError` and subclasses: the trainer raised, the loss diverged, the
  training child crashed or timed out) fails that trial, which counts toward the budget; its
  traceback is stored on the trial and the worker goes on with the next one. After
  ``MAX_CONSECUTIVE_FAILURES`` (3, as KerasTuner) trial errors in a row *with the same cause*
  (diverged losses excepted: those are what a config does) the worker stops with
  :class:`SystematicFailure`, because the next trial would fail the same way;
* a *worker environment* error (:class:`WorkerEnvironmentError`: the trainer does not import, the
  data set is missing or malformed on this host) is not the trial's fault: the trial does not
  count, its slot is given back and a copy re-queued (another host may have the data); after
  3 in a row with the same cause the worker stops with :class:`SystematicFailure`;
* :class:`BudgetSpent` is a signal, not a failure: no budget slot was left for a trial's start,
  which it rolls back; the worker waits for slots in flight or ends;
* everything else derived from :class:`RegsweepError` is *fatal*: the command stops at once
  with a non-zero exit and one clear message (bad spec 2, storage 3, systematic failure 4).
"""

from __future__ import annotations

__all__ = [
    "RegsweepError",
    "SpecError",
    "StorageError",
    "StudyNotFoundError",
    "DataError",
    "TrialError",
    "TrialDiverged",
    "TrialTimeout",
    "TrainerCrashed",
    "LauncherError",
    "WorkerEnvironmentError",
    "SystematicFailure",
    "BudgetSpent",
    "MAX_CONSECUTIVE_FAILURES",
]

#: Trials in a row failing with the same cause before a worker stops (KerasTuner's default).
MAX_CONSECUTIVE_FAILURES = 3


class RegsweepError(Exception):
    """Base class of every error regsweep raises on purpose."""

    #: Process exit status the CLI uses for this error.
    exit_code: int = 1


class SpecError(RegsweepError):
    """A sweep spec (or a CLI argument standing in for one) is invalid.

    The message names the field and the value, e.g.
    ``Invalid space.kernel.l2.low: expected a positive float, received low=-1``.
    """

    exit_code = 2


class StorageError(RegsweepError):
    """The study storage cannot be reached or answered with an error.

    Messages never contain a password: URLs are masked before they are formatted.
    """

    exit_code = 3


class StudyNotFoundError(StorageError):
    """The named study does not exist in the storage."""


class DataError(RegsweepError):
    """A data source is missing, empty or malformed."""

    exit_code = 2


class TrialError(RegsweepError):
    """Fails one trial; the worker records the reason and goes on."""


class TrialDiverged(TrialError):
    """The training loss became NaN or infinite."""


class TrialTimeout(TrialError):
    """The trial ran past its per-trial time limit."""


class TrainerCrashed(TrialError):
    """The training process died (segfault, OOM kill) instead of returning."""


class LauncherError(RegsweepError):
    """The Docker launcher could not start, list or stop worker containers."""


class WorkerEnvironmentError(RegsweepError):
    """This worker cannot train any trial: the trainer does not import, or the data set is missing
    or malformed on this host. The trial is not counted and is re-queued for another worker."""

    exit_code = 4


class SystematicFailure(RegsweepError):
    """Several trials in a row failed with the same cause: the worker stops instead of burning
    the budget. The message names the cause."""

    exit_code = 4


class BudgetSpent(RegsweepError):
    """Every slot of a study's budget is claimed: raised inside a trial's start transaction to roll
    it back (:func:`sweep.study.budget.claim_on_or_raise`); a worker catches it and waits or ends."""
