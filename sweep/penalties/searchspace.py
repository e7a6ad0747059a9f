"""The conditional search space: which Optuna parameters a trial suggests.

Per placement ``p`` the trial suggests ``p_kind`` (only when more than one kind is allowed), then
``p_l1`` / ``p_l2`` only where that kind uses them and ``p_scale`` only for custom kinds. A lambda
that its kind does not use is never suggested, so it is never stored. Tied placements suggest
nothing and copy the penalty of their target.
"""

from __future__ import annotations

import itertools
from typing import Any, Protocol

from sweep.errors import SpecError
from sweep.penalties.config import Penalty, RegularizerConfig
from sweep.penalties.kinds import PLACEMENTS, is_custom_kind, lambdas_of
from sweep.spec.space import LambdaRange, PlacementSpace, SearchSpace

__all__ = [
    "Suggester",
    "suggest_config",
    "config_from_params",
    "params_from_config",
    "grid_params",
]


class Suggester(Protocol):
    """The part of ``optuna.trial.Trial`` the space needs (lets tests pass a fixed dict)."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...


def _lambda(trial: Suggester, name: str, rng: LambdaRange) -> float:
    if rng.values is not None:
        if len(rng.values) == 1:
            return rng.values[0]
        return float(trial.suggest_categorical(name, rng.values))
    if rng.low == rng.high:
        return float(rng.low)  # type: ignore[arg-type]  # LambdaRange._shape: no values means both bounds
    return trial.suggest_float(name, rng.low, rng.high, log=True)  # type: ignore[arg-type]  # as above


def _penalty(trial: Suggester, placement: str, ps: PlacementSpace) -> Penalty:
    kind = ps.kinds[0] if len(ps.kinds) == 1 else str(trial.suggest_categorical(f"{placement}_kind", ps.kinds))
    head = ps.reaches_head(kind)
    if is_custom_kind(kind):
        scale = _lambda(trial, f"{placement}_scale", ps.scale) if ps.scale is not None else 1.0
        return Penalty(kind="custom", fn=kind, scale=scale, head=head)
    l1 = _lambda(trial, f"{placement}_l1", ps.l1) if "l1" in lambdas_of(kind) else None
    l2 = _lambda(trial, f"{placement}_l2", ps.l2) if "l2" in lambdas_of(kind) else None
    return Penalty(kind=kind, l1=l1, l2=l2, head=head)


def suggest_config(trial: Suggester, space: SearchSpace) -> RegularizerConfig:
    """Suggest one config from ``space`` (conditional: inactive lambdas are never suggested).

    Args:
        trial: An Optuna trial (or anything with ``suggest_categorical``/``suggest_float``).
        space: The validated search space.

    Returns:
        The frozen config the trial trains with.
    """
    penalties: dict[str, Penalty] = {}
    for placement in PLACEMENTS:
        ps: PlacementSpace = getattr(space, placement)
        if ps.tie is None:
            penalties[placement] = _penalty(trial, placement, ps)
    for placement in PLACEMENTS:
        target = getattr(space, placement).tie
        if target is not None:
            penalties[placement] = penalties[target]
    return RegularizerConfig(**penalties)


class _FixedParams:
    """A suggester answering from a dict of already-chosen params (grid points, retries)."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self.params[name]

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
        return float(self.params[name])


def config_from_params(params: dict[str, Any], space: SearchSpace) -> RegularizerConfig:
    """Rebuild the config of a finished trial from its Optuna params."""
    return suggest_config(_FixedParams(params), space)


def _placement_options(placement: str, ps: PlacementSpace) -> list[dict[str, Any]]:
    """Every param assignment of one placement for a grid (lambdas from ``values`` or range ends)."""
    options: list[dict[str, Any]] = []
    for kind in ps.kinds:
        base = {f"{placement}_kind": kind} if len(ps.kinds) > 1 else {}
        axes: list[list[tuple[str, float]]] = []
        if is_custom_kind(kind) and ps.scale is not None and len(ps.scale.choices) > 1:
            axes.append([(f"{placement}_scale", v) for v in ps.scale.choices])
        if "l1" in lambdas_of(kind) and len(ps.l1.choices) > 1:
            axes.append([(f"{placement}_l1", v) for v in ps.l1.choices])
        if "l2" in lambdas_of(kind) and len(ps.l2.choices) > 1:
            axes.append([(f"{placement}_l2", v) for v in ps.l2.choices])
        for combo in itertools.product(*axes):
            options.append({**base, **dict(combo)})
    return options


def grid_params(space: SearchSpace) -> list[dict[str, Any]]:
    """The grid: one param dict per *distinct* canonical config, in a stable order.

    Configs that train the same model (e.g. kind none under different lambdas) appear once.
    """
    per_placement = [
        _placement_options(p, getattr(space, p)) for p in PLACEMENTS if getattr(space, p).tie is None
    ]
    seen: set[str] = set()
    grid: list[dict[str, Any]] = []
    for combo in itertools.product(*per_placement):
        params: dict[str, Any] = {}
        for part in combo:
            params.update(part)
        digest = config_from_params(params, space).config_hash()
        if digest not in seen:
            seen.add(digest)
            grid.append(params)
    return grid


def _lambda_param(placement: str, key: str, value: float | None, rng: LambdaRange, out: dict[str, Any]) -> None:
    if value is None:
        raise SpecError(f"Invalid {placement}.{key}: kind needs {key}, received {key}=None")
    if rng.values is not None:
        if value not in rng.values:
            raise SpecError(
                f"Invalid {placement}.{key}: expected one of {rng.values}, received {key}={value!r}"
            )
        if len(rng.values) > 1:
            out[f"{placement}_{key}"] = value
        return
    if not (rng.low <= value <= rng.high):  # type: ignore[operator]  # values is None here: both bounds set
        raise SpecError(
            f"Invalid {placement}.{key}: expected a value in [{rng.low:g}, {rng.high:g}], received {key}={value!r}"
        )
    if rng.low != rng.high:
        out[f"{placement}_{key}"] = value


def params_from_config(config: RegularizerConfig, space: SearchSpace) -> dict[str, Any]:
    """The Optuna params that make :func:`suggest_config` return ``config`` (for ``sweep enqueue``).

    Whether a penalty reaches the Dense head is not a param: the space's ``head`` decides it from
    the kind, so a config's own ``head`` is not checked here.

    Raises:
        SpecError: The config lies outside the space (kind not allowed, lambda out of range,
            or a tied placement that differs from its target).
    """
    params: dict[str, Any] = {}
    for placement in PLACEMENTS:
        ps: PlacementSpace = getattr(space, placement)
        penalty: Penalty = getattr(config, placement)
        if ps.tie is not None:
            if penalty.canonical() != getattr(config, ps.tie).canonical():
                raise SpecError(
                    f"Invalid {placement}: tied to {ps.tie} in this study, received {penalty.canonical()!r}"
                )
            continue
        kind = penalty.fn if penalty.kind == "custom" else penalty.kind
        if kind not in ps.kinds:
            raise SpecError(f"Invalid {placement}.kind: expected one of {ps.kinds}, received kind={kind!r}")
        if len(ps.kinds) > 1:
            params[f"{placement}_kind"] = kind
        if "l1" in lambdas_of(penalty.kind):
            _lambda_param(placement, "l1", penalty.l1, ps.l1, params)
        if "l2" in lambdas_of(penalty.kind):
            _lambda_param(placement, "l2", penalty.l2, ps.l2, params)
        if penalty.kind == "custom" and ps.scale is not None:
            _lambda_param(placement, "scale", penalty.scale, ps.scale, params)
    return params
