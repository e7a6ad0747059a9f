"""Orchestration overhead: the project's worker loop vs a bare Optuna ask/report/tell loop.

Both run against the same PostgreSQL with a trivial objective (5 epochs, 5 reports, no sleep):

* ``optuna``: ``study.ask()``, two ``suggest_*`` calls, 5 x ``trial.report``, ``study.tell``;
* ``project``: the real :class:`workers.parent.loop.WorkerLoop` with the real training child
  (``workers.synthetic:train``, ``epoch_seconds=0``), heartbeats on as in ``sweep-worker``.

Timing is added from outside, in the benchmark process only: library functions are wrapped
(``study.ask``, which in the project claims the trial's budget slot in its own transaction,
``suggest_config``, the epoch handler, the bare loop's ``study.tell`` and the project's
``Recorder.tell`` (the trial's end with its attrs and budget slot), ``Trial.report``/
``set_user_attr``); no timing code lives in the library.
Each configuration runs on a fresh study with ``N`` processes started together behind a barrier.

A realistic trial (5 epochs of the width-0.25 classifier at 32x32 with the real Keras trainer)
is timed once through the same worker loop, to express the overhead as a share of a trial.

Growth (issue 16 section 1): the same comparison on a study that already holds 100, 1,000 and
5,000 finished trials. The project's trials carry realistic user attrs (what a worker writes on a
finished trial of the Keras classifier: config, worker, diagnostics of 17 blocks, the ``record``
pointer; per-epoch data lives in an artifact), the bare study's the same params and values with no
attrs; both use the project's TPE sampler (multivariate, group, constant liar), so the difference
is the project's own work. Measured per size: a fresh worker's first ask (load the study, and for
the project its stale check, duration prediction under a deadline and budget claim, then ask and
suggest) and the per-trial orchestration cost of the trivial trials that follow (the loop's wall
time less the time the training child itself takes, measured around its pipe).

Goals (issue 16): growth: project / bare <= 1.2x for the first ask and per trial at every size;
per operation: claim+ask / ask, handler / report, tell+settle / tell <= 1.2x at p50 at 1 and 4
processes, trivial-trial throughput project / bare >= 0.8x. Each is printed as met / NOT met.

    python -m bench.orchestration --procs 1 4 16 --trials-per-proc 20 --growth 100 1000 5000
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import logging
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import PG_URL, load1, logger, setup, summarize, wait_until_quiet, write_result

__all__ = ["goals", "main", "realistic_trial", "run_config", "run_growth"]

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
GROWTH_SPEC = """
dedup = false
[study]
name = "{name}"
[space.kernel]
kinds = ["none", "l1", "l2"]
[space.activity]
kinds = ["none", "l1"]
[training]
trainer = "workers.synthetic:train"
epochs = {epochs}
trainer_options = {{ epoch_seconds = 0 }}
[sampler]
name = "tpe"
seed = 7
[pruner]
name = "none"
[budget]
trials = {trials}
deadline = "{deadline}"
"""
GROWTH_SIZES = [100, 1000, 5000]
GROWTH_MODES = ("optuna", "optuna_no_attrs", "project")
GOAL_RATIO = 1.2  # project / bare, each operation and each growth measure
GOAL_THROUGHPUT = 0.8  # project / bare trivial trials per second
GOAL_PROCS = (1, 4)  # process counts the per-operation goals are set at
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
    from sweep.storage.engine import StorageConfig, open_storage
    from sweep.study.budget import ReleaseSlotAndRetry
    from workers.child.request import TrainResult
    from workers.parent.runner import TrainerProcess

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("workers").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="Heartbeat of storage")
    timer = _Timer()
    trial_module.suggest_config = timer.wrap("suggest", trial_module.suggest_config)
    optuna.storages.fail_stale_trials = timer.wrap("fail_stale", optuna.storages.fail_stale_trials)
    # Timers patched over methods on purpose: mypy rejects assigning to a method ([method-assign]).
    optuna.trial.Trial.report = timer.wrap("report", optuna.trial.Trial.report)  # type: ignore[method-assign]
    optuna.trial.Trial.set_user_attr = timer.wrap("set_user_attr", optuna.trial.Trial.set_user_attr)  # type: ignore[method-assign]

    class TimedTrainer(TrainerProcess):
        def run(self, request: dict[str, Any], on_epoch: Callable[[dict[str, Any]], str],
                timeout_s: float | None = None) -> TrainResult:
            return timer.wrap("train_call", super().run)(request, timer.wrap("epoch_handler", on_epoch), timeout_s)

    storage = open_storage(PG_URL, StorageConfig.for_worker(),
                           stale_trial_callback=ReleaseSlotAndRetry())
    gc.freeze()  # as sweep-worker does once its storage is open (workers/cli.py)
    trainer = TimedTrainer(trainer_ref)
    loop = loop_module.WorkerLoop(storage, name, trainer=trainer, worker_index=index, max_trials=trials,
                                  poll_interval=0.2)
    # As above: this study's ask, the trial run and the trial's end with its budget settle, timed in place.
    loop.recorder.tell = timer.wrap("tell+settle", loop.recorder.tell)  # type: ignore[method-assign]
    loop.runner.run = timer.wrap("run_trial", loop.runner.run)  # type: ignore[method-assign]
    loop.study.ask = timer.wrap("ask", loop.study.ask)  # type: ignore[method-assign]
    trainer.start()
    trainer._await_ready()  # the child's imports are start-up cost, not per-trial overhead
    # The loop's end is its last trial's end: the child's exit after it is shut-down cost, like its
    # start-up before the barrier (the bare loop has neither).
    ends: list[float] = []
    trial_loop = loop._loop

    def timed_loop() -> None:
        trial_loop()
        ends.append(time.perf_counter())

    loop._loop = timed_loop  # type: ignore[method-assign]
    barrier.wait()
    began = time.perf_counter()
    loop.run()
    ended = ends[0]
    samples = dict(timer.samples)
    # The project's ask claims the trial's budget slot in its own transaction (no separate claim).
    samples["claim+ask"] = list(samples.get("ask", []))
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
        "samples_s": dict(merged),
    }


def _pooled(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One configuration's rounds as one: every operation's samples together, trials over wall time."""
    samples: dict[str, list[float]] = defaultdict(list)
    for r in rounds:
        for key, values in r.pop("samples_s").items():
            samples[key].extend(values)
    trials, wall = sum(r["trials"] for r in rounds), sum(r["wall_s"] for r in rounds)
    return {
        "mode": rounds[0]["mode"], "procs": rounds[0]["procs"], "rounds": len(rounds), "trials": trials,
        "wall_s": round(wall, 3), "trials_per_s": round(trials / wall, 2),
        "trials_per_s_by_round": [r["trials_per_s"] for r in rounds],
        "load1_before": [r["load1_before"] for r in rounds],
        "quiet_before": [r.get("quiet_before") for r in rounds],
        "ops_ms": {key: summarize(values) for key, values in sorted(samples.items())},
        "run_trial_ms_raw": [v for r in rounds for v in r["run_trial_ms_raw"]],
    }


