"""What the ``sweep`` commands share: the console, ``--storage``/``--dataset`` and opening a study."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from sweep.errors import SpecError
from sweep.storage.engine import StorageConfig, open_storage
from sweep.storage.url import require_existing, resolve_storage_url

__all__ = ["dataset_arg", "load_study", "open_study_storage", "out", "out_file", "storage_arg"]

out = Console(highlight=False, soft_wrap=True)


def storage_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", help="storage URL (default: SWEEP_STORAGE, OPTUNA_STORAGE, spec, sqlite:///regsweep.db)")


def open_study_storage(args: argparse.Namespace, spec_storage: str | None = None, *,
                       existing: bool = False) -> tuple[Any, str]:
    url = resolve_storage_url(args.storage, spec_storage)
    if existing:  # commands on a study never create a database (an empty regsweep.db in cwd)
        require_existing(url, args.storage)
    # A person is waiting: fail in seconds, not after the workers' minute of retries.
    return open_storage(url, StorageConfig(open_attempts=2, connect_timeout=5)), url


def load_study(args: argparse.Namespace) -> Any:
    from sweep.study.sweeps import load_sweep

    storage, _ = open_study_storage(args, existing=True)
    return load_sweep(storage, args.study, wait_s=0)


def out_file(out: str) -> Path:
    """An output file path whose folder exists and which is not itself a folder."""
    path = Path(out)
    if path.is_dir():
        raise SpecError(f"Invalid --out: expected a file name, received a directory, out={out!r}")
    if not path.parent.is_dir():
        raise SpecError(f"Invalid --out: folder {str(path.parent)!r} does not exist, received out={out!r}")
    return path


def dataset_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset",
                   help="training data (overrides training.dataset): digits, dir:PATH, npz:PATH or tfds:NAME")


