"""Where studies live: the storage URL (resolution, validation) and the process title that hides it.

Read-only commands open an *existing* database only (:func:`require_existing`): ``sweep status``
in an empty folder must not leave a fresh ``regsweep.db`` behind.
"""

from __future__ import annotations

import logging
import os
import sys

from sqlalchemy.engine import make_url

from sweep.errors import SpecError, StorageError
from sweep.masking import mask_secrets, mask_url

__all__ = ["DEFAULT_STORAGE", "check_storage_url", "hide_password_from_ps", "require_existing", "resolve_storage_url"]

_logger = logging.getLogger(__name__)

#: The embedded default: one SQLite file in the working directory, no server needed.
DEFAULT_STORAGE = "sqlite:///regsweep.db"

_SUPPORTED = ("postgresql", "sqlite", "mysql")


def resolve_storage_url(cli_value: str | None = None, spec_value: str | None = None) -> str:
    """Pick the storage URL: CLI flag > ``SWEEP_STORAGE`` > ``OPTUNA_STORAGE`` > spec > default.

    Args:
        cli_value: The ``--storage`` flag, if given.
        spec_value: ``study.storage`` from the spec file, if given.

    Returns:
        The URL to use (unmasked; mask it with :func:`mask_url` before showing it).
    """
    for value in (
        cli_value,
        os.environ.get("SWEEP_STORAGE"),
        os.environ.get("OPTUNA_STORAGE"),
        spec_value,
    ):
        if value:
            return value
    return DEFAULT_STORAGE


def hide_password_from_ps() -> None:
    """Rewrite this process's title (``ps``, /proc/PID/cmdline) with passwords in argv masked.

    Call it first thing in an entry point: until then the raw command line is visible.
    """
    masked = [mask_secrets(arg) for arg in sys.argv]
    if masked != sys.argv:
        try:
            import setproctitle

            setproctitle.setproctitle(" ".join(masked))
        except ImportError:  # pragma: no cover - a declared dependency
            _logger.warning("setproctitle is missing: the storage password is visible in ps")


def check_storage_url(url: str) -> str:
    """Validate the form of a storage URL without connecting.

    Args:
        url: The URL to check.

    Returns:
        The URL unchanged.

    Raises:
        SpecError: If the URL cannot be parsed or names an unsupported database.
    """
    try:
        parsed = make_url(url)
    except Exception:
        raise SpecError(
            f"Invalid storage: expected a database URL such as postgresql://user@host/db or "
            f"sqlite:///regsweep.db, received storage={mask_url(url)!r}"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in _SUPPORTED:
        raise SpecError(
            f"Invalid storage: expected one of {', '.join(_SUPPORTED)}, received "
            f"storage={mask_url(url)!r} (backend {backend!r})"
        )
    if backend in ("postgresql", "mysql") and not parsed.database:
        # Otherwise libpq quietly picks a database named after the OS user and the study goes there.
        raise SpecError(
            f"Invalid storage: expected a database name, e.g. postgresql://user@host/regsweep, "
            f"received storage={mask_url(url)!r}"
        )
    return url


def require_existing(url: str, cli_value: str | None = None) -> str:
    """Refuse a SQLite URL whose file does not exist (opening it would create an empty database).

    Args:
        url: The resolved storage URL.
        cli_value: The ``--storage`` flag as given, to say where the URL came from.

    Returns:
        The URL unchanged.

    Raises:
        StorageError: The SQLite file is missing; the message lists where the URL was looked up.
    """
    parsed = make_url(check_storage_url(url))
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return url
    path = os.path.abspath(parsed.database)
    if os.path.exists(path):
        return url
    given = [name for name, value in (("--storage", cli_value), ("SWEEP_STORAGE", os.environ.get("SWEEP_STORAGE")),
                                      ("OPTUNA_STORAGE", os.environ.get("OPTUNA_STORAGE"))) if value]
    source = f"from {given[0]}" if given else "the default; --storage, SWEEP_STORAGE and OPTUNA_STORAGE are unset"
    raise StorageError(f"No study database: {path} does not exist (storage {mask_url(url)}, {source})")
