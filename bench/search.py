"""Search efficiency as a tabular benchmark (as NAS-Bench does): epochs until the grid's best.

1. **Table.** Every config of the grid (kernel kind none/L1/L2, bias tied to kernel, lambdas
   ``1e-5, 1e-4, 1e-3, 1e-2``: 9 distinct configs) is trained ONCE for ``E`` epochs with the
   real trainer (``workers.child.train.train``, width 0.25, digits at 32x32), and its per-epoch
   validation accuracy curve and epoch wall times are saved (``search-table-<size>.json``).
2. **Noise.** The grid's best config is trained with 2 more seeds; the spread of its score
   (objective = best validation accuracy over epochs, the spec default ``reduce = "best"``)
   is the tolerance: a strategy has *reached* the grid's best when its best complete value is
   ``>= grid_best - tolerance`` (tolerance = the seeds' standard deviation).
3. **Replay.** Each strategy is replayed against the table with real Optuna samplers and pruners
   (in-memory storage), the config of each trial coming from regsweep's own
   ``sweep.penalties.searchspace.suggest_config``; a trial's intermediate values are the table's curve, and it
   consumes the epochs it ran before pruning or completing. Like the worker (``dedup = true``),
   a config that already completed is reused without training. Strategies: ``grid`` (the 9
   points in a seed-shuffled order; the project enqueues them in a fixed order, also reported),
   ``random``, ``tpe`` (regsweep's TPE: multivariate, grouped, constant liar, 5 startup trials)
   and ``tpe+hyperband`` (``HyperbandPruner(min_resource=1, max_resource=E, reduction_factor=3)``),
   5 seeds each, until reached or the grid's epoch budget (``9 E``) is spent.

    python -m bench.search --epochs 12 --seeds 5
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import optuna

from bench.common import RESULTS, load1, logger, setup, write_result

__all__ = ["SPACE", "build_table", "main", "replay"]

LAMBDAS = [1e-5, 1e-4, 1e-3, 1e-2]
SPACE: dict[str, Any] = {
    "kernel": {"kinds": ["none", "l1", "l2"], "l1": {"values": LAMBDAS}, "l2": {"values": LAMBDAS}},
    "bias": {"tie": "kernel"},
}
SETUP: dict[str, Any] = {"dataset": "digits", "input_size": 32, "width": 0.25, "batch_size": 64,
                         "learning_rate": 0.05, "optimizer": "sgd", "seed": 0}
STRATEGIES = ("grid", "random", "tpe", "tpe+hyperband")


def _spec(epochs: int) -> Any:
    from sweep.spec.load import parse_spec

    return parse_spec({"study": {"name": "bench-search"}, "space": SPACE,
                       "training": {**SETUP, "epochs": epochs}}, source="bench.search")


def _key(config: Any) -> str:
    return json.dumps(config.canonical(), sort_keys=True)


def _train(config: dict[str, Any], epochs: int, seed: int) -> dict[str, Any]:
    from workers.child.train import TrainRequest, train

    stamps: list[float] = []
    t0 = time.perf_counter()

    def on_epoch(metrics: dict[str, Any]) -> str:
        stamps.append(time.perf_counter())
        return "continue"

    result = train(TrainRequest(config=config, setup={**SETUP, "epochs": epochs}, trial_number=0, seed=seed), on_epoch)
    walls = [stamps[0] - t0] + [b - a for a, b in itertools.pairwise(stamps)]
    return {"val_accuracy": [round(v, 5) for v in result["history"]["val_accuracy"]],
            "epoch_wall_s": [round(w, 3) for w in walls]}


def build_table(epochs: int, noise_seeds: int) -> dict[str, Any]:
    """Train the 9 grid configs once (seed 0) and the best one with ``noise_seeds - 1`` more seeds."""
    from sweep.penalties.searchspace import config_from_params, grid_params

    spec = _spec(epochs)
    rows: dict[str, Any] = {}
    started = time.perf_counter()
    for params in grid_params(spec.space):
        config = config_from_params(params, spec.space)
        logger.info("search table: %s, %d epochs", config.label(), epochs)
        row = _train(config.canonical(), epochs, seed=0)
        row["params"] = params
        row["score"] = max(row["val_accuracy"])
        rows[_key(config)] = row
        logger.info("  best val_accuracy %.4f", row["score"])
    best_key = max(rows, key=lambda k: rows[k]["score"])
    scores = [rows[best_key]["score"]]
    for seed in range(1, noise_seeds):
        logger.info("search noise: best config, seed %d", seed)
        scores.append(max(_train(json.loads(best_key), epochs, seed=seed)["val_accuracy"]))
    return {"epochs": epochs, "setup": SETUP, "space": SPACE, "rows": rows, "grid_best_key": best_key,
            "grid_best": rows[best_key]["score"], "best_config_seed_scores": scores,
            "seed_std": round(statistics.stdev(scores), 5) if len(scores) > 1 else 0.0,
            "build_wall_s": round(time.perf_counter() - started, 1), "load1_after": load1()}


def _sampler(strategy: str, seed: int) -> optuna.samplers.BaseSampler:
    if strategy.startswith("tpe"):
        # As sweep.study.sweeps.make_sampler builds it for the spec's default n_startup_trials.
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, multivariate=True, group=True,
                                          constant_liar=True)
    return optuna.samplers.RandomSampler(seed=seed)


def replay(
    table: dict[str, Any],
    strategy: str,
    seed: int,
    target: float,
    grid_order: list[dict[str, Any]] | None = None,
    max_trials: int = 200,
) -> dict[str, Any]:
    """Replay one strategy with one seed against the table; stop when ``target`` is reached."""
    from sweep.penalties.searchspace import suggest_config

    epochs = int(table["epochs"])
    spec = _spec(epochs)
    rows = table["rows"]
    budget = len(rows) * epochs
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
        if strategy.endswith("hyperband") else optuna.pruners.NopPruner())
    study = optuna.create_study(direction="maximize", sampler=_sampler(strategy, seed), pruner=pruner)
    if strategy == "grid":
        order = list(grid_order) if grid_order is not None else list(table["grid_params"])
        if grid_order is None:
            random.Random(seed).shuffle(order)
        for params in order:
            study.enqueue_trial(params)
        max_trials = len(order)
    used_epochs, wall, best = 0, 0.0, -math.inf
    completed: dict[str, float] = {}
    reached_at: dict[str, Any] | None = None
    trials = pruned = reused = 0
    while trials < max_trials and used_epochs < budget:
        trial = study.ask()
        key = _key(suggest_config(trial, spec.space))
        row = rows[key]
        trials += 1
        if key in completed:  # the worker's dedup: an equal finished config is reused, no training
            study.tell(trial, completed[key])
            reused += 1
            continue
        ran, state = 0, "complete"
        for step, value in enumerate(row["val_accuracy"]):
            trial.report(value, step)
            ran = step + 1
            if trial.should_prune():
                state = "pruned"
                break
        used_epochs += ran
        wall += sum(row["epoch_wall_s"][:ran])
        if state == "pruned":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            pruned += 1
            continue
        value = max(row["val_accuracy"])
        completed[key] = value
        study.tell(trial, value)
        best = max(best, value)
        if reached_at is None and best >= target:
            reached_at = {"epochs": used_epochs, "wall_s": round(wall, 1), "trials": trials}
            break
    return {"strategy": strategy, "seed": seed, "reached": reached_at is not None,
            "epochs_to_reach": reached_at["epochs"] if reached_at else None,
            "wall_s_to_reach": reached_at["wall_s"] if reached_at else None,
            "trials": trials, "pruned": pruned, "reused": reused, "epochs_used": used_epochs,
            "best": round(best, 5) if best > -math.inf else None}


def evaluate(table: dict[str, Any], seeds: int) -> dict[str, Any]:
    """All strategies x seeds, summarised against the grid's epochs."""
    from sweep.penalties.searchspace import grid_params

    spec = _spec(int(table["epochs"]))
    table["grid_params"] = grid_params(spec.space)
    tolerance = float(table["seed_std"])
    target = float(table["grid_best"]) - tolerance
    grid_epochs = len(table["rows"]) * int(table["epochs"])
    runs = [replay(table, s, seed, target) for s in STRATEGIES for seed in range(seeds)]
    fixed = replay(table, "grid", 0, target, grid_order=table["grid_params"])
    summary: dict[str, Any] = {}
    for s in STRATEGIES:
        rs = [r for r in runs if r["strategy"] == s]
        eps = [r["epochs_to_reach"] if r["reached"] else grid_epochs for r in rs]
        walls = [r["wall_s_to_reach"] for r in rs if r["reached"]]
        summary[s] = {
            "reached": f"{sum(r['reached'] for r in rs)}/{len(rs)}",
            "epochs_mean": round(statistics.fmean(eps), 1),
            "epochs_std": round(statistics.stdev(eps), 1) if len(eps) > 1 else 0.0,
            "epochs_min": min(eps), "epochs_max": max(eps),
            "share_of_grid_epochs": round(statistics.fmean(eps) / grid_epochs, 3),
            "wall_s_mean_when_reached": round(statistics.fmean(walls), 1) if walls else None,
            "note": "a seed that never reached counts as the grid's full epochs",
        }
    return {"target": round(target, 5), "tolerance": tolerance, "grid_epochs": grid_epochs,
            "grid_fixed_order": fixed, "summary": summary, "runs": runs,
            "goal": "tpe+hyperband <= 30% of the grid's epochs",
            "goal_met": summary["tpe+hyperband"]["share_of_grid_epochs"] <= 0.30}


