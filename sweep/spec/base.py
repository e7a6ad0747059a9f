"""The pieces every spec model shares: frozen models that reject unknown keys, positive floats."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict

__all__ = ["Strict", "positive"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"expected a positive float, received {name}={value!r}")
    return value
