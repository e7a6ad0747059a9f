"""Orchestration overhead: the project's worker loop vs a bare Optuna ask/report/tell loop.

Both run against the same PostgreSQL with a trivial objective (5 epochs, 5 reports, no sleep):

* ``optuna``: ``study.ask()``, two ``suggest_*`` calls, 5 x ``trial.report``, ``study.tell``;
* ``project``: the real :class:`workers.parent.loop.WorkerLoop` with the real training child
  (``workers.synthetic:train``, ``epoch_seconds=0``), heartbeats on as in ``sweep-worker``.

Timing is added from outside, in the benchmark process only: library functions are wrapped
(``sweep.study.budget.claim``, ``study.ask``, ``suggest_config``, the epoch handler, ``study.tell``,
``sweep.study.budget.settle``, ``Trial.report``/``set_user_attr``); no timing code lives in the library.
Each configuration runs on a fresh study with ``N`` processes started together behind a barrier.

A realistic trial (5 epochs of the width-0.25 classifier at 32x32 with the real Keras trainer)
is timed once through the same worker loop, to express the overhead as a share of a trial.

    python -m bench.orchestration --procs 1 4 16 --trials-per-proc 20
"""

from __future__ import annotations

import argparse
import functools
import logging
import multiprocessing as mp
import os
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import PG_URL, load1, logger, setup, summarize, write_result

__all__ = ["main", "realistic_trial", "run_config"]

EPOCHS = 5
KINDS = ["none", "l1", "l2"]

SPEC = """
dedup = false
[study]
name = "{name}"
[space.kernel]
kinds = ["none", "l1", "l2"]
[training]
trainer = "{trainer}"
epochs = {epochs}
{training_extra}
[sampler]
name = "random"
seed = 7
[pruner]
name = "none"
[budget]
trials = {trials}
"""
SYNTHETIC_EXTRA = "trainer_options = { epoch_seconds = 0 }"
KERAS_EXTRA = 'dataset = "digits"\ninput_size = 32\nwidth = 0.25\nbatch_size = 64'


class _Timer:
    """Collects durations per operation name in this process."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = defaultdict(list)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.samples[name].append(time.perf_counter() - start)

        return timed


def _create(name: str, trainer: str, trials: int, extra: str) -> None:
    from sweep.spec.load import load_spec
    from sweep.storage.engine import open_storage
    from sweep.study.sweeps import create_sweep

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.toml"
        path.write_text(SPEC.format(name=name, trainer=trainer, epochs=EPOCHS, training_extra=extra, trials=trials))
        create_sweep(load_spec(path), open_storage(PG_URL))


def _bare_worker(name: str, index: int, trials: int, barrier: Any, out: Any) -> None:
    """A bare Optuna loop: ask, suggest the same kind of space, report 5 times, tell."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    timer = _Timer()
    storage = optuna.storages.RDBStorage(PG_URL)
    study = optuna.load_study(
        study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler(seed=7 + 1000 * index)
    )
    barrier.wait()
    began = time.perf_counter()
    for _ in range(trials):
        t0 = time.perf_counter()
        trial = timer.wrap("ask", study.ask)()
        t1 = time.perf_counter()
        kind = trial.suggest_categorical("kernel.kind", KINDS)
        if kind != "none":
            trial.suggest_float(f"kernel.{kind}", 1e-6, 1e-1, log=True)
        t2 = time.perf_counter()
        for epoch in range(EPOCHS):
            timer.wrap("report", trial.report)(0.1 * (epoch + 1), epoch)
        t3 = time.perf_counter()
        timer.wrap("tell", study.tell)(trial, 0.5)
        timer.samples["suggest"].append(t2 - t1)
        timer.samples["reports_per_trial"].append(t3 - t2)
        timer.samples["trial"].append(time.perf_counter() - t0)
    out.put({"index": index, "began": began, "ended": time.perf_counter(), "samples": dict(timer.samples)})