def realistic_trial(trials: int = 2) -> dict[str, Any]:
    """Wall time of a real 5-epoch Keras trial (width 0.25, 32x32, digits) through the worker loop.

    Two trials run in one worker; the second is the steady one (the child imported TensorFlow
    and traced once already).
    """
    result = run_config("project", 1, trials, trainer_ref="keras", extra=KERAS_EXTRA)
    result.pop("samples_s")
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


def run(procs: list[int], trials_per_proc: dict[int, int], with_real_trial: bool, rounds: int = 1) -> dict[str, Any]:
    """All configurations, their ratios and the overhead share of a realistic trial.

    Each configuration with a goal (:data:`GOAL_PROCS`) runs ``rounds`` times, bare and project
    alternating, and its rounds are pooled: this machine's speed drifts within minutes, and a ratio
    of two runs taken one after the other measured that drift as much as the project.
    """
    configs: list[dict[str, Any]] = []
    for n in procs:
        by_mode: dict[str, list[dict[str, Any]]] = defaultdict(list)
        n_rounds = rounds if n in GOAL_PROCS else 1  # more processes inform only, at half a minute a round
        for r in range(n_rounds):
            for mode in ("optuna", "project"):
                logger.info("orchestration: %s x%d (%d trials each), round %d/%d", mode, n, trials_per_proc[n],
                            r + 1, n_rounds)
                quiet = wait_until_quiet()  # the previous run's processes and Postgres work are over
                by_mode[mode].append(run_config(mode, n, trials_per_proc[n]) | {"quiet_before": quiet})
                logger.info("  %.1f trials/s", by_mode[mode][-1]["trials_per_s"])
        configs += [_pooled(by_mode[mode]) for mode in ("optuna", "project")]
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


