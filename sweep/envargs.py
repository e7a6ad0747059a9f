"""Command-line flags whose default comes from an environment variable.

A bad value in the environment (``SWEEP_GRACE_PERIOD=abc``) must be one clear error from the
command that uses the flag, not a traceback from every command while its parser is built: the
raw string is the argparse default, and argparse converts it only when that command runs.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

__all__ = ["env_number"]


def env_number(var: str, default: str, kind: Callable[[str], Any] = int) -> dict[str, Any]:
    """``add_argument`` keywords for a number flag defaulting to ``$var`` (else ``default``).

    Args:
        var: The environment variable, named in the error when its value is bad.
        default: The default when ``var`` is unset, as text.
        kind: ``int`` or ``float``.
    """
    raw = os.environ.get(var)

    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            origin = f" (from {var})" if raw is not None and text == raw else ""
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, received {text!r}{origin}"
            ) from None

    return {"type": parse, "default": raw if raw is not None else default}
