"""On whatever device Keras finds: the worker's trainer vs Keras' own MobileNetV2, and one real trial.

Measures training images/s of three ways to train (see ``bench/throughput.py``, whose runs this
reuses): ``keras_app`` = ``keras.applications.MobileNetV2(weights=None)`` with plain ``fit``,
``plain`` = the tutorial's plain ``model.fit`` of the bottleneck classifier, ``worker`` = the
worker's trainer (``workers.child.train.train``) on the same model; for each image size, batch size
(ascending; a group stops at its first out-of-memory), mixed precision off/on and XLA off/on.
Each group's defaults are measured too: the worker with ``mixed_precision``/``jit_compile`` =
"auto" (what a sweep runs) and the tutorial's plain fit with float32 and Keras' ``jit_compile``
default. Then one real trial runs end to end through ``sweep-worker`` against an embedded SQLite
store; its recorded ``worker.gpu`` attr, the trainer's device and the duration prediction
(``workers.parent.prediction.predict_duration``) are checked, and the share of the trial's wall time spent in
training steps is computed: epochs x the fastest steady epoch's training part (no tracing,
validation, diagnostics or database) over ``datetime_complete - datetime_start``.

Results: ``bench/results/accelerator-<device>-<backend>[-tiny].json``, rewritten after every run
(a run cut short by a timeout still leaves its figures). ``--budget-s`` stops starting runs;
the goal configurations run first.

    python -m bench.accelerator --tiny                  # CPU / CI size, well under 2 minutes
    KERAS_BACKEND=jax python -m bench.accelerator --budget-s 420   # on a GPU (see bench/README.md)
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, load1, logger, setup, write_result
from bench.throughput import measure

__all__ = ["PLANS", "main", "end_to_end"]

TRAINERS = ("keras_app", "plain", "worker")
#: Sizes of a run; ``mixed``/``xla`` None = only this device's default (Keras' jit_compile default,
#: float32): on 2 CPU cores every XLA compile of the model costs ~50 s and float16 is emulated, so
#: the tiny size keeps one setting. ``trial``: the end-to-end trial's training setup.
PLANS: dict[str, dict[str, Any]] = {
    "tiny": {"sizes": [32], "batches": [16], "mixed": None, "xla": None, "width": 0.25, "epochs": 2, "limit": 32,
             "trial": {"input_size": 32, "width": 0.25, "epochs": 2, "batch_size": 32, "limit": 64}},
    "full": {"sizes": [224, 32], "batches": [64, 128, 256, 512, 1024], "mixed": ["on", "off"], "xla": ["on", "off"],
             "width": 1.0, "epochs": 3, "limit": None,
             "trial": {"input_size": 224, "width": 1.0, "epochs": 10, "batch_size": 128, "limit": None}},
}
_OOM = re.compile(r"RESOURCE_EXHAUSTED|out of memory|OutOfMemory|ResourceExhausted|\bOOM\b", re.IGNORECASE)


def device_info() -> dict[str, Any]:
    """Backend, device name and (with nvidia-smi) driver and memory of the first GPU."""
    import keras

    from workers.child.train import _device  # the trainer's own detection (also sets TF memory growth first)

    gpu, name = _device()
    info: dict[str, Any] = {"backend": keras.backend.backend(), "gpu": gpu, "name": name}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip().splitlines()
        info["nvidia_smi"] = out[0] if out else None
        info["driver"] = out[0].split(",")[1].strip() if out else None
    except (OSError, subprocess.SubprocessError, IndexError):
        info["driver"] = None
    return info


def _keras_default_jit() -> bool:
    """What ``compile()`` without ``jit_compile`` resolves to here (the tutorial's setting)."""
    import keras

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(loss="mse")
    return bool(model.jit_compile)


def _groups(plan: dict[str, Any]) -> list[tuple[str, int, str, str]]:
    """(trainer, size, mixed, xla) in priority order: the goal configurations of every size first.

    Goals: the worker as a sweep runs it ("auto"), the tutorial's fit (float32, Keras' jit
    default) and Keras' MobileNetV2 at the first (fastest expected) mixed/xla values.
    """
    mixed, xla = plan["mixed"], plan["xla"]
    first = [g for size in plan["sizes"] for g in
             (("worker", size, "auto", "auto"), ("plain", size, "off", "auto"), ("keras_app", size, mixed[0], xla[0]))]
    rest = [(t, size, m, x) for size in plan["sizes"] for t in TRAINERS for m in mixed for x in xla]
    return first + [g for g in rest if g not in first]


def _cache_datasets() -> None:
    """Load each (source, size, split) once per process: at 224x224 the resize alone takes seconds.

    Only the benchmark's own runs share it (throughput is timed from epoch stamps, after loading);
    the end-to-end trial runs in its own worker processes, uncached, as a sweep does.
    """
    import workers.child.data
    import workers.child.train

    cached = functools.lru_cache(maxsize=2)(workers.child.data.load_dataset)
    workers.child.data.load_dataset = workers.child.train.load_dataset = cached


def _one(group: tuple[str, int, str, str], batch: int, plan: dict[str, Any]) -> dict[str, Any]:
    trainer, size, mixed, xla = group
    common = {"image_size": size, "batch": batch, "limit": plan["limit"]}
    if trainer == "worker":
        r = measure("worker", plan["width"], "none", plan["epochs"],
                    setup_extra={"mixed_precision": mixed, "jit_compile": xla}, **common)
    else:
        jit: Any = "auto" if xla == "auto" else xla == "on"
        r = measure(trainer, plan["width"], "none", plan["epochs"], jit, mixed=mixed == "on", **common)
    return {**r, "image_size": size, "batch": batch, "mixed": mixed, "xla": xla}


def _same(a: dict[str, Any], trainer: str, size: int, batch: int, mixed: bool, jit: bool) -> bool:
    return (a.get("trainer") == trainer and a.get("image_size") == size and a.get("batch") == batch
            and "images_per_s" in a and (a["policy"] == "mixed_float16") == mixed and bool(a["jit_compile"]) == jit)


def run_matrix(plan: dict[str, Any], budget_s: float, save: Any) -> list[dict[str, Any]]:
    """Every group at every batch size; an explicit setting already measured as "auto" is reused."""
    runs: list[dict[str, Any]] = []
    stopped: set[tuple[str, int, str, str]] = set()
    start = time.monotonic()
    for batch in plan["batches"]:  # all groups at the first batch size before any larger one
        for group in _groups(plan):
            trainer, size, mixed, xla = group
            row = {"trainer": trainer, "image_size": size, "batch": batch, "mixed": mixed, "xla": xla}
            if group in stopped:
                continue
            if time.monotonic() - start > budget_s:
                runs.append({**row, "skipped": "budget"})
                continue
            if "auto" not in (mixed, xla):
                twin = next((a for a in runs if _same(a, trainer, size, batch, mixed == "on", xla == "on")), None)
                if twin is not None:
                    runs.append({**twin, "mixed": mixed, "xla": xla, "reused_from": f"{twin['mixed']}/{twin['xla']}"})
                    continue
            logger.info("accelerator: %s %dx%d batch %d mixed=%s xla=%s", trainer, size, size, batch, mixed, xla)
            try:
                runs.append(_one(group, batch, plan))
                logger.info(
                    "  %.0f img/s (train only %.0f)", runs[-1]["images_per_s"], runs[-1]["train_only_images_per_s"]
                )
            except Exception as error:  # one failing configuration must not lose the others' figures
                oom = bool(_OOM.search(str(error)))
                runs.append({**row, "error": f"{type(error).__name__}: {str(error)[:500]}", "oom": oom})
                logger.warning("  failed (%s): %s", "out of memory" if oom else "error", str(error)[:200])
                if oom:
                    stopped.add(group)  # larger batches of this group will not fit either
            save(runs)
    return runs


SPEC = """
[study]
name = "accelerator-e2e"
[space.kernel]
kinds = ["l2"]
l2 = {{ values = [1e-4] }}
[training]
dataset = "digits"
input_size = {input_size}
width = {width}
epochs = {epochs}
batch_size = {batch_size}
learning_rate = 0.05
{limit}
[budget]
trials = 1
deadline = 2099-01-01T00:00:00+00:00   # far away: the loop still predicts each trial's duration
"""


def _cli(module: str, script: str) -> list[str]:
    """The installed console script when there is one, else the same ``main`` via ``python -m``."""
    path = Path(sys.executable).with_name(script)
    return [str(path)] if path.exists() else [sys.executable, "-m", module]


def end_to_end(trial: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Create a one-trial study in a fresh SQLite file, run ``sweep-worker`` on it, read the trial back."""
    import optuna

    from workers.parent.prediction import estimate, predict_duration

    with tempfile.TemporaryDirectory(prefix="regsweep-accel-") as tmp:
        url = f"sqlite:///{tmp}/e2e.db"
        spec = Path(tmp, "e2e.toml")
        limit = f"limit = {trial['limit']}" if trial.get("limit") else ""
        spec.write_text(SPEC.format(limit=limit, **{k: v for k, v in trial.items() if k != "limit"}), encoding="utf-8")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]),
        }
        create = subprocess.run([*_cli("sweep.cli", "sweep"), "create", str(spec), "--storage", url],
                                capture_output=True, text=True, env=env, timeout=120)
        if create.returncode != 0:
            return {"error": f"sweep create failed: {create.stderr[-1500:]}"}
        command = [*_cli("workers.cli", "sweep-worker"), "--storage", url, "--study", "accelerator-e2e"]
        t0 = time.perf_counter()
        worker = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout_s)
        process_s = time.perf_counter() - t0
        study = optuna.load_study(study_name="accelerator-e2e", storage=url)
        trials = study.get_trials()
        if worker.returncode != 0 or not trials:
            return {
                "error": f"sweep-worker exited {worker.returncode}: {worker.stderr[-1500:]}",
                "process_s": process_s,
            }
        t = trials[0]
        attrs = t.user_attrs
        wall = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else None
        )
        curves, gpu = attrs.get("curves", {}), attrs.get("worker", {}).get("gpu")
        seconds = curves.get("epoch_seconds", [])
        steady = min(seconds[1:]) if len(seconds) > 1 else None
        in_steps = steady * attrs.get("epochs_run", len(seconds)) if steady else None
        tracing = seconds[0] - steady if steady else None  # the first epoch's extra: compiling the step
        device = attrs.get("diagnostics", {}).get("device")
        predicted = predict_duration(study, gpu, trial["epochs"]) if gpu else None
        expected = estimate([attrs["duration_s"]]) if attrs.get("duration_s") else None
        return {
            "command": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(command)),
            "setup": trial,
            "state": t.state.name,
            "value": t.value,
            "fail_reason": attrs.get("fail_reason"),
            "worker_attr": attrs.get("worker"),
            "trainer_device": device,
            "trainer_backend": attrs.get("diagnostics", {}).get("backend"),
            # nvidia-smi's name (the parent) vs the backend's (the child): both "cpu", or both a GPU.
            "gpu_attr_matches_device": gpu is not None and device is not None and (gpu == "cpu") == (device == "cpu"),
            "duration_s": attrs.get("duration_s"),
            "trial_wall_s": wall,
            "process_s": round(process_s, 2),
            "epoch_train_s": seconds,
            "images_per_s": curves.get("images_per_second"),
            "predicted_s": predicted,
            "expected_prediction_s": expected,
            "prediction_ok": predicted is not None and expected is not None and abs(predicted - expected) < 1e-6,
            "in_steps_s": in_steps,
            "first_epoch_tracing_s": tracing,
            "outside_steps_s": round(wall - in_steps, 3) if in_steps and wall else None,
            "in_steps_fraction": round(in_steps / wall, 4) if in_steps and wall else None,
            "train_part_fraction": round(sum(seconds) / wall, 4) if seconds and wall else None,
        }


def goals(runs: list[dict[str, Any]], e2e: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    """The issue's three goals at the first batch size of each image size (same card, same run)."""
    def rate(trainer: str, size: int, key: str, **match: str) -> float | None:
        rows = [r for r in runs if r.get("trainer") == trainer and r.get("image_size") == size
                and r.get("batch") == plan["batches"][0] and r.get(key)
                and all(r.get(k) == v for k, v in match.items())]
        return max((r[key] for r in rows), default=None)

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    out: dict[str, Any] = {}
    for size in plan["sizes"]:
        # Verdicts on epoch wall (validation and per-epoch callbacks included); train_only beside.
        for other, match, need, label in (("keras_app", {}, 0.9, "0.9x keras MobileNetV2 fit (best of mixed/xla)"),
                                          ("plain", {"mixed": "off", "xla": "auto"}, 2.0, "2x tutorial plain fit")):
            figures = {key: ratio(rate("worker", size, key, mixed="auto", xla="auto"), rate(other, size, key, **match))
                       for key in ("images_per_s", "train_only_images_per_s")}
            out[f"worker >= {label} @{size} batch {plan['batches'][0]}"] = {
                "ratio": figures["images_per_s"], "train_only_ratio": figures["train_only_images_per_s"],
                "met": bool(figures["images_per_s"] and figures["images_per_s"] >= need)}
    fraction = e2e.get("in_steps_fraction")
    out[">= 90% of a trial's wall time in training steps"] = {
        "fraction": fraction,
        "met": bool(fraction and fraction >= 0.9),
    }
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI entry: run the matrix and the trial, write the results JSON, print each goal."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CI size: small images, few images and steps, width 0.25")
    parser.add_argument("--sizes", type=int, nargs="+", help="image sizes (default: 224 32; tiny: 32)")
    parser.add_argument(
        "--batches", type=int, nargs="+", help="batch sizes, ascending (a group stops at its first OOM)"
    )
    parser.add_argument(
        "--mixed", nargs="+", choices=("on", "off"), help="mixed precision values (default: on off; tiny: off)"
    )
    parser.add_argument(
        "--xla", nargs="+", choices=("on", "off"), help="XLA values (default: on off; tiny: Keras' default here)"
    )
    parser.add_argument("--trial-epochs", type=int, help="epochs of the end-to-end trial")
    parser.add_argument("--budget-s", type=float, default=3600.0, help="start no matrix run after this many seconds")
    parser.add_argument("--trial-timeout-s", type=float, default=600.0)
    parser.add_argument("--skip-matrix", action="store_true", help="only the end-to-end trial")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory of the results JSON")
    args = parser.parse_args(argv)
    setup()
    size = "tiny" if args.tiny else "full"
    plan = {**PLANS[size], "trial": dict(PLANS[size]["trial"])}
    plan["sizes"], plan["batches"] = args.sizes or plan["sizes"], sorted(args.batches or plan["batches"])
    if args.trial_epochs:
        plan["trial"]["epochs"] = args.trial_epochs
    # The trial first: its worker's backend must not find the GPU held by this process (JAX
    # preallocates most of it at start-up), and it runs as a sweep would, from a cold start.
    logger.info("accelerator: end-to-end trial %s", plan["trial"])
    start = time.monotonic()
    try:
        e2e = end_to_end(plan["trial"], args.trial_timeout_s)
    except Exception as error:  # a hung or broken trial is a finding, not a reason to lose the matrix
        e2e = {"error": f"{type(error).__name__}: {str(error)[-1500:]}"}
    e2e["total_s"] = round(time.monotonic() - start, 1)
    device = device_info()
    default_jit = _keras_default_jit()
    plan["mixed"] = args.mixed or plan["mixed"] or ["off"]
    plan["xla"] = args.xla or plan["xla"] or ["on" if default_jit else "off"]
    slug = re.sub(r"[^a-z0-9]+", "-", device["name"].lower()).strip("-")
    name = f"{slug}-{device['backend']}" + ("-tiny" if args.tiny else "")
    command = "python -m bench.accelerator " + " ".join(argv if argv is not None else sys.argv[1:])
    payload: dict[str, Any] = {
        "run_size": size,
        "keras_backend_env": os.environ.get("KERAS_BACKEND"),
        "device": device,
        "plan": plan,
        "keras_default_jit": default_jit,
        "load1_start": load1(),
        "dataset_cache": True,
        "runs": [],
        "end_to_end": e2e,
        "goals": None,
    }

    def save(runs: list[dict[str, Any]]) -> Path:
        payload["runs"] = runs
        return write_result("accelerator", name, payload, command.strip(), keras_too=True, directory=args.out)

    t0 = time.monotonic()
    _cache_datasets()
    runs = [] if args.skip_matrix else run_matrix(plan, args.budget_s, save)
    payload["matrix_s"] = round(time.monotonic() - t0, 1)
    payload["goals"] = goals(runs, e2e, plan)
    # Whether this process ever loaded TensorFlow (GPU machines with KERAS_BACKEND=jax have none).
    payload["tensorflow_loaded"] = "tensorflow" in sys.modules
    path = save(runs)
    for goal, verdict in payload["goals"].items():
        extra = f" (train only {verdict['train_only_ratio']})" if "train_only_ratio" in verdict else ""
        print(
            f"{'met    ' if verdict['met'] else 'NOT met'}  {goal}: "
            f"{verdict.get('ratio', verdict.get('fraction'))}{extra}"
        )
    print(
        f"end-to-end trial: {e2e.get('state', e2e.get('error'))}, "
        f"worker.gpu={(e2e.get('worker_attr') or {}).get('gpu')!r}, "
        f"trainer device={e2e.get('trainer_device')!r}, "
        f"predicted {e2e.get('predicted_s')}s (ok={e2e.get('prediction_ok')})"
    )
    logger.info("wrote %s", path)
    return json.loads(path.read_text())


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