# --- Growth: cost on a study that already holds many finished trials (issue 16 section 1) ---------


def _realistic_attrs(config: Any, number: int) -> dict[str, Any]:
    """The user attrs a worker leaves on a finished 10-epoch trial of the Keras classifier (17 blocks)."""
    blocks = [f"stage{s}_block{b}_{part}" for s in range(3) for b in range(3) for part in ("conv", "bn")][:17]
    diagnostics = {
        "sparsity": 0.0123, "param_count": 120_394, "device": "NVIDIA H100 80GB HBM3", "backend": "tensorflow",
        "trainer_rss_mb": 2311.4, "trainer_trials": number % 40 + 1,
        "placement_layers": {"kernel": 17, "bias": 17, "activity": 9},
        "block_norms": {b: {"l1": 123.456789 + i, "l2": 12.3456789 + i, "sparsity": 0.0123456 + i / 1000}
                        for i, b in enumerate(blocks)},
    }
    worker = {"host": "gpu-node-03", "pid": 41_234, "gpu": "NVIDIA H100 80GB HBM3", "backend": "tensorflow",
              "versions": {"python": "3.11.7", "regsweep": "0.9.0", "optuna": "5.0.0", "keras": "3.8.0",
                           "tensorflow": "2.18.0"},
              "id": "gpu-node-03:41234:8f3a9c1d", "index": number % 4, "sampler_seed": 1_234_567 + number % 4}
    return {
        "config": config.canonical(), "config_hash": config.config_hash(), "effective_hash": config.config_hash(),
        "seed": 0, "phase": "search", "worker": worker, "epochs_run": 10, "duration_s": 41.234 + number % 7,
        "diagnostics": diagnostics,
        "record": {"artifact_id": f"{number:08x}-0000-4000-8000-000000000000", "store": "/artifacts"},
        "curves": None,
    }


def _populate(name: str, n: int, with_attrs: bool) -> int:
    """Add ``n`` finished trials (the sweep's space, 10 reported epochs) to study ``name``; returns the
    attr bytes of one trial."""
    import optuna

    from sweep.penalties.searchspace import suggest_config
    from sweep.storage.engine import open_storage
    from sweep.study.sweeps import load_sweep

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(PG_URL)
    sweep = load_sweep(storage, name)
    draft = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=n))
    trials = []
    for number in range(n):
        asked = draft.ask()
        config = suggest_config(asked, sweep.spec.space)
        value = 0.5 + 0.4 * ((number * 7919) % 1000) / 1000
        state = optuna.trial.TrialState.COMPLETE if number % 3 else optuna.trial.TrialState.PRUNED
        epochs = 10 if state == optuna.trial.TrialState.COMPLETE else 3
        trials.append(optuna.trial.create_trial(
            params=asked.params, distributions=asked.distributions, state=state,
            value=value if state == optuna.trial.TrialState.COMPLETE else None,
            intermediate_values={e: value * (e + 1) / epochs for e in range(epochs)},
            user_attrs=_realistic_attrs(config, number) if with_attrs else {},
        ))
    _bulk_add(sweep.study, trials)
    return sum(len(k) + len(json.dumps(v)) for k, v in trials[-1].user_attrs.items())


def _bulk_add(study: Any, trials: list[Any]) -> None:
    """``study.add_trials(trials)`` in one transaction (Optuna's takes one per trial: minutes at 5,000).

    The rows are Optuna's own models, filled as ``RDBStorage.create_new_trial`` fills them.
    """
    import datetime as dt

    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models

    storage = getattr(study._storage, "_backend", study._storage)  # Optuna's _CachedStorage wraps it
    session = storage.scoped_session()
    try:
        start = session.query(models.TrialModel).filter(models.TrialModel.study_id == study._study_id).count()
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        rows = []
        for offset, t in enumerate(trials):
            row = models.TrialModel(study_id=study._study_id, number=start + offset, state=t.state,
                                    _datetime_start_utc=now, _datetime_complete_utc=now)
            for name, value in t.params.items():
                dist = t.distributions[name]
                models.TrialParamModel(trial=row, param_name=name, param_value=dist.to_internal_repr(value),
                                       distribution_json=distribution_to_json(dist))
            if t.value is not None:
                models.TrialValueModel(trial=row, objective=0, value=t.value,
                                       value_type=models.TrialValueModel.TrialValueType.FINITE)
            for step, value in t.intermediate_values.items():
                models.TrialIntermediateValueModel(
                    trial=row, step=step, intermediate_value=value,
                    intermediate_value_type=models.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE)
            for key, value in t.user_attrs.items():
                models.TrialUserAttributeModel(trial=row, key=key, value_json=json.dumps(value))
            rows.append(row)
        session.add_all(rows)
        session.commit()
    finally:
        session.close()


