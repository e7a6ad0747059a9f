"""The study commands of ``sweep``: create, run, enqueue, extend (and the parser of these with status, best, export)."""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
from pathlib import Path
from typing import Any

from sweep.errors import SpecError
from sweep.masking import mask_url
from sweep.penalties.kinds import PLACEMENTS

__all__ = ["register_cli"]

from sweep.cli.common import dataset_arg, load_study, open_study_storage, out, storage_arg
from sweep.cli.views import cmd_best, cmd_export, cmd_status, print_leaderboard


def cmd_create(args: argparse.Namespace) -> int:
    from sweep.spec.load import check_deadline_ahead, load_spec
    from sweep.study.sweeps import budget_total, create_sweep

    spec = load_spec(args.spec, name=args.name, dataset=args.dataset)
    budget_total(spec)  # a spec without any budget fails here, before storage is touched
    check_deadline_ahead(spec)
    storage, url = open_study_storage(args, spec.study.storage)
    sweep, created = create_sweep(spec, storage)
    verb = "Created" if created else "Reusing existing"
    out.print(f"{verb} study [bold]{sweep.name}[/] in {mask_url(url)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from sweep.launcher.local import run_local_workers
    from sweep.report.dashboard import prepare_artifacts
    from sweep.spec.load import check_deadline_ahead, load_spec
    from sweep.study.sweeps import create_sweep

    spec = load_spec(args.spec, name=args.name, dataset=args.dataset)
    check_deadline_ahead(spec)
    artifacts = args.artifacts or os.environ.get("SWEEP_ARTIFACTS")
    extra_env = {"SWEEP_ARTIFACTS": str(Path(prepare_artifacts(artifacts)).resolve())} if artifacts else None
    storage, url = open_study_storage(args, spec.study.storage)
    sweep, created = create_sweep(spec, storage)
    out.print(f"{'Created' if created else 'Continuing'} study [bold]{sweep.name}[/] in {mask_url(url)}")
    codes = run_local_workers(
        sweep, url, args.workers, log_dir=Path(args.log_dir) / sweep.name if args.log_dir else None, extra_env=extra_env
    )
    print_leaderboard(sweep, args.top)
    return 0 if all(code == 0 for code in codes) else 1


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
    from sweep.storage.engine import db_call
    from sweep.study.budget import budget_of
    from sweep.study.sweeps import UNLIMITED

    raw = _read_configs(args)  # bad input fails before storage is opened
    sweep = load_study(args)
    params = [params_from_config(RegularizerConfig.from_dict(_follow_ties(item, sweep.spec.space)), sweep.spec.space)
              for item in raw]
    state = budget_of(sweep.study)
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
    sweep = load_study(args)
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


def register_cli(sub: Any) -> None:
    """Add the study commands (create, run, status, best, enqueue, export, extend) to ``sub``.

    Args:
        sub: The ``sweep`` parser's subparsers object.
    """
    p = sub.add_parser("create", help="validate a spec and create its study")
    p.add_argument("spec", help="spec file (.toml)")
    p.add_argument("--name", help="study name (overrides study.name)")
    dataset_arg(p)
    storage_arg(p)
    p.set_defaults(handler=cmd_create)

    p = sub.add_parser("run", help="create (or continue) a study and run N local workers on it")
    p.add_argument("spec", help="spec file (.toml)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--name", help="study name (overrides study.name)")
    p.add_argument("--top", type=int, default=10, help="leaderboard rows to print")
    p.add_argument("--log-dir", help="folder for worker logs (default regsweep-logs/)")
    p.add_argument("--artifacts", help="artifact folder for the workers' plots and checkpoints (env SWEEP_ARTIFACTS)")
    dataset_arg(p)
    storage_arg(p)
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
        storage_arg(p)
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
