"""``package.module:attr`` references: how a spec names a trainer or a custom regularizer.

The one place that splits such a reference and imports what it names; ``sweep.spec.model`` checks the
module exists when a spec is loaded, ``workers.parent.runner`` imports the trainer and
``workers.child.regularizers`` the penalty callable. Nothing here imports Keras.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["split_ref", "load_ref"]


def split_ref(ref: str) -> tuple[str, str]:
    """Split ``"package.module:attr"`` into the module name and the (possibly dotted) attribute path.

    Args:
        ref: The reference, e.g. ``"workers.child.train:train"``.

    Raises:
        ValueError: ``ref`` has no ``:`` or an empty side.
    """
    module, sep, attr = ref.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected 'package.module:attr', received {ref!r}")
    return module, attr


def load_ref(ref: str) -> Any:
    """Import the module of ``ref`` and follow its attribute path (``attr`` may be dotted).

    Args:
        ref: The reference, e.g. ``"mypkg.penalties:Orthogonal.penalty"``.

    Returns:
        The object named.

    Raises:
        ValueError: ``ref`` is malformed (see :func:`split_ref`).
        ImportError: The module cannot be imported.
        AttributeError: The module has no such attribute.
    """
    module_name, attr_path = split_ref(ref)
    target: Any = importlib.import_module(module_name)
    for part in attr_path.split("."):
        target = getattr(target, part)
    return target