def _growth_spec(name: str, trials: int) -> str:
    import datetime as dt

    deadline = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).replace(microsecond=0).isoformat()
    return GROWTH_SPEC.format(name=name, epochs=EPOCHS, trials=trials, deadline=deadline)


def _create_growth(name: str, trials: int) -> None:
    from sweep.spec.load import load_spec
    from sweep.storage.engine import open_storage
    from sweep.study.sweeps import create_sweep

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.toml"
        path.write_text(_growth_spec(name, trials))
        create_sweep(load_spec(path), open_storage(PG_URL))


def _growth_bare(name: str, trials: int, out: Any) -> None:
    """A fresh bare-Optuna process: load the study with the project's TPE sampler, ask, run trivial trials."""
    import optuna

    from sweep.penalties.searchspace import suggest_config
    from sweep.storage.engine import open_storage
    from sweep.study.sweeps import load_sweep, make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore")
    # Outside the timing: the sampler's settings, and the warm-up (imports, first connection) the
    # project's process gets alike.
    spec = load_sweep(open_storage(PG_URL), name).spec
    sampler = make_sampler(spec, 0, seed=11)
    start = time.perf_counter()
    storage = optuna.storages.RDBStorage(PG_URL)
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    first_done = None
    for _ in range(trials):
        trial = study.ask()
        suggest_config(trial, spec.space)
        if first_done is None:
            first_done = time.perf_counter()
        for epoch in range(EPOCHS):
            trial.report(0.1 * (epoch + 1), epoch)
        study.tell(trial, 0.5)
    ended = time.perf_counter()
    assert first_done is not None
    out.put({"first_ask_s": first_done - start, "per_trial_s": (ended - first_done) / trials})


def _growth_project(name: str, trials: int, out: Any) -> None:
    """A fresh worker process: WorkerLoop construction, its first claim and ask, then trivial trials."""
    import optuna

    import workers.parent.trial as trial_module
    from sweep.storage.engine import StorageConfig, open_storage
    from sweep.study.budget import ReleaseSlotAndRetry
    from workers.parent.loop import WorkerLoop
    from workers.parent.runner import TrainerProcess

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("workers").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    child_s: list[float] = []  # time the training child itself takes: not orchestration

    class ChildTimedTrainer(TrainerProcess):
        def run(self, request: dict[str, Any], on_epoch: Callable[[dict[str, Any]], str],
                timeout_s: float | None = None) -> Any:
            in_handler: list[float] = []

            def handler(metrics: dict[str, Any]) -> str:
                began = time.perf_counter()
                try:
                    return on_epoch(metrics)
                finally:
                    in_handler.append(time.perf_counter() - began)

            began = time.perf_counter()
            try:
                return super().run(request, handler, timeout_s)
            finally:
                child_s.append(time.perf_counter() - began - sum(in_handler))

    trainer = ChildTimedTrainer("workers.synthetic:train")
    trainer.start()
    trainer._await_ready()  # the child's imports are start-up cost of any worker, not the study's
    first_done: list[float] = []
    suggest = trial_module.suggest_config

    def timed_suggest(*args: Any, **kwargs: Any) -> Any:
        config = suggest(*args, **kwargs)
        if not first_done:
            first_done.append(time.perf_counter())
        return config

    trial_module.suggest_config = timed_suggest
    from sweep.study.sweeps import load_sweep

    load_sweep(open_storage(PG_URL), name)  # the same warm-up (imports, first connection) as the bare process
    start = time.perf_counter()
    storage = open_storage(PG_URL, StorageConfig.for_worker(),
                           stale_trial_callback=ReleaseSlotAndRetry())
    gc.freeze()  # as sweep-worker does once its storage is open (workers/cli.py)
    loop = WorkerLoop(storage, name, trainer=trainer, max_trials=trials, poll_interval=0.2)
    run_trial = loop.runner.run
    trial_ended: list[float] = []

    def timed_run(trial: Any) -> None:
        try:
            run_trial(trial)
        finally:
            trial_ended.append(time.perf_counter())

    loop.runner.run = timed_run  # type: ignore[method-assign]
    loop.run()
    ended = trial_ended[-1]  # the last trial told and settled: the worker's shutdown is not per-trial cost
    out.put({"first_ask_s": first_done[0] - start,
             "per_trial_s": (ended - first_done[0] - sum(child_s)) / trials,
             "child_per_trial_s": sum(child_s) / trials})


