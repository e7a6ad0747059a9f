"""The sweep spec: one TOML file, validated completely (pydantic) before anything touches storage.

The preset files live beside it in ``sweep/presets/``.
"""

from __future__ import annotations

from sweep.spec.load import check_deadline_ahead, load_spec, parse_spec
from sweep.spec.model import (
    BudgetSpec,
    FinalistSpec,
    ObjectiveSpec,
    PrunerSpec,
    SamplerSpec,
    StudySpec,
    SweepSpec,
    TrainingSetup,
)
from sweep.spec.space import LambdaRange, PlacementSpace, SearchSpace

__all__ = [
    "BudgetSpec",
    "FinalistSpec",
    "LambdaRange",
    "ObjectiveSpec",
    "PlacementSpace",
    "PrunerSpec",
    "SamplerSpec",
    "SearchSpace",
    "StudySpec",
    "SweepSpec",
    "TrainingSetup",
    "check_deadline_ahead",
    "load_spec",
    "parse_spec",
]
