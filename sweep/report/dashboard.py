"""``sweep dashboard``: optuna-dashboard on the sweep's storage, with the workers' artifact store.

Bound to 127.0.0.1 by default: optuna-dashboard has no authentication and can delete studies, so
it is reached through an SSH tunnel (``ssh -L 8080:127.0.0.1:8080 host``) rather than exposed.
The container passes ``--host 0.0.0.0`` and publishes the port on the host's loopback only.
With ``--artifacts`` (the directory workers write with ``--artifacts``; created when missing),
each trial page shows its learning-curve PNG.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from sweep.errors import SpecError

__all__ = ["cmd_dashboard", "prepare_artifacts", "register_cli", "serve"]

_logger = logging.getLogger(__name__)
#: Connections the dashboard may hold (its server answers one request at a time; see compose).
_POOL = 5


def serve(storage_url: str, *, host: str = "127.0.0.1", port: int = 8080, artifacts: str | None = None) -> None:
    """Run optuna-dashboard until interrupted.

    Args:
        storage_url: The study storage.
        host: Address to bind (127.0.0.1: this machine only).
        port: TCP port.
        artifacts: Directory of the FileSystemArtifactStore the workers upload to, or None.

    Raises:
        SpecError: The artifact path is a file or cannot be created.
        StorageError: The storage cannot be reached.
    """
    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import run_server

    from sweep.masking import mask_url
    from sweep.storage.engine import StorageConfig, open_storage

    store = FileSystemArtifactStore(prepare_artifacts(artifacts)) if artifacts else None
    storage = open_storage(storage_url, StorageConfig(pool_size=_POOL))
    _logger.info("optuna-dashboard on http://%s:%d/ for %s (artifacts: %s)", host, port, mask_url(storage_url),
                 artifacts or "none")
    run_server(storage, host=host, port=port, artifact_store=store)


def prepare_artifacts(artifacts: str) -> str:
    """The artifact folder, created when missing (workers may not have written one yet).

    Raises:
        SpecError: ``artifacts`` exists and is not a folder, or cannot be created.
    """
    path = Path(artifacts)
    if path.exists() and not path.is_dir():
        raise SpecError(f"Invalid --artifacts: expected a folder, received a file, artifacts={artifacts!r}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SpecError(f"Invalid --artifacts: cannot create the folder ({error.strerror}), "
                        f"received artifacts={artifacts!r}") from None
    return artifacts


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Handler of ``sweep dashboard``."""
    from rich.console import Console

    from sweep.masking import mask_url
    from sweep.storage.url import require_existing, resolve_storage_url

    if not 0 < args.port < 65536:
        raise SpecError(f"Invalid --port: expected 1..65535, received port={args.port}")
    artifacts = args.artifacts or os.environ.get("SWEEP_ARTIFACTS")
    if artifacts:  # checked before the banner: a banner followed by an error reads as "it started"
        prepare_artifacts(artifacts)
    url = require_existing(resolve_storage_url(args.storage), args.storage)
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    Console(stderr=True, highlight=False).print(
        f"optuna-dashboard for {mask_url(url)} on [bold]http://{shown}:{args.port}/[/]"
        + (f" (artifacts: {artifacts})" if artifacts else " (no artifact store: trial plots hidden)")
    )
    serve(url, host=args.host, port=args.port, artifacts=artifacts)
    return 0


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sweep dashboard`` to the ``sweep`` parser."""
    p = subparsers.add_parser("dashboard", help="optuna-dashboard with the trials' learning-curve artifacts")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--artifacts", help="artifact directory the workers write (env SWEEP_ARTIFACTS)")
    p.add_argument("--storage", help="storage URL (default: SWEEP_STORAGE, OPTUNA_STORAGE, sqlite:///regsweep.db)")
    p.set_defaults(handler=cmd_dashboard)