def _in_fresh_process(target: Callable[..., None], *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, out))
    proc.start()
    result: dict[str, Any] = out.get(timeout=1800)
    proc.join(timeout=60)
    return result


def run_growth(sizes: list[int], trials: int, repeats: int) -> dict[str, Any]:
    """First ask and per-trial cost, project vs bare, on studies of ``sizes`` finished trials.

    Each size gets two fresh studies (bare, project) filled alike; each measure is the median of
    ``repeats`` fresh processes run alternately (bare, project, bare, ...), ``trials`` trivial trials each.
    """
    rows = []
    for n in sizes:
        stamp = f"{os.getpid()}-{int(time.time() * 1000)}"
        # optuna: bare Optuna on the same trials with the same attrs (the goal's comparison: the
        # project's own work); optuna_no_attrs: the same trials with no attrs at all (what the
        # project's attrs themselves cost a reader).
        names = {mode: f"bench-growth-{mode.replace('_', '-')}-{n}-{stamp}" for mode in GROWTH_MODES}
        attr_bytes = {}
        for mode, name in names.items():
            _create_growth(name, trials * repeats + 1)
            started = time.perf_counter()
            attr_bytes[mode] = _populate(name, n, with_attrs=mode != "optuna_no_attrs")
            logger.info("growth: %s study of %d trials filled in %.1fs", mode, n, time.perf_counter() - started)
        samples: dict[str, list[dict[str, Any]]] = {mode: [] for mode in GROWTH_MODES}
        # Filling the studies (and, at the first size, the 16-process configuration before it) leaves
        # Postgres and exiting processes busy for a while: at a load of 5.7 the first asks at 100
        # trials measured 251/202 ms against 110/97 ms on quiet cores, a ratio of noise.
        quiet = wait_until_quiet()
        load_before = load1()
        for _ in range(repeats):  # alternating, so drifting load hits every mode alike
            for mode in GROWTH_MODES:
                target = _growth_project if mode == "project" else _growth_bare
                samples[mode].append(_in_fresh_process(target, names[mode], trials))
        row: dict[str, Any] = {"finished_trials": n, "attr_bytes_per_trial": attr_bytes, "load1_before": load_before,
                               "cpu_busy_before": quiet["cpu_busy"], "waited_for_quiet_s": quiet["waited_s"],
                               "trivial_trials_per_process": trials, "repeats": repeats}
        for mode in GROWTH_MODES:
            row[mode] = {f"{key[:-2]}_ms": round(1000 * statistics.median(s[key] for s in samples[mode]), 1)
                         for key in ("first_ask_s", "per_trial_s")}
        keys = ("first_ask_ms", "per_trial_ms")
        row["ratio"] = {key: round(row["project"][key] / row["optuna"][key], 2) for key in keys}
        row["ratio_vs_no_attrs"] = {key: round(row["project"][key] / row["optuna_no_attrs"][key], 2) for key in keys}
        logger.info("growth %d: first ask project %.0f, bare %.0f, bare without attrs %.0f ms; per trial %.1f, "
                    "%.1f, %.1f ms", n, row["project"]["first_ask_ms"], row["optuna"]["first_ask_ms"],
                    row["optuna_no_attrs"]["first_ask_ms"], row["project"]["per_trial_ms"],
                    row["optuna"]["per_trial_ms"], row["optuna_no_attrs"]["per_trial_ms"])
        rows.append(row)
    out: dict[str, Any] = {"sizes": rows}
    if len(rows) > 1:  # growth from the smallest to the largest study, each side on its own
        lo, hi = rows[0], rows[-1]
        out["growth_smallest_to_largest"] = {
            mode: {key: round(hi[mode][key] / lo[mode][key], 2) for key in ("first_ask_ms", "per_trial_ms")}
            for mode in GROWTH_MODES}
    return out