def _project_worker(name: str, index: int, trials: int, barrier: Any, out: Any, trainer_ref: str) -> None:
    """The real WorkerLoop, with library calls wrapped for timing in this process only."""
    import optuna

    import workers.parent.loop as loop_module
    import workers.parent.trial as trial_module
    from sweep.storage.engine import GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S, StorageConfig, open_storage
    from sweep.study import budget
    from sweep.study.budget import ReleaseSlotAndRetry
    from workers.child.request import TrainResult
    from workers.parent.runner import TrainerProcess

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("workers").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="Heartbeat of storage")
    timer = _Timer()
    budget.claim = timer.wrap("claim", budget.claim)
    budget.settle = timer.wrap("settle", budget.settle)
    trial_module.suggest_config = timer.wrap("suggest", trial_module.suggest_config)
    optuna.storages.fail_stale_trials = timer.wrap("fail_stale", optuna.storages.fail_stale_trials)
    # Timers patched over methods on purpose: mypy rejects assigning to a method ([method-assign]).
    optuna.trial.Trial.report = timer.wrap("report", optuna.trial.Trial.report)  # type: ignore[method-assign]
    optuna.trial.Trial.set_user_attr = timer.wrap("set_user_attr", optuna.trial.Trial.set_user_attr)  # type: ignore[method-assign]

    class TimedTrainer(TrainerProcess):
        def run(self, request: dict[str, Any], on_epoch: Callable[[dict[str, Any]], str],
                timeout_s: float | None = None) -> TrainResult:
            return timer.wrap("train_call", super().run)(request, timer.wrap("epoch_handler", on_epoch), timeout_s)

    storage = open_storage(PG_URL, StorageConfig(heartbeat_interval=HEARTBEAT_INTERVAL_S, grace_period=GRACE_PERIOD_S),
                           stale_trial_callback=ReleaseSlotAndRetry())
    trainer = TimedTrainer(trainer_ref)
    loop = loop_module.WorkerLoop(storage, name, trainer=trainer, worker_index=index, max_trials=trials,
                                  poll_interval=0.2)
    # As above: this study's ask and tell, the trial run and the tell with its budget settle, timed in place.
    loop.recorder.tell = timer.wrap("tell+settle", loop.recorder.tell)  # type: ignore[method-assign]
    loop.runner.run = timer.wrap("run_trial", loop.runner.run)  # type: ignore[method-assign]
    loop.study.ask = timer.wrap("ask", loop.study.ask)  # type: ignore[method-assign]
    loop.study.tell = timer.wrap("tell", loop.study.tell)  # type: ignore[method-assign]
    trainer.start()
    trainer._await_ready()  # the child's imports are start-up cost, not per-trial overhead
    barrier.wait()
    began = time.perf_counter()
    loop.run()
    ended = time.perf_counter()
    samples = dict(timer.samples)
    claims, asks = samples.get("claim", []), samples.get("ask", [])
    samples["claim+ask"] = [c + a for c, a in zip(claims, asks, strict=False)]  # a last claim may find no trial to ask
    out.put({"index": index, "began": began, "ended": ended, "samples": samples})


def run_config(mode: str, procs: int, trials_per_proc: int, trainer_ref: str = "workers.synthetic:train",
               extra: str = SYNTHETIC_EXTRA) -> dict[str, Any]:
    """Run ``procs`` workers of one mode on a fresh study; return throughput and per-op stats.

    Args:
        mode: ``"optuna"`` (bare loop) or ``"project"`` (WorkerLoop).
        procs: Worker processes started together.
        trials_per_proc: Trials each process runs.
        trainer_ref: The project's trainer (synthetic for overhead, ``keras`` for a real trial).
        extra: Extra ``[training]`` lines of the spec.
    """
    name = f"bench-orch-{mode}-{procs}-{os.getpid()}-{int(time.time() * 1000)}"
    total = procs * trials_per_proc
    _create(name, trainer_ref if mode == "project" else "workers.synthetic:train", total, extra)
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    target = _bare_worker if mode == "optuna" else _project_worker
    args_of = (lambda i: (name, i, trials_per_proc, barrier, out)) if mode == "optuna" else (
        lambda i: (name, i, trials_per_proc, barrier, out, trainer_ref))
    workers = [ctx.Process(target=target, args=args_of(i), daemon=False) for i in range(procs)]
    load_before = load1()
    for w in workers:
        w.start()
    reports = [out.get(timeout=1800) for _ in workers]
    for w in workers:
        w.join(timeout=60)
    wall = max(r["ended"] for r in reports) - min(r["began"] for r in reports)
    merged: dict[str, list[float]] = defaultdict(list)
    for r in reports:
        for key, values in r["samples"].items():
            merged[key].extend(values)
    done = len(merged["trial"]) if mode == "optuna" else len(merged["run_trial"])
    return {
        "mode": mode,
        "procs": procs,
        "trials": done,
        "wall_s": round(wall, 3),
        "trials_per_s": round(done / wall, 2),
        "load1_before": load_before,
        "ops_ms": {key: summarize(values) for key, values in sorted(merged.items())},
        "run_trial_ms_raw": [round(v * 1000, 1) for v in merged.get("run_trial", [])],
    }


def realistic_trial(trials: int = 2) -> dict[str, Any]:
    """Wall time of a real 5-epoch Keras trial (width 0.25, 32x32, digits) through the worker loop.

    Two trials run in one worker; the second is the steady one (the child imported TensorFlow
    and traced once already).
    """
    result = run_config("project", 1, trials, trainer_ref="keras", extra=KERAS_EXTRA)
    return {"trials": trials, "result": result}


def _ratios(bare: dict[str, Any], project: dict[str, Any]) -> dict[str, Any]:
    b, p = bare["ops_ms"], project["ops_ms"]
    pairs = {"claim+ask / ask": ("claim+ask", "ask"), "epoch_handler / report": ("epoch_handler", "report"),
             "tell+settle / tell": ("tell+settle", "tell")}
    out: dict[str, Any] = {}
    for label, (pk, bk) in pairs.items():
        out[label] = {q: round(p[pk][q] / b[bk][q], 2) for q in ("p50", "p95") if b[bk].get(q)}
    out["trial_throughput bare/project"] = round(bare["trials_per_s"] / project["trials_per_s"], 2)
    return out


