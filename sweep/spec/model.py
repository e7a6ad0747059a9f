"""The sweep spec: one TOML file describing a regularization sweep, validated with pydantic.

A spec is validated completely before anything touches storage, so a bad spec creates no study.
Every error names the field and the value, e.g.
``Invalid space.kernel.l2.low: expected a positive float, received low=-1``.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import math
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sweep.errors import SpecError
from sweep.penalties.kinds import BUILTIN_KINDS, PLACEMENTS, is_custom_kind, kinds_using
from sweep.refs import split_ref

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "LambdaRange",
    "PlacementSpace",
    "SearchSpace",
    "TrainingSetup",
    "ObjectiveSpec",
    "SamplerSpec",
    "PrunerSpec",
    "BudgetSpec",
    "FinalistSpec",
    "StudySpec",
    "SweepSpec",
    "check_deadline_ahead",
    "load_spec",
    "parse_spec",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_DATASET = re.compile(r"^(digits|(dir|npz|tfds):.+)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"expected a positive float, received {name}={value!r}")
    return value


class LambdaRange(_Strict):
    """Either a log-uniform range (``low``, ``high``) or a list of ``values`` (for grids)."""

    low: float | None = None
    high: float | None = None
    values: list[float] | None = None

    @field_validator("low", "high", "values", mode="before")
    @classmethod
    def _no_bools(cls, v: Any, info: Any) -> Any:
        # Pydantic turns `low = true` into 1.0 before `_positive` could reject the bool.
        if isinstance(v, bool) or (isinstance(v, list) and any(isinstance(x, bool) for x in v)):
            raise ValueError(f"expected a positive float, received {info.field_name}={v!r}")
        return v

    @field_validator("low", "high")
    @classmethod
    def _bounds(cls, v: float | None, info: Any) -> float | None:
        return None if v is None else _positive(info.field_name, v)

    @field_validator("values")
    @classmethod
    def _values(cls, v: list[float] | None) -> list[float] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("expected at least one value, received values=[]")
        for x in v:
            _positive("values", x)
        return sorted(set(v))

    @model_validator(mode="after")
    def _shape(self) -> LambdaRange:
        has_range = self.low is not None or self.high is not None
        if has_range and self.values is not None:
            raise ValueError("give either low/high or values, not both")
        if not has_range and self.values is None:
            raise ValueError("expected low and high (a log range) or values (a list)")
        if has_range and (self.low is None or self.high is None):
            raise ValueError(f"a range needs both bounds, received low={self.low!r}, high={self.high!r}")
        if has_range and self.low > self.high:  # type: ignore[operator]  # both set: checked just above
            raise ValueError(f"expected low <= high, received low={self.low!r}, high={self.high!r}")
        return self

    @property
    def choices(self) -> list[float]:
        """Grid values (a range contributes its two ends)."""
        return list(self.values) if self.values is not None else [self.low, self.high]  # type: ignore[list-item]  # see _shape


_DEFAULT_RANGE = {"low": 1e-6, "high": 1e-2}


class PlacementSpace(_Strict):
    """Search space of one placement: allowed kinds and their lambdas.

    ``tie`` makes this placement use exactly the penalty sampled for another one (the tutorial
    puts the same regularizer on kernel and bias). ``head`` lists the kinds whose penalty also
    reaches the Dense head (default: every kind); the tutorial's is ``["l2"]``: its L1
    experiment leaves the head unregularized, its L2 experiment does not.
    """

    kinds: list[str] = Field(default_factory=lambda: ["none"])
    l1: LambdaRange = Field(default_factory=lambda: LambdaRange(**_DEFAULT_RANGE))
    l2: LambdaRange = Field(default_factory=lambda: LambdaRange(**_DEFAULT_RANGE))
    scale: LambdaRange | None = None
    tie: Literal["kernel", "bias", "activity"] | None = None
    head: list[str] | None = None

    @model_validator(mode="after")
    def _head(self) -> PlacementSpace:
        if self.head is not None:
            stray = [kind for kind in self.head if kind not in self.kinds]
            if stray:
                raise ValueError(f"head: expected kinds of this placement {self.kinds}, received head={self.head!r}")
        return self

    def reaches_head(self, kind: str) -> bool:
        """Whether a penalty of ``kind`` at this placement also regularizes the Dense head."""
        return self.head is None or kind in self.head

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, kinds: list[str]) -> list[str]:
        if not kinds:
            raise ValueError("expected at least one kind, received kinds=[]")
        for kind in kinds:
            if kind in BUILTIN_KINDS:
                continue
            if not is_custom_kind(kind):
                raise ValueError(
                    f"expected none, l1, l2, l1_l2 or 'package.module:function', received kind={kind!r}"
                )
            module, _ = split_ref(kind)
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                raise ValueError(f"cannot find module {module!r} of custom kind, received kind={kind!r}")
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"expected each kind once, received kinds={kinds!r}")
        return kinds


class SearchSpace(_Strict):
    """One :class:`PlacementSpace` per placement; each defaults to ``kinds = ["none"]``."""

    kernel: PlacementSpace = Field(default_factory=PlacementSpace)
    bias: PlacementSpace = Field(default_factory=PlacementSpace)
    activity: PlacementSpace = Field(default_factory=PlacementSpace)

    @model_validator(mode="after")
    def _ties(self) -> SearchSpace:
        for placement in PLACEMENTS:
            target = getattr(self, placement).tie
            if target is None:
                continue
            if target == placement:
                raise ValueError(f"{placement}.tie: a placement cannot tie to itself, received tie={target!r}")
            if getattr(self, target).tie is not None:
                raise ValueError(f"{placement}.tie: {target!r} is itself tied, received tie={target!r}")
        if all(
            getattr(self, p).tie is None and getattr(self, p).kinds == ["none"] for p in PLACEMENTS
        ):
            raise ValueError("empty search space: every placement allows only kind 'none'")
        return self


class TrainingSetup(_Strict):
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


class ObjectiveSpec(_Strict):
    """What a trial is scored by: validation accuracy at its best or its last epoch."""

    metric: Literal["val_accuracy"] = "val_accuracy"
    reduce: Literal["best", "last"] = "best"


class SamplerSpec(_Strict):
    """Optuna sampler. ``grid`` enqueues every distinct canonical config of the space once."""

    name: Literal["tpe", "random", "grid"] = "tpe"
    seed: int | None = None
    n_startup_trials: int = Field(5, ge=0)


class PrunerSpec(_Strict):
    """Optuna pruner, fed the validation accuracy after each epoch."""

    name: Literal["none", "median", "hyperband"] = "none"
    n_warmup_steps: int = Field(1, ge=0)
    min_resource: int = Field(1, ge=1)
    reduction_factor: int = Field(3, ge=2)


class BudgetSpec(_Strict):
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


class FinalistSpec(_Strict):
    """After the search: re-run the top ``top_k`` configs with ``seeds`` extra seeds each."""

    top_k: int = Field(0, ge=0, le=100)
    seeds: int = Field(3, ge=2, le=100)


class StudySpec(_Strict):
    """Study name and (optionally) where it is stored."""

    name: str
    storage: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"expected letters, digits, '.', '_' or '-' (max 100), received name={v!r}")
        return v


class SweepSpec(_Strict):
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


def _format(error: Mapping[str, Any]) -> str:
    loc = [str(x) for x in error["loc"] if not str(x).startswith("function-")]
    where = ".".join(loc) or "spec"
    msg = error["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
        # Model-level validators name the sub-field themselves ("kernel.tie: ...").
        sub = re.match(r"^([a-z_][\w.]*): (.*)$", msg, re.S)
        if sub:
            where = sub[1] if where == "spec" else f"{where}.{sub[1]}"
            msg = sub[2]
        return f"Invalid {where}: {msg}"
    field = loc[-1] if loc else "spec"
    if error["type"] == "extra_forbidden":
        return f"Invalid {where}: unknown field, received {field}={error.get('input')!r}"
    if error["type"] == "missing":
        return f"Invalid {where}: field required"
    return f"Invalid {where}: {msg[0].lower()}{msg[1:]}, received {field}={error.get('input')!r}"


def check_deadline_ahead(spec: SweepSpec, now: dt.datetime | None = None) -> None:
    """Refuse a deadline that has passed: workers would start nothing and exit 0.

    Checked when a study is created from a spec, not when it is loaded back (a finished night's
    study keeps its past deadline).

    Args:
        spec: The validated spec.
        now: The current time (default: now, UTC).

    Raises:
        SpecError: ``budget.deadline`` is not in the future.
    """
    deadline = spec.budget.deadline
    now = now or dt.datetime.now(dt.timezone.utc)
    if deadline is not None and deadline <= now:
        raise SpecError(
            f"Invalid budget.deadline: it is in the past (now {now.replace(microsecond=0).isoformat()}), "
            f"received deadline={deadline.isoformat()!r}"
        )


def parse_spec(data: dict[str, Any], *, source: str = "spec") -> SweepSpec:
    """Validate a spec given as a dict (e.g. read back from study attrs).

    Args:
        data: The spec's content.
        source: Where it came from, for messages.

    Raises:
        SpecError: With one line per problem, each naming field and value.
    """
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as error:
        lines = [_format(e) for e in error.errors(include_url=False)]
        raise SpecError("\n".join(lines) if source == "spec" else f"{source}: " + "\n".join(lines)) from None


def load_spec(path: str | Path, *, name: str | None = None, dataset: str | None = None) -> SweepSpec:
    """Read and validate a TOML spec file.

    Args:
        path: The ``.toml`` file.
        name: Overrides ``study.name`` (e.g. a dated name from the scheduler).
        dataset: Overrides ``training.dataset`` (a preset on the user's own images).

    Raises:
        SpecError: Missing file, TOML syntax error, or invalid content.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"Invalid spec: file not found, received path={str(path)!r}") from None
    except IsADirectoryError:
        raise SpecError(f"Invalid spec: expected a .toml file, received a directory, path={str(path)!r}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(
            f"Invalid spec: cannot read the file ({error.__class__.__name__}), received path={str(path)!r}"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"Invalid spec {path}: TOML syntax error: {error}") from None
    if name is not None:
        data.setdefault("study", {})["name"] = name
    if dataset is not None:
        data.setdefault("training", {})["dataset"] = dataset
    return parse_spec(data)