def goals(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 16's goals for this benchmark, each with its measured value and met / not met."""
    found: list[dict[str, Any]] = []
    for n in map(str, GOAL_PROCS):
        r = payload.get("ratios", {}).get(n)
        if r is None:
            continue
        for label in ("claim+ask / ask", "epoch_handler / report", "tell+settle / tell"):
            value = r[label].get("p50")
            found.append({"goal": f"{label} p50 at {n} proc(s) <= {GOAL_RATIO}x", "value": value,
                          "met": value is not None and value <= GOAL_RATIO})
        throughput = round(1 / r["trial_throughput bare/project"], 2)
        found.append({"goal": f"trivial-trial throughput project/bare at {n} proc(s) >= {GOAL_THROUGHPUT}x",
                      "value": throughput, "met": throughput >= GOAL_THROUGHPUT})
    for row in payload.get("growth", {}).get("sizes", []):
        for key, what in (("first_ask_ms", "fresh worker's first ask"), ("per_trial_ms", "per-trial cost")):
            value = row["ratio"][key]
            found.append({"goal": f"{what} at {row['finished_trials']} finished trials, project/bare <= {GOAL_RATIO}x",
                          "value": value, "met": value <= GOAL_RATIO})
            plain = row["ratio_vs_no_attrs"][key]
            found.append({"goal": f"{what} at {row['finished_trials']} finished trials, project/bare with no attrs "
                                  f"at all <= {GOAL_RATIO}x (stricter reading)", "value": plain,
                          "met": plain <= GOAL_RATIO})
    growth = payload.get("growth", {}).get("growth_smallest_to_largest")
    if growth:
        for key, what in (("first_ask_ms", "first ask"), ("per_trial_ms", "per-trial cost")):
            p, b = growth["project"][key], growth["optuna"][key]
            found.append({"goal": f"{what} grows no steeper than bare's, within {GOAL_RATIO}x "
                                  "(smallest to largest study)",
                          "value": f"project {p}x, bare {b}x", "met": p <= b * GOAL_RATIO})
    return found


def goals_text(found: list[dict[str, Any]]) -> str:
    """One line per goal: met / NOT met, the goal, the measured value."""
    return "\n".join(f"{'met    ' if g['met'] else 'NOT met'}  {g['goal']}: {g['value']}" for g in found)


def growth_table(payload: dict[str, Any]) -> str:
    """A markdown table of the growth part (empty when it did not run)."""
    rows = payload.get("growth", {}).get("sizes", [])
    if not rows:
        return ""
    lines = ["| finished trials | attr bytes/trial | first ask ms: bare no attrs / bare / project (ratio) "
             "| per trial ms: bare no attrs / bare / project (ratio) |", "| --- | --- | --- | --- |"]
    for r in rows:
        cells = []
        for key, fmt in (("first_ask_ms", ".0f"), ("per_trial_ms", ".1f")):
            cells.append(f"{r['optuna_no_attrs'][key]:{fmt}} / {r['optuna'][key]:{fmt}} / {r['project'][key]:{fmt}} "
                         f"({r['ratio'][key]}x; {r['ratio_vs_no_attrs'][key]}x vs no attrs)")
        lines.append(f"| {r['finished_trials']} | {r['attr_bytes_per_trial']['project']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI entry: run, write ``bench/results/orchestration-<size>.json``, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument("--trials-per-proc", type=int, default=None,
                        help="trials per process (default: 60/N, at least 6)")
    parser.add_argument("--no-real-trial", action="store_true", help="skip the realistic Keras trial")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs of each configuration, bare and project alternating, pooled")
    parser.add_argument("--size", default="full", help="label of the result file")
    parser.add_argument("--growth", type=int, nargs="*", default=GROWTH_SIZES,
                        help="finished-trial counts of the growth part (none: skip it)")
    parser.add_argument("--growth-trials", type=int, default=5, help="trivial trials per growth process")
    parser.add_argument("--growth-repeats", type=int, default=3, help="fresh processes per mode and size")
    args = parser.parse_args(argv)
    setup()
    per = {n: args.trials_per_proc or max(6, 60 // n) for n in args.procs}
    payload = run(args.procs, per, not args.no_real_trial, args.rounds) if args.procs else {"configs": [], "ratios": {}}
    if args.growth:
        payload["growth"] = run_growth(args.growth, args.growth_trials, args.growth_repeats)
    payload["goals"] = goals(payload)
    command = "python -m bench.orchestration " + " ".join(argv if argv is not None else sys.argv[1:])
    path = write_result("orchestration", args.size, payload, command.strip())
    print(table(payload))
    print(growth_table(payload))
    print(goals_text(payload["goals"]))
    logger.info("wrote %s", path)
    return payload


if __name__ == "__main__":
    main()
