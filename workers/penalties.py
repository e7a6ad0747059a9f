"""Custom penalties under their published references ``workers.penalties:NAME`` (specs and docs name them).

They live with the other training-child code in :mod:`workers.child.penalties`.
"""

from __future__ import annotations

from workers.child.penalties import orthogonal

__all__ = ["orthogonal"]
