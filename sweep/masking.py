"""Secret masking: passwords in storage URLs and in free text (log lines, tracebacks, reports).

Kept apart from storage so that logging (:mod:`sweep.logs`) does not import SQLAlchemy; :func:`mask_url`
imports it only when called.
"""

from __future__ import annotations

import re

__all__ = ["mask_secrets", "mask_url"]

_PASSWORD_IN_URL = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]+:)(?P<pw>[^@\s]+)(?P<at>@)")


def mask_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***`` (safe for logs and reports).

    Args:
        url: A database URL such as ``postgresql://user:secret@host/db``.
    """
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # not a URL sqlalchemy understands: fall back to a regex
        return mask_secrets(url)
    if parsed.password is None:
        return url
    return parsed.render_as_string(hide_password=True)


def mask_secrets(text: str) -> str:
    """Mask every ``scheme://user:password@`` occurrence inside free text (log lines, tracebacks)."""
    return _PASSWORD_IN_URL.sub(lambda m: f"{m['head']}***{m['at']}", text)
