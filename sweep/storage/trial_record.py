"""The trial record: the user attrs a worker writes on each trial, their keys and their types.

``docs/contracts.md`` describes each attr; this module is its code: :class:`Attr` names every key
(no module spells an attr key as a string literal), :class:`StopCause` the values of
``stop_cause``, and :class:`TrialRecord` reads a finished trial's attrs with their types, for
the worker's dedup and duration prediction, ``sweep status``/``export`` and the report.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["Attr", "StopCause", "TrialRecord"]


class Attr:
    """The user attr keys of a trial (see ``docs/contracts.md``, "Trial attributes")."""

    CONFIG: Final = "config"
    CONFIG_HASH: Final = "config_hash"
    EFFECTIVE_HASH: Final = "effective_hash"
    SEED: Final = "seed"
    PHASE: Final = "phase"
    FINALIST_OF: Final = "finalist_of"
    WORKER: Final = "worker"
    CURVES: Final = "curves"
    EPOCHS_RUN: Final = "epochs_run"
    DURATION_S: Final = "duration_s"
    DIAGNOSTICS: Final = "diagnostics"
    DIAGNOSTICS_BY_EPOCH: Final = "diagnostics_by_epoch"
    #: Where a finished trial's per-epoch record (curves, diagnostics by epoch) lives: an artifact.
    RECORD: Final = "record"
    NO_EFFECT: Final = "no_effect"
    CHECKPOINT: Final = "checkpoint"
    MODEL: Final = "model"
    RESUMED: Final = "resumed"
    DEDUP_OF: Final = "dedup_of"
    DEDUP_COUNTED: Final = "dedup_counted"
    EPOCHS_SAVED: Final = "epochs_saved"
    FAIL_REASON: Final = "fail_reason"
    STOP_CAUSE: Final = "stop_cause"
    TRACEBACK: Final = "traceback"


class StopCause(str, enum.Enum):
    """Why a trial ended early; stored as the ``stop_cause`` user attr (its ``value``)."""

    #: The trial itself failed (trainer raised, crash, timeout, NaN): it used its slot.
    TRIAL_ERROR = "trial_error"
    #: Its worker was stopped on purpose (SIGINT/SIGTERM): slot given back, copy re-queued.
    SHUTDOWN = "shutdown"
    #: Stopped between epochs at the sweep's deadline, or failed by the night closer.
    DEADLINE = "deadline"
    #: This worker cannot train (trainer import, data missing): slot given back, copy re-queued.
    ENVIRONMENT = "environment"


@dataclass(frozen=True)
class TrialRecord:
    """A trial's user attrs, read with their types (missing ones are None or empty).

    Args:
        attrs: The trial's user attrs (``FrozenTrial.user_attrs``).
    """

    attrs: Mapping[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        """The canonical regularizer config ({} for a trial that never started)."""
        return dict(self.attrs.get(Attr.CONFIG) or {})

    @property
    def config_hash(self) -> str | None:
        """Hash of the canonical config."""
        return self.attrs.get(Attr.CONFIG_HASH)

    @property
    def effective_hash(self) -> str | None:
        """The dedup key: the config hash with placements that reached no layer treated as none."""
        return self.attrs.get(Attr.EFFECTIVE_HASH)

    @property
    def seed(self) -> int | None:
        """The trial's training seed."""
        seed = self.attrs.get(Attr.SEED)
        return None if seed is None else int(seed)

    @property
    def phase(self) -> str:
        """``"search"`` or ``"finalist"``."""
        return str(self.attrs.get(Attr.PHASE, "search"))

    @property
    def finalist_of(self) -> int | None:
        """On a finalist re-run: the number of the search trial whose config it repeats."""
        source = self.attrs.get(Attr.FINALIST_OF)
        return None if source is None else int(source)

    @property
    def written_phase(self) -> str | None:
        """The phase as written: None on a trial no worker has started (``sweep export`` shows it empty)."""
        phase = self.attrs.get(Attr.PHASE)
        return None if phase is None else str(phase)

    @property
    def worker(self) -> dict[str, Any]:
        """Who ran it: host, pid, gpu, backend, versions, id, index, sampler_seed."""
        return dict(self.attrs.get(Attr.WORKER) or {})

    @property
    def curves(self) -> dict[str, list[float]]:
        """Per-epoch metric lists."""
        return dict(self.attrs.get(Attr.CURVES) or {})

    @property
    def record(self) -> dict[str, Any]:
        """The per-epoch record's artifact: ``{"artifact_id", "store"}`` ({} when kept in attrs)."""
        return dict(self.attrs.get(Attr.RECORD) or {})

    @property
    def epochs_run(self) -> int | None:
        """Epochs trained (resumed ones included)."""
        epochs = self.attrs.get(Attr.EPOCHS_RUN)
        return None if epochs is None else int(epochs)

    @property
    def duration_s(self) -> float | None:
        """Wall seconds the trial took in its worker."""
        seconds = self.attrs.get(Attr.DURATION_S)
        return None if seconds is None else float(seconds)

    @property
    def diagnostics(self) -> dict[str, Any]:
        """End-of-trial diagnostics (sparsity, block norms, placement layers, device, ...)."""
        return dict(self.attrs.get(Attr.DIAGNOSTICS) or {})

    @property
    def sparsity(self) -> float | None:
        """Fraction of near-zero kernel weights at the end (``diagnostics.sparsity``)."""
        sparsity = self.diagnostics.get("sparsity")
        return None if sparsity is None else float(sparsity)

    @property
    def placement_layers(self) -> dict[str, int]:
        """How many layers each placement's penalty reached (``diagnostics.placement_layers``; 0 = no effect)."""
        return {p: int(n) for p, n in (self.diagnostics.get("placement_layers") or {}).items()}

    @property
    def checkpoint(self) -> dict[str, Any] | None:
        """The latest epoch checkpoint: ``{"artifact_id", "epoch", "slot", "slots"}`` (None: none, or deleted)."""
        record = self.attrs.get(Attr.CHECKPOINT)
        return dict(record) if record else None

    @property
    def epochs_saved(self) -> int:
        """Epochs not trained because the result was reused (0 on other trials)."""
        return int(self.attrs.get(Attr.EPOCHS_SAVED) or 0)

    def present(self, keys: Iterable[str]) -> dict[str, Any]:
        """The values of those of ``keys`` the trial has, as stored (to copy attrs verbatim)."""
        return {k: self.attrs[k] for k in keys if k in self.attrs}

    @property
    def dedup_of(self) -> int | None:
        """Number of the trial whose result this one reused."""
        source = self.attrs.get(Attr.DEDUP_OF)
        return None if source is None else int(source)

    @property
    def fail_reason(self) -> str | None:
        """One line for people, on a FAIL."""
        return self.attrs.get(Attr.FAIL_REASON)

    @property
    def stop_cause(self) -> StopCause | None:
        """Why a FAIL ended (None on trials failed as stale or written before the attr existed)."""
        cause = self.attrs.get(Attr.STOP_CAUSE)
        return None if cause is None else StopCause(cause)
