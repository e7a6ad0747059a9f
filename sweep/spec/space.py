"""The search space of a spec: per placement, the kinds allowed and their lambda ranges."""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from sweep.penalties.kinds import BUILTIN_KINDS, PLACEMENTS, is_custom_kind
from sweep.refs import split_ref
from sweep.spec.base import Strict, positive

__all__ = ["LambdaRange", "PlacementSpace", "SearchSpace"]


class LambdaRange(Strict):
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
        return None if v is None else positive(info.field_name, v)

    @field_validator("values")
    @classmethod
    def _values(cls, v: list[float] | None) -> list[float] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("expected at least one value, received values=[]")
        for x in v:
            positive("values", x)
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


class PlacementSpace(Strict):
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


class SearchSpace(Strict):
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