def run(procs: list[int], trials_per_proc: dict[int, int], with_real_trial: bool) -> dict[str, Any]:
    """All configurations, their ratios and the overhead share of a realistic trial."""
    configs: list[dict[str, Any]] = []
    for n in procs:
        for mode in ("optuna", "project"):
            logger.info("orchestration: %s x%d (%d trials each)", mode, n, trials_per_proc[n])
            configs.append(run_config(mode, n, trials_per_proc[n]))
            logger.info("  %.1f trials/s", configs[-1]["trials_per_s"])
    ratios = {}
    for n in procs:
        bare = next(c for c in configs if c["procs"] == n and c["mode"] == "optuna")
        project = next(c for c in configs if c["procs"] == n and c["mode"] == "project")
        ratios[str(n)] = _ratios(bare, project)
    payload: dict[str, Any] = {"epochs_per_trial": EPOCHS, "configs": configs, "ratios": ratios}
    if with_real_trial:
        logger.info("orchestration: one realistic Keras trial for scale")
        real = realistic_trial()
        # The last trial is the steady one: the first also pays the child's TensorFlow import.
        steady_ms = real["result"]["run_trial_ms_raw"][-1]
        payload["realistic_trial"] = {"steady_trial_ms": round(steady_ms, 1), **real}
        share = {}
        for c in configs:
            if c["mode"] != "project":
                continue
            o = c["ops_ms"]
            # Orchestration per trial = the whole loop iteration minus what the trainer itself does
            # (with the synthetic trainer that is only the pipe round-trips). Upper bound: the full
            # iteration time of a worker at this concurrency.
            per_trial = c["procs"] * 1000.0 / c["trials_per_s"]
            db_ms = o["claim+ask"]["mean"] + o["tell+settle"]["mean"] + EPOCHS * o["epoch_handler"]["mean"] \
                + o.get("fail_stale", {}).get("mean", 0.0) + o["suggest"]["mean"]
            share[str(c["procs"])] = {
                "iteration_ms": round(per_trial, 1),
                "db_ops_ms": round(db_ms, 1),
                "share_iteration_pct": round(100 * per_trial / steady_ms, 2),
                "share_db_ops_pct": round(100 * db_ms / steady_ms, 2),
            }
        payload["overhead_share_of_real_trial"] = share
    return payload


def table(payload: dict[str, Any]) -> str:
    """A markdown table of the configurations and ratios."""
    lines = [
        "| mode | procs | trials/s | ask or claim+ask p50/p95 ms | report or handler p50/p95 ms "
        "| tell or tell+settle p50/p95 ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for c in payload["configs"]:
        o = c["ops_ms"]
        keys = ("ask", "report", "tell") if c["mode"] == "optuna" else ("claim+ask", "epoch_handler", "tell+settle")
        cells = [f"{o[k]['p50']:.1f} / {o[k]['p95']:.1f}" for k in keys]
        lines.append(f"| {c['mode']} | {c['procs']} | {c['trials_per_s']:.1f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| procs | claim+ask/ask p50 | handler/report p50 | tell+settle/tell p50 | bare/project trials/s "
        "| overhead share of real trial |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    shares = payload.get("overhead_share_of_real_trial", {})
    for n, r in payload["ratios"].items():
        s = shares.get(n, {})
        share = (
            f"{s.get('share_iteration_pct', float('nan')):.2f}% (db ops {s.get('share_db_ops_pct', float('nan')):.2f}%)"
            if s
            else "-"
        )
        lines.append(f"| {n} | {r['claim+ask / ask'].get('p50')}x | {r['epoch_handler / report'].get('p50')}x | "
                     f"{r['tell+settle / tell'].get('p50')}x | {r['trial_throughput bare/project']}x | {share} |")
    if "realistic_trial" in payload:
        lines.append(f"\nRealistic trial (5 epochs, width 0.25, 32x32, real Keras trainer): "
                     f"{payload['realistic_trial']['steady_trial_ms'] / 1000:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI entry: run, write ``bench/results/orchestration-<size>.json``, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--trials-per-proc", type=int, default=None,
                        help="trials per process (default: 60/N, at least 6)")
    parser.add_argument("--no-real-trial", action="store_true", help="skip the realistic Keras trial")
    parser.add_argument("--size", default="full", help="label of the result file")
    args = parser.parse_args(argv)
    setup()
    per = {n: args.trials_per_proc or max(6, 60 // n) for n in args.procs}
    payload = run(args.procs, per, not args.no_real_trial)
    command = "python -m bench.orchestration " + " ".join(argv if argv is not None else sys.argv[1:])
    path = write_result("orchestration", args.size, payload, command.strip())
    print(table(payload))
    logger.info("wrote %s", path)
    return payload


if __name__ == "__main__":
    main()