def table_md(payload: dict[str, Any]) -> str:
    """Markdown table of the strategies."""
    lines = [
        f"Grid best {payload['table']['grid_best']:.4f}, seed std {payload['evaluation']['tolerance']:.4f} "
        f"(target {payload['evaluation']['target']:.4f}); grid = {payload['evaluation']['grid_epochs']} epochs; "
        "grid in the project's fixed order reaches it after "
        f"{payload['evaluation']['grid_fixed_order']['epochs_to_reach']} epochs.",
        "",
        "| strategy | reached | epochs to reach mean ± std (min-max) | share of grid epochs | wall s (mean) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s, r in payload["evaluation"]["summary"].items():
        lines.append(
            f"| {s} | {r['reached']} | {r['epochs_mean']} ± {r['epochs_std']} ({r['epochs_min']}-{r['epochs_max']}) | "
            f"{100 * r['share_of_grid_epochs']:.0f}% | {r['wall_s_mean_when_reached']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI entry: build (or reuse) the table, replay, write ``bench/results/search-<size>.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=5, help="seeds per strategy in the replay")
    parser.add_argument("--noise-seeds", type=int, default=3, help="seeds of the best config for the tolerance")
    parser.add_argument("--reuse-table", action="store_true", help="reuse search-table-<size>.json if present")
    parser.add_argument("--size", default="full")
    args = parser.parse_args(argv)
    setup()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    table_path = RESULTS / f"search-table-{args.size}.json"
    if args.reuse_table and table_path.exists():
        table = json.loads(table_path.read_text())
    else:
        table = build_table(args.epochs, args.noise_seeds)
        RESULTS.mkdir(parents=True, exist_ok=True)
        table_path.write_text(json.dumps(table, indent=1) + "\n")
    payload: dict[str, Any] = {
        "table_file": str(Path(table_path).name),
        "table": {k: v for k, v in table.items() if k != "rows"},
        "scores": {k: r["score"] for k, r in table["rows"].items()},
    }
    payload["evaluation"] = evaluate(table, args.seeds)
    payload["table"].pop("grid_params", None)
    command = "python -m bench.search " + " ".join(argv if argv is not None else sys.argv[1:])
    path = write_result("search", args.size, payload, command.strip(), keras_too=True)
    print(table_md(payload))
    logger.info("wrote %s", path)
    return payload


if __name__ == "__main__":
    main()
