"""The Keras-free trainer under its published reference ``workers.synthetic:train`` (specs and docs name it).

It lives with the other training-child code in :mod:`workers.child.synthetic`.
"""

from __future__ import annotations

from workers.child.synthetic import response, train

__all__ = ["response", "train"]
