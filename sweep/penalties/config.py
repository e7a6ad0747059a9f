"""The regularizer configuration one trial trains with.

A :class:`RegularizerConfig` holds one :class:`Penalty` per placement (kernel, bias, activity).
Its canonical form drops everything that cannot change the trained model (the lambda of kind
``none``, a zero lambda, float noise past 6 significant digits), so two configs that train the
same model have the same :meth:`RegularizerConfig.config_hash`. Like Keras regularizers, configs
round-trip through :meth:`to_dict` / :meth:`from_dict` and validation names argument and value.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from sweep.errors import SpecError
from sweep.penalties.kinds import BUILTIN_KINDS, PLACEMENTS, is_custom_kind, lambdas_of

__all__ = ["Penalty", "RegularizerConfig", "config_label", "penalty_text"]


def penalty_text(penalty: dict[str, Any] | None) -> str:
    """``L2 1.0e-04``, ``L1 2.6e-06 + L2 4.5e-05`` or ``none`` for one canonical penalty dict."""
    penalty = penalty or {"kind": "none"}
    if penalty.get("kind") == "custom":
        return f"{penalty.get('fn')} x {float(penalty.get('scale', 1.0)):.2g}"
    parts = [f"{k.upper()} {float(penalty[k]):.1e}" for k in ("l1", "l2") if penalty.get(k)]
    text = " + ".join(parts) or "none"
    return f"{text} (not on the head)" if parts and penalty.get("head") is False else text


def _round(value: float) -> float:
    # 6 significant digits: samplers produce float noise that must not split identical configs.
    return float(f"{value:.6g}")


def _check_lambda(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"Invalid {name}: expected a non-negative float, received {name}={value!r}")
    if not math.isfinite(value) or value < 0:
        raise SpecError(f"Invalid {name}: expected a non-negative float, received {name}={value!r}")
    return float(value)


@dataclass(frozen=True)
class Penalty:
    """The penalty at one placement.

    Args:
        kind: ``none``, ``l1``, ``l2``, ``l1_l2`` or ``custom``.
        l1: L1 factor (kinds ``l1`` and ``l1_l2``).
        l2: L2 factor (kinds ``l2`` and ``l1_l2``).
        fn: ``package.module:function`` for kind ``custom``: takes the weight tensor, returns a scalar.
        scale: Multiplier of the custom function's value.
        head: Whether the penalty also reaches the Dense head (the ``logits`` layer). The
            tutorial leaves its head out of the L1 experiment and puts it in the L2 one.
    """

    kind: str = "none"
    l1: float | None = None
    l2: float | None = None
    fn: str | None = None
    scale: float | None = None
    head: bool = True

    def __post_init__(self) -> None:
        if self.kind not in (*BUILTIN_KINDS, "custom"):
            raise SpecError(
                f"Invalid kind: expected one of none, l1, l2, l1_l2, custom, received kind={self.kind!r}"
            )
        object.__setattr__(self, "l1", _check_lambda("l1", self.l1))
        object.__setattr__(self, "l2", _check_lambda("l2", self.l2))
        object.__setattr__(self, "scale", _check_lambda("scale", self.scale))
        for lam in lambdas_of(self.kind):
            if getattr(self, lam) is None:
                raise SpecError(f"Invalid {lam}: kind {self.kind!r} needs {lam}, received {lam}=None")
        if not isinstance(self.head, bool):
            raise SpecError(f"Invalid head: expected true or false, received head={self.head!r}")
        if self.kind == "custom" and (self.fn is None or not is_custom_kind(self.fn)):
            raise SpecError(
                f"Invalid fn: expected 'package.module:function' for kind 'custom', received fn={self.fn!r}"
            )

    def canonical(self) -> dict[str, Any]:
        """The smallest dict that trains the same model: inactive parts dropped, lambdas rounded.

        ``"head": False`` appears only on an active penalty that leaves the head out, so every
        config written before the option existed keeps its hash.
        """
        canonical = self._canonical_penalty()
        if not self.head and canonical["kind"] != "none":
            canonical["head"] = False
        return canonical

    def _canonical_penalty(self) -> dict[str, Any]:
        takes = lambdas_of(self.kind)
        l1 = _round(self.l1) if "l1" in takes and self.l1 else 0.0
        l2 = _round(self.l2) if "l2" in takes and self.l2 else 0.0
        if self.kind == "custom":
            scale = 1.0 if self.scale is None else _round(self.scale)
            return {"kind": "none"} if scale == 0 else {"kind": "custom", "fn": self.fn, "scale": scale}
        if l1 and l2:
            return {"kind": "l1_l2", "l1": l1, "l2": l2}
        if l1:
            return {"kind": "l1", "l1": l1}
        if l2:
            return {"kind": "l2", "l2": l2}
        return {"kind": "none"}

    @property
    def active(self) -> bool:
        """Whether this penalty changes training at all."""
        return self.canonical()["kind"] != "none"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Penalty:
        """Inverse of :meth:`canonical` (also accepts non-canonical dicts)."""
        unknown = set(data) - {"kind", "l1", "l2", "fn", "scale", "head"}
        if unknown:
            raise SpecError(f"Invalid penalty: unknown keys {sorted(unknown)}, received {data!r}")
        return cls(**data)


@dataclass(frozen=True)
class RegularizerConfig:
    """Penalties for the three placements of one trial.

    Args:
        kernel: Conv2D/Dense ``kernel_regularizer`` and DepthwiseConv2D ``depthwise_regularizer``.
        bias: ``bias_regularizer`` on every layer that has a bias.
        activity: ``activity_regularizer`` on each block output and the head.
    """

    kernel: Penalty = field(default_factory=Penalty)
    bias: Penalty = field(default_factory=Penalty)
    activity: Penalty = field(default_factory=Penalty)

    def canonical(self, no_effect: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
        """Canonical form; placements listed in ``no_effect`` (reach no layer) become ``none``.

        Args:
            no_effect: Placements that reach no layer of the model being trained.
        """
        return {
            p: ({"kind": "none"} if p in no_effect else getattr(self, p).canonical())
            for p in PLACEMENTS
        }

    def config_hash(self, no_effect: tuple[str, ...] = ()) -> str:
        """A stable 16-hex-digit hash of the canonical form: equal for equivalent configs."""
        text = json.dumps(self.canonical(no_effect), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def label(self) -> str:
        """A short human label of the regularized placements, e.g. ``kernel L2 1.0e-04, activity L1 1.0e-06``."""
        parts = [f"{p} {penalty_text(getattr(self, p).canonical())}" for p in PLACEMENTS if getattr(self, p).active]
        return ", ".join(parts) or "no regularizer"

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """JSON-able dict (the canonical form); round-trips through :meth:`from_dict`."""
        return self.canonical()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegularizerConfig:
        """Build from :meth:`to_dict` output. Unknown placements are rejected by name."""
        unknown = set(data) - set(PLACEMENTS)
        if unknown:
            raise SpecError(
                f"Invalid placement: expected kernel, bias or activity, received {sorted(unknown)}"
            )
        penalties = {}
        for p in PLACEMENTS:
            if p not in data:
                continue
            try:
                penalties[p] = Penalty.from_dict(data[p])
            except SpecError as error:  # "Invalid l2: ..." does not say which placement's l2
                raise SpecError(str(error).replace("Invalid ", f"Invalid {p}.", 1)) from None
        return cls(**penalties)


def config_label(config: dict[str, Any] | None) -> str:
    """The label of a canonical config dict, e.g. ``kernel L2 1.0e-04, activity L1 1.0e-06``.

    Args:
        config: A canonical config (``RegularizerConfig.canonical()``); None or empty for a trial
            that never started.
    """
    return RegularizerConfig.from_dict(config).label() if config else "(not started)"
