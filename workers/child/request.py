"""What a worker asks its trainer to do and what the training child answers, as plain dataclasses.

Both cross the pipe between the worker and its training child, so they live apart from
``workers.child.train``, which imports Keras.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["TrainRequest", "TrainResult"]


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


@dataclass
class TrainResult:
    """The training child's answer at the end of a trial (the trainer's dict, typed).

    The per-epoch curves and diagnostics are not in it: they reached the worker epoch by epoch
    (``on_epoch``), and the child drops the trainer's end-of-run copies (``history``,
    ``diagnostics_by_epoch``) instead of sending them a second time.

    Args:
        epochs_run: Epochs trained, resumed ones included.
        stopped: None, ``"prune"`` or ``"stop"`` (what ``on_epoch`` answered last).
        sparsity: Fraction of |w| < 1e-3 over regularizable kernels.
        block_norms: ``{block: {"l1", "l2", "sparsity"}}``.
        placement_layers: Layers each placement reached (0 = no effect).
        param_count: Model parameters.
        optimizer_steps: Optimizer steps taken.
        device: ``"cpu"`` or the GPU name.
        backend: The Keras backend.
        jit_compile: What ``jit_compile = "auto"`` resolved to.
        policy: The dtype policy name.
        trainer_rss_mb: The child's memory (the worker fills it in).
        trainer_trials: Trials this child has trained (the worker fills it in).
    """

    epochs_run: int = 0
    stopped: str | None = None
    sparsity: float | None = None
    block_norms: dict[str, Any] = field(default_factory=dict)
    placement_layers: dict[str, int] = field(default_factory=dict)
    param_count: int | None = None
    optimizer_steps: int | None = None
    device: str | None = None
    backend: str | None = None
    jit_compile: bool | None = None
    policy: str | None = None
    trainer_rss_mb: float | None = None
    trainer_trials: int | None = None

    @classmethod
    def from_trainer(cls, result: dict[str, Any]) -> TrainResult:
        """The typed result of a trainer's returned dict (see ``docs/contracts.md``).

        Keys it does not name (``history``, ``diagnostics_by_epoch``, a custom trainer's extras)
        are left out.

        Args:
            result: What the trainer returned.
        """
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in result.items() if k in names})

    def diagnostics(self) -> dict[str, Any]:
        """The trial's ``diagnostics`` attr."""
        return {
            "sparsity": self.sparsity,
            "block_norms": self.block_norms,
            "placement_layers": self.placement_layers,
            "param_count": self.param_count,
            "device": self.device,
            "backend": self.backend,
            "trainer_rss_mb": self.trainer_rss_mb,
            "trainer_trials": self.trainer_trials,
        }
