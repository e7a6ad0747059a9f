"""The one table of penalty kinds and the lambdas each one takes.

Every rule of the form "kind X uses lambda Y" reads :data:`LAMBDAS` (through :func:`lambdas_of`
and :func:`kinds_using`): the canonical config (:mod:`sweep.penalties.config`), the search space
(:mod:`sweep.penalties.searchspace`), the spec's grid check (:mod:`sweep.spec.model`) and the
training child's regularizers (:mod:`workers.child.regularizers`).
"""

from __future__ import annotations

import re

__all__ = ["BUILTIN_KINDS", "LAMBDAS", "PLACEMENTS", "is_custom_kind", "kinds_using", "lambdas_of"]

#: The three places a penalty can be attached, in canonical order.
PLACEMENTS: tuple[str, ...] = ("kernel", "bias", "activity")

#: Built-in kinds and the lambdas (config keys) each takes, in canonical order.
LAMBDAS: dict[str, tuple[str, ...]] = {
    "none": (),
    "l1": ("l1",),
    "l2": ("l2",),
    "l1_l2": ("l1", "l2"),
}

BUILTIN_KINDS: tuple[str, ...] = tuple(LAMBDAS)

_CUSTOM = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def is_custom_kind(kind: str) -> bool:
    """Whether ``kind`` names a custom regularizer callable as ``package.module:function``.

    Args:
        kind: A kind as written in a spec.
    """
    return bool(_CUSTOM.match(kind))


def lambdas_of(kind: str) -> tuple[str, ...]:
    """The lambdas ``kind`` takes (none for ``none``, ``custom`` and custom callables).

    Args:
        kind: A built-in kind, ``custom`` or a ``package.module:function`` reference.
    """
    return LAMBDAS.get(kind, ())


def kinds_using(lam: str) -> tuple[str, ...]:
    """The built-in kinds that take the lambda ``lam`` (``"l1"`` → ``("l1", "l1_l2")``).

    Args:
        lam: A lambda key, ``"l1"`` or ``"l2"``.
    """
    return tuple(kind for kind, lambdas in LAMBDAS.items() if lam in lambdas)
