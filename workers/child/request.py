"""What a worker asks its trainer to do, as a plain dataclass (no Keras import).

It crosses the pipe to the training child as a dict, so it lives apart from ``workers.child.train``,
which imports Keras.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["TrainRequest"]


@dataclass
class TrainRequest:
    """One trial's training job.

    Args:
        config: Canonical regularizer config (see ``docs/contracts.md``).
        setup: The spec's training setup as a dict.
        trial_number: Optuna trial number (for logs and checkpoint names).
        seed: Seed for weights and shuffling. The train/validation split uses the spec's
            ``training.seed`` instead, so every trial (finalist seeds too) is scored on the
            same validation images.
        checkpoint_path: Where to save the full model after each epoch (None: no checkpoints).
        resume_path: A checkpoint to resume from (None: train from scratch).
        initial_epoch: The epoch to resume at (0-based; 0 when not resuming).
    """

    config: dict[str, Any]
    setup: dict[str, Any]
    trial_number: int = 0
    seed: int = 0
    checkpoint_path: str | None = None
    resume_path: str | None = None
    initial_epoch: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A picklable, JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainRequest:
        """Inverse of :meth:`to_dict`; unknown keys are ignored for forward compatibility."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
