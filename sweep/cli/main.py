"""``sweep``: create, run and inspect regularization sweeps (never imports Keras).

Storage precedence: ``--storage`` > ``SWEEP_STORAGE`` > ``OPTUNA_STORAGE`` > the spec's
``study.storage`` > ``sqlite:///regsweep.db``. Passwords are masked in every output.
Exit status: 0 on success, the error's ``exit_code`` (2 bad input, 3 storage) otherwise.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from sweep.errors import RegsweepError, SpecError
from sweep.logs import setup_logging
from sweep.masking import mask_secrets, mask_url
from sweep.penalties.kinds import PLACEMENTS
from sweep.storage.engine import StorageConfig, open_storage
from sweep.storage.url import hide_password_from_ps, require_existing, resolve_storage_url

__all__ = ["main", "build_parser"]

_logger = logging.getLogger("sweep")
out = Console(highlight=False, soft_wrap=True)
Handler = Callable[[argparse.Namespace], int]

#: Sub-command groups that live in their own modules and register themselves.
_PLUGINS = ("sweep.launcher.cli", "sweep.schedule.cron", "sweep.report.write", "sweep.report.dashboard")


def _storage_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", help="storage URL (default: SWEEP_STORAGE, OPTUNA_STORAGE, spec, sqlite:///regsweep.db)")


def _open(args: argparse.Namespace, spec_storage: str | None = None, *, existing: bool = False) -> tuple[Any, str]:
    url = resolve_storage_url(args.storage, spec_storage)
    if existing:  # commands on a study never create a database (an empty regsweep.db in cwd)
        require_existing(url, args.storage)
    # A person is waiting: fail in seconds, not after the workers' minute of retries.
    return open_storage(url, StorageConfig(open_attempts=2, connect_timeout=5)), url


def _load(args: argparse.Namespace) -> Any:
    from sweep.study.sweeps import load_sweep

    storage, _ = _open(args, existing=True)
    return load_sweep(storage, args.study, wait_s=0)


def _out_file(out: str) -> Path:
    """An output file path whose folder exists and which is not itself a folder."""
    path = Path(out)
    if path.is_dir():
        raise SpecError(f"Invalid --out: expected a file name, received a directory, out={out!r}")
    if not path.parent.is_dir():
        raise SpecError(f"Invalid --out: folder {str(path.parent)!r} does not exist, received out={out!r}")
    return path


# -- commands ------------------------------------------------------------------------------------
def cmd_create(args: argparse.Namespace) -> int:
    from sweep.spec.model import check_deadline_ahead, load_spec
    from sweep.study.sweeps import budget_total, create_sweep

    spec = load_spec(args.spec, name=args.name, dataset=args.dataset)
    budget_total(spec)  # a spec without any budget fails here, before storage is touched
    check_deadline_ahead(spec)
    storage, url = _open(args, spec.study.storage)
    sweep, created = create_sweep(spec, storage)
    verb = "Created" if created else "Reusing existing"
    out.print(f"{verb} study [bold]{sweep.name}[/] in {mask_url(url)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from sweep.launcher.local import run_local_workers
    from sweep.report.dashboard import prepare_artifacts
    from sweep.spec.model import check_deadline_ahead, load_spec
    from sweep.study.sweeps import create_sweep

    spec = load_spec(args.spec, name=args.name, dataset=args.dataset)
    check_deadline_ahead(spec)
    artifacts = args.artifacts or os.environ.get("SWEEP_ARTIFACTS")
    extra_env = {"SWEEP_ARTIFACTS": str(Path(prepare_artifacts(artifacts)).resolve())} if artifacts else None
    storage, url = _open(args, spec.study.storage)
    sweep, created = create_sweep(spec, storage)
    out.print(f"{'Created' if created else 'Continuing'} study [bold]{sweep.name}[/] in {mask_url(url)}")
    codes = run_local_workers(
        sweep, url, args.workers, log_dir=Path(args.log_dir) / sweep.name if args.log_dir else None, extra_env=extra_env
    )
    _print_leaderboard(sweep, args.top)
    return 0 if all(code == 0 for code in codes) else 1


def cmd_status(args: argparse.Namespace) -> int:
    from sweep.report.summary import sweep_status
    from sweep.study.sweeps import UNLIMITED

    sweep = _load(args)
    s = sweep_status(sweep)
    if args.json:
        print(json.dumps(s.as_json(), indent=2))  # plain print: rich would wrap long strings
        return 0
    counts = ", ".join(f"{k.lower()} {v}" for k, v in sorted(s.counts.items()) if v and k != "FAIL_COUNTED")
    budget = "unlimited" if s.budget_total is None or s.budget_total >= UNLIMITED else str(s.budget_total)
    out.print(f"[bold]{s.study}[/]: {counts or 'no trials yet'}; budget {s.finished}/{budget} finished")
    if s.best_value is not None:
        out.print(f"best: {s.best_value:.4f} (trial {s.best_number}: {s.best_label})")
    if s.eta_s is not None:
        out.print(f"ETA: {s.eta_s / 60:.1f} min (median trial {s.median_trial_s:.0f}s)")
    if s.reused:
        out.print(f"deduplicated: {s.reused} trial(s) reused an equal config, {s.epochs_saved} GPU-epochs saved")
    if s.running:
        # One line per trial in 80 columns: long penalty and GPU texts are cut, never wrapped.
        table = Table(title="running", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
        for name in ("trial", "ep", "started", *PLACEMENTS, "worker"):
            table.add_column(name, no_wrap=True, justify="right" if name in ("trial", "ep") else "left",
                             overflow="ellipsis", min_width=len(name))
        for r in s.running:
            started = "" if r.started is None else r.started.strftime("%H:%M")
            host, pid = r.worker.rsplit(":", 1) if ":" in r.worker else (r.worker, "?")
            # pid first: a cut-off tail loses the domain and GPU name, not what identifies the process.
            worker = f"{pid}@{host.split('.')[0]} {r.gpu}"
            table.add_row(
                str(r.number), str(r.epochs_reported), started, *(r.penalties.get(p, "?") for p in PLACEMENTS), worker
            )
        out.print(table, soft_wrap=False)
    return 0


def _print_leaderboard(sweep: Any, top: int) -> None:
    from sweep.report.summary import leaderboard, pruned_count

    rows = leaderboard(sweep, top)
    pruned = pruned_count(sweep)
    # Light borders and unwrapped penalties: one line per trial even in an 80-column terminal.
    # Only the penalty texts are cut when space runs out; the numbers keep their full width.
    table = Table(title=f"leaderboard: {sweep.name}", box=box.SIMPLE_HEAD, pad_edge=False, padding=0)
    numbers = {"#": 3, "trial": 5, "val acc": 7, "epochs": 6, "seconds": 7}
    # What the numbers leave, shared by the three penalty columns; the box draws one space
    # between columns and one at each edge.
    gaps = len(numbers) + len(PLACEMENTS) + 1
    penalty_width = max(8, (out.width - sum(numbers.values()) - gaps) // len(PLACEMENTS))
    for name in ("#", "trial", "val acc", *PLACEMENTS, "epochs", "seconds"):
        if name in numbers:
            table.add_column(name, no_wrap=True, justify="right", min_width=numbers[name])
        else:
            table.add_column(name, no_wrap=True, overflow="ellipsis", max_width=penalty_width)
    for rank, row in enumerate(rows, 1):
        seconds = "" if row["duration_s"] is None else f"{row['duration_s']:.0f}"
        note = f" (= #{row['reused']})" if row["reused"] is not None else ""
        table.add_row(str(rank), str(row["number"]) + note, f"{row['value']:.4f}", *row["penalties"].values(),
                      str(row["epochs"]), seconds)
    out.print(table if rows else "no completed trials yet")
    if pruned:
        out.print(f"{pruned} pruned trial(s) not shown (stopped early by the pruner; `sweep export` lists them)")


def cmd_best(args: argparse.Namespace) -> int:
    from sweep.report.summary import leaderboard

    sweep = _load(args)
    if args.json:
        out.print_json(json.dumps(leaderboard(sweep, args.top)))
    else:
        _print_leaderboard(sweep, args.top)
    return 0


def _read_configs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The configs of ``--config`` and ``--file``, each a dict (one-line errors otherwise)."""
    raw: list[Any] = []
    for text in args.config or []:
        try:
            raw.append(json.loads(text))
        except json.JSONDecodeError as error:
            raise SpecError(f"Invalid --config: not JSON ({error.msg}), received {text!r}") from None
    if args.file:
        try:
            loaded = json.loads(Path(args.file).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SpecError(f"Invalid --file: file not found, received file={args.file!r}") from None
        except (OSError, UnicodeDecodeError) as error:
            raise SpecError(
                f"Invalid --file: cannot read it ({error.__class__.__name__}), received file={args.file!r}"
            ) from None
        except json.JSONDecodeError as error:
            raise SpecError(
                f"Invalid --file: not JSON ({error.msg} at line {error.lineno}), received file={args.file!r}"
            ) from None
        if not isinstance(loaded, list):
            raise SpecError(f"Invalid --file: expected a JSON list of configs, received a {type(loaded).__name__}, "
                            f"file={args.file!r}")
        raw.extend(loaded)
    if not raw:
        raise SpecError("Invalid enqueue: give --config JSON or --file FILE, received neither")
    for item in raw:
        if not isinstance(item, dict):
            raise SpecError(f"Invalid config: expected a JSON object per config, received {item!r}")
    return raw


def _follow_ties(item: dict[str, Any], space: Any) -> dict[str, Any]:
    """A tied placement the user left out takes its target's penalty (what the sampler does)."""
    filled = dict(item)
    for placement in PLACEMENTS:
        target = getattr(space, placement).tie
        if target is not None and placement not in filled:
            filled[placement] = item.get(target, {"kind": "none"})
    return filled


def _same_params(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    return all(
        math.isclose(float(v), float(b[k]), rel_tol=1e-9)
        if isinstance(v, (int, float)) and not isinstance(v, bool)
        else v == b[k]
        for k, v in a.items()
    )


def cmd_enqueue(args: argparse.Namespace) -> int:
    from optuna.trial import TrialState

    from sweep.penalties.config import RegularizerConfig
    from sweep.penalties.searchspace import params_from_config
    from sweep.storage.engine import db_call, engine_of
    from sweep.study.budget import budget_state
    from sweep.study.sweeps import UNLIMITED

    raw = _read_configs(args)  # bad input fails before storage is opened
    sweep = _load(args)
    params = [params_from_config(RegularizerConfig.from_dict(_follow_ties(item, sweep.spec.space)), sweep.spec.space)
              for item in raw]
    state = budget_state(engine_of(sweep.study._storage), sweep.name)
    if state is not None and state.left == 0:
        raise SpecError(
            f"Invalid enqueue: study {sweep.name!r} has spent its budget ({state.claimed}/{state.total} trials), "
            f"so a queued config would never run; nothing enqueued. Add slots with "
            f"`sweep extend {sweep.name} --trials N`, then enqueue again"
        )
    trials = db_call(lambda: sweep.study.get_trials(deepcopy=False), what="list trials")
    added, skipped = 0, []
    for p in params:
        match = next((t for t in trials if _same_params(t.system_attrs.get("fixed_params", t.params), p)), None)
        if match is not None:
            verb = (
                "already queued" if match.state == TrialState.WAITING else f"already tried ({match.state.name.lower()})"
            )
            skipped.append(f"{verb} as trial {match.number}")
            continue
        db_call(functools.partial(sweep.study.enqueue_trial, p), what="enqueue a config")
        trials = db_call(lambda: sweep.study.get_trials(deepcopy=False), what="list trials")
        added += 1
    out.print(f"Enqueued {added} config(s) in [bold]{sweep.name}[/]"
              + (f"; {len(skipped)} skipped: {', '.join(skipped)}" if skipped else ""))
    waiting = sum(1 for t in trials if t.state == TrialState.WAITING)
    if state is not None and state.total < UNLIMITED and waiting > state.left:
        out.print(f"note: {waiting} trials wait for {state.left} free budget slot(s); "
                  f"`sweep extend {sweep.name} --trials N` adds slots")
    return 0


def cmd_extend(args: argparse.Namespace) -> int:
    from sweep.storage.engine import engine_of
    from sweep.study.budget import budget_state, extend

    if args.trials < 1:
        raise SpecError(f"Invalid --trials: expected a positive integer, received trials={args.trials}")
    sweep = _load(args)
    engine = engine_of(sweep.study._storage)
    if budget_state(engine, sweep.name) is None:
        raise SpecError(f"Invalid extend: study {sweep.name!r} has no regsweep budget row")
    extend(engine, sweep.name, args.trials)
    state = budget_state(engine, sweep.name)
    assert state is not None
    out.print(f"Extended [bold]{sweep.name}[/] by {args.trials}: budget {state.total} trials, "
              f"{state.claimed} used, {state.left} free; run workers on it again (`sweep-worker --study {sweep.name}`, "
              f"or `sweep run` with its spec)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from sweep.report.summary import export_csv

    path = _out_file(args.out)
    sweep = _load(args)
    n = export_csv(sweep, path)
    out.print(f"Wrote {n} trials to {args.out}")
    return 0


# -- parser --------------------------------------------------------------------------------------
def _dataset_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset",
                   help="training data (overrides training.dataset): digits, dir:PATH, npz:PATH or tfds:NAME")


def build_parser() -> argparse.ArgumentParser:
    """The ``sweep`` parser with every sub-command (plugins included)."""
    parser = argparse.ArgumentParser(prog="sweep", description="Regularization sweeps on Optuna + PostgreSQL.")
    parser.add_argument("--log-level", default=None, help="logging level (env SWEEP_LOG_LEVEL, default WARNING)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("create", help="validate a spec and create its study")
    p.add_argument("spec", help="spec file (.toml)")
    p.add_argument("--name", help="study name (overrides study.name)")
    _dataset_arg(p)
    _storage_arg(p)
    p.set_defaults(handler=cmd_create)

    p = sub.add_parser("run", help="create (or continue) a study and run N local workers on it")
    p.add_argument("spec", help="spec file (.toml)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--name", help="study name (overrides study.name)")
    p.add_argument("--top", type=int, default=10, help="leaderboard rows to print")
    p.add_argument("--log-dir", help="folder for worker logs (default regsweep-logs/)")
    p.add_argument("--artifacts", help="artifact folder for the workers' plots and checkpoints (env SWEEP_ARTIFACTS)")
    _dataset_arg(p)
    _storage_arg(p)
    p.set_defaults(handler=cmd_run)

    for name, handler, text in (
        ("status", cmd_status, "trial counts, best so far, running trials, ETA"),
        ("best", cmd_best, "the leaderboard"),
        ("enqueue", cmd_enqueue, "enqueue known configs to be tried first"),
        ("export", cmd_export, "write all trials to CSV"),
        ("extend", cmd_extend, "add budget slots to a study (e.g. to continue a finished one)"),
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
            p.add_argument(
                "--config",
                action="append",
                help='canonical config JSON, e.g. \'{"kernel": {"kind": "l2", "l2": 0.001}}\'',
            )
            p.add_argument("--file", help="JSON file with a list of configs")
        if name == "export":
            p.add_argument("--out", required=True, help="CSV file to write")
        if name == "extend":
            p.add_argument("--trials", type=int, required=True, help="slots to add")

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
    except BrokenPipeError:  # `sweep status --json | head`: the reader left, nothing is wrong here
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
