"""Turn the canonical regularizer config into Keras regularizers.

The config is the JSON-able dict described in ``docs/contracts.md``
(``sweep.penalties.config.RegularizerConfig.canonical()``): one penalty dict per placement
(``kernel``, ``bias``, ``activity``). ``sweep/`` already validated it; the checks here exist
so that a hand-written or stale config fails *its trial* (``TrialError``) with a message that
names the field, instead of crashing deep inside Keras.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import keras

from sweep.errors import TrialError
from sweep.penalties.kinds import LAMBDAS, PLACEMENTS
from sweep.refs import load_ref, split_ref

__all__ = [
    "PLACEMENTS",
    "ScaledCallable",
    "Float32Activity",
    "RegularizerSet",
    "make_regularizer",
    "load_callable",
]

#: The keys each kind needs in a canonical penalty: the lambdas of the one kind table, and ``fn`` for custom.
_KEYS: dict[str, tuple[str, ...]] = {**LAMBDAS, "custom": ("fn",)}


def load_callable(spec: str) -> Callable[[Any], Any]:
    """Import ``"package.module:callable"`` and return the callable.

    Args:
        spec: Import path of the form ``"package.module:attr"`` (``attr`` may be dotted).

    Returns:
        The imported callable.

    Raises:
        TrialError: If ``spec`` is malformed, cannot be imported or is not callable.
    """
    if not isinstance(spec, str) or spec.count(":") != 1 or spec.startswith(":") or spec.endswith(":"):
        raise TrialError(
            f"Invalid custom regularizer fn: expected 'package.module:callable', received fn={spec!r}"
        )
    module_name, attr_path = split_ref(spec)
    try:
        obj: Any = load_ref(spec)
    except ImportError as exc:
        raise TrialError(f"Custom regularizer fn={spec!r}: cannot import module {module_name!r} ({exc})") from exc
    except AttributeError as exc:
        raise TrialError(
            f"Custom regularizer fn={spec!r}: module {module_name!r} has no attribute {attr_path!r}"
        ) from exc
    if not callable(obj):
        raise TrialError(f"Custom regularizer fn={spec!r} is not callable (got {type(obj).__name__})")
    return obj


@keras.saving.register_keras_serializable(package="regsweep")
class ScaledCallable(keras.regularizers.Regularizer):
    """``scale * fn(x)`` for a user callable referenced by import path.

    Storing the import path (not the function object) is what makes a checkpoint with a custom
    penalty loadable again: ``from_config`` simply re-imports it.

    Args:
        fn: ``"package.module:callable"``; the callable takes a tensor and returns a scalar.
        scale: Multiplier applied to the callable's result.
    """

    def __init__(self, fn: str, scale: float = 1.0) -> None:
        self.fn = fn
        self.scale = float(scale)
        self._callable = load_callable(fn)

    def __call__(self, x: Any) -> Any:
        value = self._callable(x)
        return keras.ops.multiply(keras.ops.cast(value, x.dtype), keras.ops.cast(self.scale, x.dtype))

    def get_config(self) -> dict[str, Any]:
        return {"fn": self.fn, "scale": self.scale}


@keras.saving.register_keras_serializable(package="regsweep")
class Float32Activity(keras.regularizers.Regularizer):
    """Evaluate a wrapped regularizer on a float32 copy of its input.

    Under ``mixed_float16`` layer outputs are float16; a sum of squares over a whole activation
    map overflows float16 (max 65504) long before it is large, so activity penalties are
    computed in float32.

    Args:
        inner: The regularizer to evaluate.
    """

    def __init__(self, inner: keras.regularizers.Regularizer | dict[str, Any]) -> None:
        self.inner = keras.regularizers.get(inner)

    def __call__(self, x: Any) -> Any:
        return self.inner(keras.ops.cast(x, "float32"))

    def get_config(self) -> dict[str, Any]:
        return {"inner": keras.regularizers.serialize(self.inner)}


def _non_negative(placement: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise TrialError(
            f"Invalid {placement}.{key}: expected a non-negative float, received {key}={value!r}"
        )
    return float(value)


def make_regularizer(
    penalty: Mapping[str, Any] | None, *, placement: str = "kernel"
) -> keras.regularizers.Regularizer | None:
    """Build the Keras regularizer for one canonical penalty dict.

    Args:
        penalty: E.g. ``{"kind": "l2", "l2": 1e-3}``; ``None`` or ``{"kind": "none"}`` means no
            penalty.
        placement: Only used to name the field in error messages.

    Returns:
        ``None`` for ``none``, otherwise a ``keras.regularizers.Regularizer``.

    Raises:
        TrialError: On an unknown kind, a missing key or an invalid value.
    """
    if penalty is None:
        return None
    if not isinstance(penalty, Mapping):
        raise TrialError(f"Invalid {placement}: expected a penalty dict, received {placement}={penalty!r}")
    kind = penalty.get("kind", "none")
    if kind not in _KEYS:
        raise TrialError(
            f"Invalid {placement}.kind: expected one of {sorted(_KEYS)}, received kind={kind!r}"
        )
    missing = [key for key in _KEYS[kind] if key not in penalty]
    if missing:
        raise TrialError(f"Invalid {placement}: kind={kind!r} needs key(s) {missing}, received {dict(penalty)!r}")
    if kind == "none":
        return None
    if kind == "custom":
        scale = _non_negative(placement, "scale", penalty.get("scale", 1.0))
        return ScaledCallable(penalty["fn"], scale)
    values = {key: _non_negative(placement, key, penalty[key]) for key in _KEYS[kind]}
    if kind == "l1":
        return keras.regularizers.L1(values["l1"])
    if kind == "l2":
        return keras.regularizers.L2(values["l2"])
    return keras.regularizers.L1L2(l1=values["l1"], l2=values["l2"])


@dataclasses.dataclass(frozen=True)
class RegularizerSet:
    """The regularizers for the three placements (``None`` = no penalty there).

    Attributes:
        kernel: For Conv2D/Dense ``kernel_regularizer`` and DepthwiseConv2D
            ``depthwise_regularizer``.
        bias: For ``bias_regularizer`` of every layer that has a bias.
        activity: For ``activity_regularizer`` of each block output and the logits layer.
        off_head: Placements whose penalty leaves out the Dense head (``"head": false``).
    """

    kernel: keras.regularizers.Regularizer | None = None
    bias: keras.regularizers.Regularizer | None = None
    activity: keras.regularizers.Regularizer | None = None
    off_head: tuple[str, ...] = ()

    def at_head(self, placement: str) -> keras.regularizers.Regularizer | None:
        """The regularizer ``placement`` puts on the Dense head (``None`` where it leaves it out)."""
        return None if placement in self.off_head else getattr(self, placement)

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> RegularizerSet:
        """Build from the full canonical config.

        Args:
            config: ``{"kernel": {...}, "bias": {...}, "activity": {...}}``; missing placements
                mean no penalty.

        Returns:
            The regularizer set.

        Raises:
            TrialError: On an unknown placement or an invalid penalty.
        """
        if config is None:
            return cls()
        if not isinstance(config, Mapping):
            raise TrialError(f"Invalid regularizer config: expected a dict, received config={config!r}")
        unknown = sorted(set(config) - set(PLACEMENTS))
        if unknown:
            raise TrialError(
                f"Invalid regularizer config: unknown placement(s) {unknown}, expected {list(PLACEMENTS)}"
            )
        regularizers = {p: make_regularizer(config.get(p), placement=p) for p in PLACEMENTS}
        off_head = []
        for p in PLACEMENTS:
            head = (config.get(p) or {}).get("head", True)  # a Mapping or None: make_regularizer checked it
            if not isinstance(head, bool):
                raise TrialError(f"Invalid {p}.head: expected true or false, received head={head!r}")
            if not head:
                off_head.append(p)
        return cls(**regularizers, off_head=tuple(off_head))

    def active(self) -> list[str]:
        """Return the placements that carry a penalty, in canonical order."""
        return [p for p in PLACEMENTS if getattr(self, p) is not None]
