"""``sweep``: create, run and inspect regularization sweeps (never imports Keras).

Storage precedence: ``--storage`` > ``SWEEP_STORAGE`` > ``OPTUNA_STORAGE`` > the spec's
``study.storage`` > ``sqlite:///regsweep.db``. Passwords are masked in every output.
Exit status: 0 on success, the error's ``exit_code`` (2 bad input, 3 storage) otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from sweep.cli import commands
from sweep.errors import RegsweepError, SpecError
from sweep.launcher import cli as launcher_cli
from sweep.logs import setup_logging
from sweep.masking import mask_secrets
from sweep.report import dashboard
from sweep.report import write as report_cli
from sweep.schedule import runner as schedule_cli
from sweep.storage.url import hide_password_from_ps

__all__ = ["main", "build_parser"]

_logger = logging.getLogger("sweep")

#: Every command group of ``sweep``, in help order: each adds its sub-commands to the parser.
COMMANDS: tuple[Callable[[Any], None], ...] = (
    commands.register_cli,  # create, run, status, best, enqueue, export, extend
    launcher_cli.register_cli,  # workers up|ls|down
    schedule_cli.register_cli,  # schedule
    report_cli.register_cli,  # report
    dashboard.register_cli,  # dashboard
)


def build_parser() -> argparse.ArgumentParser:
    """The ``sweep`` parser with every command of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="sweep", description="Regularization sweeps on Optuna + PostgreSQL.")
    parser.add_argument("--log-level", default=None, help="logging level (env SWEEP_LOG_LEVEL, default WARNING)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS:
        register(sub)
    return parser


def _validate_positive(args: argparse.Namespace) -> None:
    for name in ("workers", "top"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise SpecError(f"Invalid --{name}: expected a positive integer, received {name}={value}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sweep``."""
    hide_password_from_ps()  # `sweep run --storage URL` lives as long as the sweep
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level or "WARNING")
    try:
        _validate_positive(args)
        return int(args.handler(args) or 0)
    except RegsweepError as error:
        print(f"sweep: error: {mask_secrets(str(error))}", file=sys.stderr)
        return error.exit_code or 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `sweep status --json | head`: the reader left, nothing is wrong here
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
