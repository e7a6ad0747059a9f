"""Record the learning-curve table that ``bench.search`` replays (issue 16 s.3); run once, committed.

**Configs** are drawn from the ``full`` preset's space (``sweep/presets/full.toml``: kind none/L1/L2/L1L2
for each of kernel, bias and activity, lambdas log-uniform) by the project's own
``suggest_config`` and a seeded ``RandomSampler``, stratified over the 64 kind combinations: round
``r`` enqueues every combination once (in a seeded order) and the sampler draws its lambdas. A
table cut short therefore still covers every combination evenly.

**Training** is the ``full`` preset's (momentum SGD at 0.05, batch 128, BN momentum 0.9, conv
biases, digits with the spec's split) at width 0.25 and 32x32, for ``--epochs`` epochs, with
each seed of ``--seeds``. What differs from ``workers.child.train.train`` is only how the
penalties reach the graph: one model is traced once per process and reused, every placement
carrying a :class:`VariablePenalty` whose ``l1``/``l2`` are Keras variables (0 where the config
has no such penalty, so the loss is the same sum ``keras.regularizers.L1L2`` computes). Before
each run the weights, BN statistics and optimizer state are reset to that seed's initial values
(the weights a real trial of that seed starts from). Tracing a fresh model costs ~9 s a trial
at this size, more than the whole 12 epochs' training would take twice over.

Each finished run is appended to ``bench/results/search-curves.parts/<proc>.jsonl`` (a rerun
skips what is there, so a recording can be stopped and resumed, in another session too, with the
same ``--procs``: recorder ``p`` trains every ``procs``-th config and reads back only its own file);
``--merge`` writes ``bench/results/search-curves-table.json``.

``--steps-per-epoch N`` records a second table whose epoch is N optimizer steps (cycling through
shuffled passes over the images, ``training.steps_per_epoch``) instead of one pass of 12 steps at
batch 128. On the one-pass table a config's first 1-4 epochs say nothing about its final value
(bench/README.md s.3), while a user's epoch on a real data set is hundreds of steps; its parts
go to ``search-curves-spe<N>.parts`` and its table to ``search-curves-spe<N>-table.json``.

    python -m bench.search_record --configs 4 --procs 2     # rounds of 64 configs each
    python -m bench.search_record --merge
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, load1, logger, setup, write_result
from sweep.penalties.kinds import PLACEMENTS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["SETUP", "draw_configs", "main", "parts_dir", "table_name"]

PRESET = Path(__file__).resolve().parent.parent / "sweep" / "presets" / "full.toml"
#: The full preset's training at the size the table is recorded at (see the module docstring).
SETUP: dict[str, Any] = {"width": 0.25, "input_size": 32}


def table_name(steps_per_epoch: int | None) -> str:
    """The benchmark name of the table recorded with ``steps_per_epoch`` (None: one pass an epoch)."""
    return "search-curves" if steps_per_epoch is None else f"search-curves-spe{steps_per_epoch}"


def parts_dir(steps_per_epoch: int | None) -> Path:
    """Where the recorders of that table append their runs."""
    return RESULTS / f"{table_name(steps_per_epoch)}.parts"


def full_spec(epochs: int, sections: dict[str, dict[str, Any]] | None = None,
              steps_per_epoch: int | None = None) -> Any:
    """The ``full`` preset's spec with the table's width, input size and epochs, validated.

    Args:
        epochs: Epochs of a trial.
        sections: Spec tables to change: ``sampler`` entries update the preset's, any other
            table (``pruner``) replaces it (its keys depend on the pruner's name).
        steps_per_epoch: Optimizer steps an epoch (None: one pass over the training images).
    """
    from sweep.spec.load import parse_spec

    data = tomllib.loads(PRESET.read_text(encoding="utf-8"))
    data["training"].update({**SETUP, "epochs": epochs})
    if steps_per_epoch is not None:
        data["training"]["steps_per_epoch"] = steps_per_epoch
    for section, table in (sections or {}).items():
        data[section] = {**data.get(section, {}), **table} if section == "sampler" else dict(table)
    return parse_spec(data, source=f"bench: {PRESET.name} with {sections or {}}")


def draw_configs(rounds: int, seed: int = 0) -> list[dict[str, Any]]:
    """``rounds`` x 64 configs: each round every kind combination once, lambdas drawn by Optuna."""
    import itertools

    import optuna

    from sweep.penalties.searchspace import suggest_config

    spec = full_spec(12)
    kinds = {p: list(getattr(spec.space, p).kinds) for p in PLACEMENTS}
    combos = [dict(zip(PLACEMENTS, c, strict=True)) for c in itertools.product(*kinds.values())]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    order = random.Random(seed)
    out: list[dict[str, Any]] = []
    for r in range(rounds):
        combos_r = list(combos)
        order.shuffle(combos_r)
        for combo in combos_r:
            study.enqueue_trial({f"{p}_kind": k for p, k in combo.items()})
            trial = study.ask()
            config = suggest_config(trial, spec.space)
            study.tell(trial, 0.0)
            out.append({"id": len(out), "round": r, "params": trial.params, "config": config.canonical()})
    return out


def _session(epochs: int, steps_per_epoch: int | None) -> Any:
    """Build the reusable model, each seed's initial state, and the run function (Keras from here)."""
    import keras

    from workers.child.data import load_dataset
    from workers.child.model import build_classifier
    from workers.child.regularizers import RegularizerSet
    from workers.child.train import _inputs, _optimizer

    spec = full_spec(epochs, steps_per_epoch=steps_per_epoch)
    t = spec.training.model_dump()
    t.update({"mixed_precision": "off"})

    @keras.saving.register_keras_serializable(package="bench")
    class VariablePenalty(keras.regularizers.Regularizer):
        """``l1 * sum|x| + l2 * sum x^2`` with variable lambdas: one traced graph for every config."""

        def __init__(self, name: str) -> None:
            self.l1 = keras.Variable(0.0, trainable=False, name=f"{name}_l1")
            self.l2 = keras.Variable(0.0, trainable=False, name=f"{name}_l2")

        def __call__(self, x: Any) -> Any:
            ops = keras.ops
            return (ops.multiply(ops.cast(self.l1, x.dtype), ops.sum(ops.abs(x)))
                    + ops.multiply(ops.cast(self.l2, x.dtype), ops.sum(ops.square(x))))

    data = load_dataset(t["dataset"], image_size=int(t["input_size"]), val_fraction=float(t["val_fraction"]),
                        seed=int(t["seed"]))
    build: dict[str, Any] = {"input_shape": data.x_train.shape[1:], "num_classes": data.num_classes,
                             "width": float(t["width"]), "bn_momentum": float(t["bn_momentum"]),
                             "conv_bias": bool(t["conv_bias"])}
    penalties = {p: VariablePenalty(p) for p in PLACEMENTS}
    keras.utils.set_random_seed(0)
    model = build_classifier(**build, regularizers=RegularizerSet(**penalties))
    model.compile(optimizer=_optimizer(t), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")], jit_compile=False)
    model.optimizer.build(model.trainable_variables)
    optimizer_start = [v.numpy() for v in model.optimizer.variables]
    initial: dict[int, list[Any]] = {}

    def start_weights(seed: int) -> list[Any]:
        # The weights a real trial of this seed starts from: seed, then build (no penalties draw).
        if seed not in initial:
            keras.utils.set_random_seed(seed)
            initial[seed] = build_classifier(**build).get_weights()
        return initial[seed]

    def run(config: dict[str, Any], seed: int) -> dict[str, Any]:
        for placement, penalty in penalties.items():
            spec_p = config.get(placement) or {}
            penalty.l1.assign(float(spec_p.get("l1", 0.0)))
            penalty.l2.assign(float(spec_p.get("l2", 0.0)))
        model.set_weights(start_weights(seed))
        for variable, value in zip(model.optimizer.variables, optimizer_start, strict=True):
            variable.assign(value)
        keras.utils.set_random_seed(seed)
        started = time.process_time()
        wall = time.perf_counter()
        history = model.fit(epochs=epochs, verbose=0, callbacks=[keras.callbacks.TerminateOnNaN()],
                            **_inputs(data, int(t["batch_size"]), seed, t["steps_per_epoch"])).history
        accuracy = [round(float(v), 5) for v in history.get("val_accuracy", [])]
        diverged = len(accuracy) < epochs or any(not math.isfinite(float(v)) for v in history.get("loss", []))
        return {"val_accuracy": accuracy, "diverged": diverged,
                "cpu_s": round(time.process_time() - started, 2), "wall_s": round(time.perf_counter() - wall, 2)}

    return run


def record(proc: int, procs: int, rounds: int, seeds: int, epochs: int, steps_per_epoch: int | None = None) -> None:
    """Train this process's share of the configs (every ``procs``-th), appending each run."""
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    parts = parts_dir(steps_per_epoch)
    parts.mkdir(parents=True, exist_ok=True)
    path = parts / f"{proc}.jsonl"
    done = set()
    if path.exists():
        done = {(r["id"], r["seed"]) for r in map(json.loads, path.read_text().splitlines())}
    run = _session(epochs, steps_per_epoch)
    configs = draw_configs(rounds)[proc::procs]
    with path.open("a", encoding="utf-8") as out:
        for n, c in enumerate(configs):
            for seed in range(seeds):
                if (c["id"], seed) in done:
                    continue
                result = run(c["config"], seed)
                out.write(json.dumps({"id": c["id"], "seed": seed, "epochs": epochs, **result}) + "\n")
                out.flush()
                logger.info("proc %d: config %d/%d (id %d) seed %d: best %.4f, %.1f s (load %.2f)", proc, n + 1,
                            len(configs), c["id"], seed, max(result["val_accuracy"] or [0.0]), result["wall_s"],
                            load1())


def merge(rounds: int, epochs: int, steps_per_epoch: int | None = None) -> Path:
    """Join the parts with the drawn configs into ``<table_name>-table.json``."""
    configs = {c["id"]: {**c, "curves": {}, "diverged": {}} for c in draw_configs(rounds)}
    cpu = wall = 0.0
    for part in sorted(parts_dir(steps_per_epoch).glob("*.jsonl")):
        for row in map(json.loads, part.read_text().splitlines()):
            if row["epochs"] != epochs or row["id"] not in configs:
                continue
            configs[row["id"]]["curves"][str(row["seed"])] = row["val_accuracy"]
            configs[row["id"]]["diverged"][str(row["seed"])] = row["diverged"]
            cpu += row["cpu_s"]
            wall += row["wall_s"]
    rows = [c for c in configs.values() if c["curves"]]
    payload = {"epochs": epochs, "setup": full_spec(epochs, steps_per_epoch=steps_per_epoch).training.model_dump(),
               "preset": "sweep/presets/full.toml",
               "configs": rows, "runs": sum(len(c["curves"]) for c in rows),
               "training_cpu_s": round(cpu), "training_wall_s_summed_over_procs": round(wall)}
    command = "python -m bench.search_record --merge" + (
        "" if steps_per_epoch is None else f" --steps-per-epoch {steps_per_epoch}")
    return write_result(table_name(steps_per_epoch), "table", payload, command, keras_too=True)


def main(argv: list[str] | None = None) -> int:
    """CLI: start ``--procs`` recorders (or one with ``--proc``), or ``--merge``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=4, help="rounds of the 64 kind combinations")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="optimizer steps an epoch (default: one pass over the images)")
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--proc", type=int, help="run one recorder (what --procs starts)")
    parser.add_argument("--merge", action="store_true")
    args = parser.parse_args(argv)
    setup()
    logging.getLogger("workers").setLevel("WARNING")
    if args.merge:
        logger.info("wrote %s", merge(args.configs, args.epochs, args.steps_per_epoch))
        return 0
    if args.proc is not None:
        record(args.proc, args.procs, args.configs, args.seeds, args.epochs, args.steps_per_epoch)
        return 0
    import subprocess

    base = [sys.executable, "-m", "bench.search_record", "--configs", str(args.configs), "--seeds", str(args.seeds),
            "--epochs", str(args.epochs), "--procs", str(args.procs)]
    if args.steps_per_epoch is not None:
        base += ["--steps-per-epoch", str(args.steps_per_epoch)]
    children = [subprocess.Popen([*base, "--proc", str(p)]) for p in range(args.procs)]
    return max(child.wait() for child in children)


if __name__ == "__main__":
    raise SystemExit(main())
