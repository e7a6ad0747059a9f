"""One exception tree for regsweep.

Like KerasTuner's ``errors.py`` there are two kinds of failure:

* a *trial* error (:class:`TrialError` and subclasses) fails that trial, its traceback is
  stored on the trial and the worker goes on with the next one;
* everything else derived from :class:`RegsweepError` is *fatal*: the command stops with a
  non-zero exit and one clear message.
"""

from __future__ import annotations

__all__ = [
    "RegsweepError",
    "SpecError",
    "StorageError",
    "StudyNotFoundError",
    "BudgetExhausted",
    "DataError",
    "TrialError",
    "TrialDiverged",
    "TrialTimeout",
    "TrainerCrashed",
    "LauncherError",
]


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


class BudgetExhausted(RegsweepError):
    """No budget slot is left for another trial (not an error for a worker: it exits 0)."""

    exit_code = 0


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
