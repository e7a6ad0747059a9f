"""``sweep``: create, run and inspect regularization sweeps (never imports Keras).

Storage precedence: ``--storage`` > ``SWEEP_STORAGE`` > ``OPTUNA_STORAGE`` > the spec's
``study.storage`` > ``sqlite:///regsweep.db``. Passwords are masked in every output.
Exit status: 0 on success, the error's ``exit_code`` (2 bad input, 3 storage) otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from sweep.errors import RegsweepError, SpecError
from sweep.logs import setup_logging
from sweep.storage import StorageConfig, hide_password_from_ps, mask_secrets, mask_url, open_storage, resolve_storage_url

__all__ = ["main", "build_parser"]

_logger = logging.getLogger("sweep")
out = Console(highlight=False, soft_wrap=True)
Handler = Callable[[argparse.Namespace], int]

#: Sub-command groups that live in their own modules and register themselves.
_PLUGINS = ("sweep.launcher", "sweep.schedule", "sweep.report", "sweep.dashboard")


def _storage_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", help="storage URL (default: SWEEP_STORAGE, OPTUNA_STORAGE, spec, sqlite:///regsweep.db)")


def _open(args: argparse.Namespace, spec_storage: str | None = None) -> tuple[Any, str]:
    url = resolve_storage_url(args.storage, spec_storage)
    # A person is waiting: fail in seconds, not after the workers' minute of retries.
    return open_storage(url, StorageConfig(open_attempts=2, connect_timeout=5)), url


def _load(args: argparse.Namespace) -> Any:
    from sweep.study import load_sweep

    storage, _ = _open(args)
    return load_sweep(storage, args.study, wait_s=0)


# -- commands ------------------------------------------------------------------------------------
def cmd_create(args: argparse.Namespace) -> int:
    from sweep.spec import load_spec
    from sweep.study import budget_total, create_sweep

    spec = load_spec(args.spec, name=args.name)
    budget_total(spec)  # a spec without any budget fails here, before storage is touched
    storage, url = _open(args, spec.study.storage)
    sweep, created = create_sweep(spec, storage)
    verb = "Created" if created else "Reusing existing"
    out.print(f"{verb} study [bold]{sweep.name}[/] in {mask_url(url)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from sweep.local import run_local_workers
    from sweep.spec import load_spec
    from sweep.study import create_sweep

    spec = load_spec(args.spec, name=args.name)
    storage, url = _open(args, spec.study.storage)
    sweep, created = create_sweep(spec, storage)
    out.print(f"{'Created' if created else 'Continuing'} study [bold]{sweep.name}[/] in {mask_url(url)}")
    codes = run_local_workers(sweep, url, args.workers, log_dir=Path(args.log_dir) / sweep.name if args.log_dir else None)
    _print_leaderboard(sweep, args.top)
    return 0 if all(code == 0 for code in codes) else 1


def cmd_status(args: argparse.Namespace) -> int:
    from sweep.summary import sweep_status

    sweep = _load(args)
    s = sweep_status(sweep)
    if args.json:
        out.print_json(json.dumps(s.__dict__, default=str))
        return 0
    counts = ", ".join(f"{k.lower()} {v}" for k, v in sorted(s.counts.items()) if v and k != "FAIL_COUNTED")
    budget = "unlimited" if s.budget_total is None or s.budget_total >= 2**31 - 1 else str(s.budget_total)
    out.print(f"[bold]{s.study}[/]: {counts or 'no trials yet'}; budget {s.finished}/{budget} finished")
    if s.best_value is not None:
        out.print(f"best: {s.best_value:.4f} (trial {s.best_number}: {s.best_label})")
    if s.eta_s is not None:
        out.print(f"ETA: {s.eta_s / 60:.1f} min (median trial {s.median_trial_s:.0f}s)")
    if s.reused:
        out.print(f"deduplicated: {s.reused} trial(s) reused an equal config, {s.epochs_saved} GPU-epochs saved")
    if s.running:
        table = Table("trial", "config", "worker", "epochs", "started", title="running")
        for r in s.running:
            table.add_row(str(r.number), r.label, r.worker, str(r.epochs_reported), str(r.started or ""))
        out.print(table)
    return 0


def _print_leaderboard(sweep: Any, top: int) -> None:
    from sweep.summary import leaderboard

    rows = leaderboard(sweep, top)
    # Light borders and unwrapped penalties: one line per trial even in an 80-column terminal.
    table = Table(title=f"leaderboard: {sweep.name}", box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("#", "trial", "val acc", "kernel", "bias", "activity", "epochs", "seconds"):
        table.add_column(name, no_wrap=True, justify="right" if name in ("#", "trial", "val acc", "epochs", "seconds") else "left")
    for rank, row in enumerate(rows, 1):
        seconds = "" if row["duration_s"] is None else f"{row['duration_s']:.0f}"
        note = f" (= #{row['reused']})" if row["reused"] is not None else ""
        table.add_row(str(rank), str(row["number"]) + note, f"{row['value']:.4f}", *row["penalties"].values(),
                      str(row["epochs"]), seconds)
    out.print(table if rows else "no completed trials yet")


def cmd_best(args: argparse.Namespace) -> int:
    from sweep.summary import leaderboard

    sweep = _load(args)
    if args.json:
        out.print_json(json.dumps(leaderboard(sweep, args.top)))
    else:
        _print_leaderboard(sweep, args.top)
    return 0


def cmd_enqueue(args: argparse.Namespace) -> int:
    from sweep.regconfig import RegularizerConfig
    from sweep.space import params_from_config
    from sweep.storage import db_call

    sweep = _load(args)
    raw: list[Any] = []
    for text in args.config or []:
        try:
            raw.append(json.loads(text))
        except json.JSONDecodeError as error:
            raise SpecError(f"Invalid --config: not JSON ({error.msg}), received {text!r}") from None
    if args.file:
        raw.extend(json.loads(Path(args.file).read_text(encoding="utf-8")))
    if not raw:
        raise SpecError("Invalid enqueue: give --config JSON or --file FILE, received neither")
    params = [params_from_config(RegularizerConfig.from_dict(item), sweep.spec.space) for item in raw]
    for p in params:
        db_call(lambda p=p: sweep.study.enqueue_trial(p, skip_if_exists=True), what="enqueue a config")
    out.print(f"Enqueued {len(params)} config(s) in [bold]{sweep.name}[/]")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from sweep.summary import export_csv

    sweep = _load(args)
    n = export_csv(sweep, args.out)
    out.print(f"Wrote {n} trials to {args.out}")
    return 0


# -- parser --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``sweep`` parser with every sub-command (plugins included)."""
    parser = argparse.ArgumentParser(prog="sweep", description="Regularization sweeps on Optuna + PostgreSQL.")
    parser.add_argument("--log-level", default=None, help="logging level (env SWEEP_LOG_LEVEL, default WARNING)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("create", help="validate a spec and create its study")
    p.add_argument("spec", help="spec file (.toml)")
    p.add_argument("--name", help="study name (overrides study.name)")
    _storage_arg(p)
    p.set_defaults(handler=cmd_create)

    p = sub.add_parser("run", help="create (or continue) a study and run N local workers on it")
    p.add_argument("spec", help="spec file (.toml)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--name", help="study name (overrides study.name)")
    p.add_argument("--top", type=int, default=10, help="leaderboard rows to print")
    p.add_argument("--log-dir", help="folder for worker logs (default regsweep-logs/)")
    _storage_arg(p)
    p.set_defaults(handler=cmd_run)

    for name, handler, text in (
        ("status", cmd_status, "trial counts, best so far, running trials, ETA"),
        ("best", cmd_best, "the leaderboard"),
        ("enqueue", cmd_enqueue, "enqueue known configs to be tried first"),
        ("export", cmd_export, "write all trials to CSV"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("study", help="study name")
        _storage_arg(p)
        p.set_defaults(handler=handler)
        if name in ("status", "best"):
            p.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "best":
            p.add_argument("--top", type=int, default=10, help="rows (default 10)")
        if name == "enqueue":
            p.add_argument("--config", action="append", help='canonical config JSON, e.g. \'{"kernel": {"kind": "l2", "l2": 0.001}}\'')
            p.add_argument("--file", help="JSON file with a list of configs")
        if name == "export":
            p.add_argument("--out", required=True, help="CSV file to write")

    for module_name in _PLUGINS:
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        if hasattr(module, "register_cli"):
            module.register_cli(sub)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
