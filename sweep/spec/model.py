"""The sweep spec model: one TOML file describing a regularization sweep, validated with pydantic.

A spec is validated completely before anything touches storage, so a bad spec creates no study.
Every error names the field and the value, e.g.
``Invalid space.kernel.l2.low: expected a positive float, received low=-1``. The search space is
:mod:`sweep.spec.space`, reading a file :mod:`sweep.spec.load`.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from sweep.penalties.kinds import PLACEMENTS, is_custom_kind, kinds_using
from sweep.spec.base import Strict
from sweep.spec.space import LambdaRange, SearchSpace

__all__ = [
    "BudgetSpec",
    "FinalistSpec",
    "ObjectiveSpec",
    "PrunerSpec",
    "SamplerSpec",
    "StudySpec",
    "SweepSpec",
    "TrainingSetup",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_DATASET = re.compile(r"^(digits|(dir|npz|tfds):.+)$")


class TrainingSetup(Strict):
    """The fixed training setup every trial shares (see ``docs/contracts.md``)."""

    dataset: str = "digits"
    # Five stride-2 stages with padded 'valid' 3x3 depthwise convs need at least 31 px.
    input_size: int = Field(32, ge=32, le=1024)
    width: float = Field(0.25, gt=0, le=4)
    bn_momentum: float = Field(0.9, ge=0, lt=1)
    conv_bias: bool = False
    epochs: int = Field(5, ge=1, le=10000)
    batch_size: int = Field(64, ge=1, le=65536)
    # None: one pass over the training images per epoch. Set: an epoch is this many steps,
    # cycling through reshuffled passes (a small data set then gets a large one's steps x lr).
    steps_per_epoch: int | None = Field(None, ge=1, le=1_000_000)
    optimizer: Literal["sgd", "momentum", "adam"] = "sgd"
    learning_rate: float = Field(0.05, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    seed: int = 0
    val_fraction: float = Field(0.2, gt=0, lt=1)
    limit: int | None = Field(None, ge=1)
    mixed_precision: Literal["auto", "on", "off"] = "auto"
    jit_compile: Literal["auto", "on", "off"] = "auto"
    # Optimizer steps per call into the compiled train function. 16 trained +7-12% images/s in
    # steady epochs on CPU but traced its loop ~1-2 s longer: a whole 12-epoch trial took 10% longer
    # (18.2 vs 16.5 s at width 0.25, 36.9 vs 30-33 s at 1.0). Left at 1; a knob for accelerators.
    steps_per_execution: int = Field(1, ge=1, le=100_000)
    trainer: str = "keras"
    trainer_options: dict[str, float | int | str | bool] = Field(default_factory=dict)

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, v: str) -> str:
        if not _DATASET.match(v):
            raise ValueError(f"expected digits, dir:PATH, npz:PATH or tfds:NAME, received dataset={v!r}")
        scheme, _, rest = v.partition(":")
        if scheme in ("dir", "npz") and not Path(rest).exists():
            raise ValueError(f"{scheme} path does not exist, received dataset={v!r}")
        return v

    @field_validator("trainer")
    @classmethod
    def _trainer(cls, v: str) -> str:
        if v != "keras" and not is_custom_kind(v):
            raise ValueError(f"expected 'keras' or 'package.module:function', received trainer={v!r}")
        return v


class ObjectiveSpec(Strict):
    """What a trial is scored by: validation accuracy at its best or its last epoch."""

    metric: Literal["val_accuracy"] = "val_accuracy"
    reduce: Literal["best", "last"] = "best"


class SamplerSpec(Strict):
    """Optuna sampler. ``grid`` enqueues every distinct canonical config of the space once."""

    name: Literal["tpe", "random", "grid"] = "tpe"
    seed: int | None = None
    n_startup_trials: int = Field(5, ge=0)


class PrunerSpec(Strict):
    """Optuna pruner, fed the validation accuracy after each epoch."""

    name: Literal["none", "median", "hyperband"] = "none"
    n_warmup_steps: int = Field(1, ge=0)
    min_resource: int = Field(1, ge=1)
    reduction_factor: int = Field(3, ge=2)


class BudgetSpec(Strict):
    """Total trials across all workers, an optional deadline and a per-trial time limit."""

    trials: int | None = Field(None, ge=1, le=1_000_000)
    deadline: dt.datetime | None = None
    trial_timeout_s: float | None = Field(None, gt=0)

    @field_validator("deadline")
    @classmethod
    def _aware(cls, v: dt.datetime | None) -> dt.datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError(f"expected a time zone offset (e.g. +01:00), received deadline={v.isoformat()!r}")
        return v


class FinalistSpec(Strict):
    """After the search: re-run the top ``top_k`` configs with ``seeds`` extra seeds each."""

    top_k: int = Field(0, ge=0, le=100)
    seeds: int = Field(3, ge=2, le=100)


class StudySpec(Strict):
    """Study name and (optionally) where it is stored."""

    name: str
    storage: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"expected letters, digits, '.', '_' or '-' (max 100), received name={v!r}")
        return v


class SweepSpec(Strict):
    """A whole sweep: study, objective, search space, training setup, sampler, pruner, budget."""

    study: StudySpec
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec)
    space: SearchSpace
    training: TrainingSetup = Field(default_factory=TrainingSetup)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    finalists: FinalistSpec = Field(default_factory=FinalistSpec)
    #: Reuse the result of a finished trial whose canonical config and seed are equal.
    dedup: bool = True

    @model_validator(mode="after")
    def _grid(self) -> SweepSpec:
        if self.sampler.name != "grid":
            return self
        for p in PLACEMENTS:
            ps = getattr(self.space, p)
            for lam in ("l1", "l2"):
                rng: LambdaRange = getattr(ps, lam)
                if set(kinds_using(lam)) & set(ps.kinds) and ps.tie is None and rng.values is None:
                    raise ValueError(
                        f"space.{p}.{lam}: the grid sampler needs values = [...], received a range "
                        f"low={rng.low!r}, high={rng.high!r}"
                    )
        return self

    def public_dict(self) -> dict[str, Any]:
        """JSON-able dict for the study attrs: the storage URL (may hold a password) is dropped."""
        data = self.model_dump(mode="json")
        data["study"].pop("storage", None)
        return data
