"""Training throughput: the worker's trainer vs the tutorial's plain ``model.fit``.

Three ways to train on the same data (bundled digits at 32x32, batch 32, SGD):

* ``worker``: ``workers.child.train.train(TrainRequest(...), on_epoch)``, everything the worker does
  per epoch included (validation, reg-loss probe, block diagnostics); the diagnostics' own time
  per epoch is measured too (``diagnostics_share_of_epoch``: median of steady epochs / epoch wall);
* ``plain``: the tutorial: ``build_classifier`` (the same model), ``model.compile(optimizer=SGD(LR),
  loss=SparseCategoricalCrossentropy(from_logits=True), metrics=[SparseCategoricalAccuracy()])``
  with Keras' default ``jit_compile="auto"``, ``model.fit(ds_train, validation_data=ds_val)``
  on a tf.data pipeline batched by 32 like the tutorial's ``ds_train``;
* ``keras_app``: ``keras.applications.MobileNetV2(weights=None, alpha=width, input_shape=(32, 32, 3),
  classes=10, classifier_activation=None)`` compiled and fitted like ``plain``, with the penalty
  attached to every kernel variable (Conv2D, DepthwiseConv2D, Dense).

Each with no penalty, L1 and L2 on the kernels (1e-3). Throughput is steady state: training images
per second of wall time of the fastest of epochs 2..E (the least disturbed by other jobs on this
shared machine; the median is kept too). Epoch 1 pays tracing, reported separately as
``first_epoch_extra_s`` = first epoch wall minus a steady epoch. ``train_only`` counts only the
training part of each epoch (no validation or per-epoch callbacks).

    python -m bench.throughput --widths 0.25 1.0 --epochs 4
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import statistics
import sys
import time
from typing import Any

from bench.common import load1, logger, setup, wait_until_quiet, write_result

__all__ = ["measure", "main"]

KINDS = ("none", "l1", "l2")
LAMBDA = 1e-3
LR = 0.05
BATCH = 32


def _config(kind: str) -> dict[str, Any]:
    return {"kernel": {"kind": kind, kind: LAMBDA}} if kind != "none" else {}


def _rates(n_train: int, begins: list[float], test_begins: list[float], ends: list[float], t0: float) -> dict[str, Any]:
    """Steady and first-epoch numbers from per-epoch timestamps."""
    walls = [ends[0] - t0] + [b - a for a, b in itertools.pairwise(ends)]
    steady = walls[1:]
    trains = [tb - b for b, tb in zip(begins, test_begins, strict=True)][1:] if test_begins else []
    steady_wall = min(steady)  # the fastest steady epoch, as documented and as _worker does
    return {
        "epoch_wall_s": [round(w, 3) for w in walls],
        "images_per_s": round(n_train / steady_wall, 1),
        "train_only_images_per_s": round(n_train / min(trains), 1) if trains else None,
        "median_images_per_s": round(n_train / statistics.median(steady), 1),
        "first_epoch_s": round(walls[0], 2),
        "first_epoch_extra_s": round(walls[0] - steady_wall, 2),
    }


def _worker(width: float, kind: str, epochs: int, *, image_size: int = 32, batch: int = BATCH,
            limit: int | None = None, setup_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    from workers.child.epochs import EpochReporter
    from workers.child.train import TrainRequest, train

    stamps: list[float] = []
    epoch_end_starts: list[float] = []
    original = EpochReporter.on_epoch_end

    def timed_epoch_end(self: Any, epoch: int, logs: Any = None) -> None:
        epoch_end_starts.append(time.perf_counter())  # validation is over: what follows is the diagnostics
        original(self, epoch, logs)

    def on_epoch(metrics: dict[str, Any]) -> str:
        stamps.append(time.perf_counter())
        return "continue"

    setup_ = {"dataset": "digits", "input_size": image_size, "width": width, "epochs": epochs, "batch_size": batch,
              "learning_rate": LR, "optimizer": "sgd", "limit": limit, **(setup_extra or {})}
    t0 = time.perf_counter()
    EpochReporter.on_epoch_end = timed_epoch_end  # type: ignore[method-assign]
    try:
        result = train(TrainRequest(config=_config(kind), setup=setup_, trial_number=0, seed=0), on_epoch)
    finally:
        EpochReporter.on_epoch_end = original  # type: ignore[method-assign]
    n_train = int(round(result["history"]["images_per_second"][0] * result["history"]["epoch_seconds"][0]))
    walls = [stamps[0] - t0] + [b - a for a, b in itertools.pairwise(stamps)]
    steady_wall = min(walls[1:])  # the least disturbed epoch: other engineers' jobs share these cores
    train_secs = result["history"]["epoch_seconds"][1:]
    # The per-epoch diagnostics' own cost (reg loss, block norms and activations), steady epochs.
    diagnostics = [done - begun for begun, done in zip(epoch_end_starts, stamps, strict=True)]
    return {
        "diagnostics_s": [round(d, 4) for d in diagnostics],
        "diagnostics_share_of_epoch": round(statistics.median(diagnostics[1:]) / steady_wall, 4),
        "epoch_wall_s": [round(w, 3) for w in walls],
        "images_per_s": round(n_train / steady_wall, 1),
        "train_only_images_per_s": round(n_train / min(train_secs), 1),
        "median_images_per_s": round(n_train / statistics.median(walls[1:]), 1),
        "first_epoch_s": round(walls[0], 2),
        "first_epoch_extra_s": round(walls[0] - steady_wall, 2),
        "n_train": n_train,
        "jit_compile": result.get("jit_compile", False),
        "policy": result.get("policy", "float32"),
        "val_accuracy": result["history"]["val_accuracy"],
    }


def _attach(model: Any, kind: str) -> None:
    """Put the kernel penalty on every kernel variable of a built model (keras.applications)."""
    import keras

    if kind == "none":
        return
    reg = keras.regularizers.get({"class_name": "L1" if kind == "l1" else "L2", "config": {kind: LAMBDA}})
    for layer in model.layers:
        for attr in ("kernel", "depthwise_kernel"):
            variable = getattr(layer, attr, None)
            if variable is not None:
                variable.regularizer = reg


def _inputs(data: Any, batch: int) -> dict[str, Any]:
    """The tutorial's tf.data pipeline on TensorFlow; the same batches as arrays elsewhere (no TF there)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return {"x": data.x_train, "y": data.y_train, "validation_data": (data.x_val, data.y_val),
                "batch_size": batch, "shuffle": True}
    import tensorflow as tf

    ds_train = (
        tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train)).shuffle(len(data.x_train), seed=0).batch(batch)
    )
    ds_val = tf.data.Dataset.from_tensor_slices((data.x_val, data.y_val)).batch(batch)
    return {"x": ds_train, "validation_data": ds_val}


def _plain(model_kind: str, width: float, kind: str, epochs: int, jit: Any = "auto", *, image_size: int = 32,
           batch: int = BATCH, limit: int | None = None, mixed: bool = False) -> dict[str, Any]:
    import keras

    from workers.child.data import load_dataset
    from workers.child.model import build_classifier
    from workers.child.regularizers import RegularizerSet

    data = load_dataset("digits", image_size=image_size, limit=limit)
    keras.backend.clear_session()  # also resets the dtype policy: set it after
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    keras.utils.set_random_seed(0)
    inputs = _inputs(data, batch)
    t0 = time.perf_counter()
    if model_kind == "plain":
        model = build_classifier(input_shape=data.x_train.shape[1:], num_classes=data.num_classes, width=width,
                                 regularizers=RegularizerSet.from_config(_config(kind)))
    else:
        model = keras.applications.MobileNetV2(weights=None, alpha=width, input_shape=(image_size, image_size, 3),
                                               classes=data.num_classes, classifier_activation=None)
        _attach(model, kind)
    model.compile(
        optimizer=keras.optimizers.SGD(LR),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
        **({} if jit == "auto" else {"jit_compile": jit}),
    )
    begins: list[float] = []
    test_begins: list[float] = []
    ends: list[float] = []

    class Stamps(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            begins.append(time.perf_counter())

        def on_test_begin(self, logs: Any = None) -> None:
            test_begins.append(time.perf_counter())

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            ends.append(time.perf_counter())

    try:
        history = model.fit(epochs=epochs, verbose=0, callbacks=[Stamps()], **inputs)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    out = _rates(len(data.x_train), begins, test_begins, ends, t0)
    out.update(
        {
            "n_train": len(data.x_train),
            "jit_compile": bool(model.jit_compile),
            "policy": model.dtype_policy.name,
            "n_penalties": len(model.losses),
            "val_accuracy": [round(v, 4) for v in history.history["val_sparse_categorical_accuracy"]],
        }
    )
    return out


def measure(trainer: str, width: float, kind: str, epochs: int, jit: Any = "auto", **options: Any) -> dict[str, Any]:
    """One measurement: ``trainer`` in ``worker`` | ``plain`` | ``keras_app``.

    Args:
        trainer: Which of the three ways to train.
        width: Width multiplier.
        kind: Kernel penalty (none, l1, l2).
        epochs: Epochs (the first is tracing).
        jit: ``jit_compile`` of the plain fits ("auto" = Keras' default).
        options: ``image_size``, ``batch``, ``limit`` for all three; ``mixed`` (bool) for the plain
            fits; ``setup_extra`` (more ``training`` keys) for the worker.
    """
    load = load1()
    if trainer == "worker":
        out = _worker(width, kind, epochs, **options)
    else:
        out = _plain(trainer, width, kind, epochs, jit, **options)
    return {"trainer": trainer, "width": width, "kind": kind, "epochs": epochs, "load1_before": load, **out}


TRAINERS = ("plain", "worker", "keras_app")


def run(widths: list[float], epochs: int, repeats: int, trainers: tuple[str, ...] = TRAINERS) -> dict[str, Any]:
    """Every trainer x width x penalty, interleaved, ``repeats`` times; the best repeat is kept.

    ``plain`` and ``worker`` are always measured (the goal's ratio); ``keras_app`` when listed.
    """
    trainers = tuple(t for t in TRAINERS if t in {"plain", "worker", *trainers})
    runs: list[dict[str, Any]] = []
    for rep in range(repeats):
        for width in widths:
            for kind in KINDS:
                # Odd repeats reverse the order: whatever the run before leaves behind (a warm
                # allocator, a busier core) falls on each trainer alike.
                for trainer in trainers if rep % 2 == 0 else trainers[::-1]:
                    quiet = wait_until_quiet()  # the 1-minute load lags: start each run on idle cores
                    logger.info("throughput: rep %d %s width=%s %s", rep, trainer, width, kind)
                    r = measure(trainer, width, kind, epochs)
                    r.update({"repeat": rep, "cpu_busy_before": quiet["cpu_busy"],
                              "waited_for_quiet_s": quiet["waited_s"]})
                    runs.append(r)
                    logger.info("  %.0f img/s (first epoch +%.1fs)", r["images_per_s"], r["first_epoch_extra_s"])
    best: dict[str, dict[str, Any]] = {}
    for r in runs:
        key = f"{r['trainer']}|{r['width']}|{r['kind']}"
        if key not in best or r["images_per_s"] > best[key]["images_per_s"]:
            best[key] = r
    ratios: dict[str, Any] = {}
    for width in widths:
        for kind in KINDS:
            w, p = best[f"worker|{width}|{kind}"], best[f"plain|{width}|{kind}"]
            a = best.get(f"keras_app|{width}|{kind}")
            ratios[f"{width}|{kind}"] = {
                "worker/plain": round(w["images_per_s"] / p["images_per_s"], 2),
                "worker/plain train_only": round(w["train_only_images_per_s"] / p["train_only_images_per_s"], 2),
                "keras_app/plain": round(a["images_per_s"] / p["images_per_s"], 2) if a else None,
                "worker diagnostics share of epoch": w["diagnostics_share_of_epoch"],
                "penalty cost plain (1 - x/none)": round(
                    1 - p["images_per_s"] / best[f"plain|{width}|none"]["images_per_s"], 3
                ),
                "penalty cost worker (1 - x/none)": round(
                    1 - w["images_per_s"] / best[f"worker|{width}|none"]["images_per_s"], 3
                ),
            }
    return {"batch_size": BATCH, "lambda": LAMBDA, "learning_rate": LR, "repeats": repeats,
            "selection": "best of repeats (least disturbed by other load)", "runs": runs,
            "best": best, "ratios": ratios}


def table(payload: dict[str, Any]) -> str:
    """A markdown table: images/s per trainer, width and penalty, and the worker/plain ratio."""
    lines = [
        "| width | penalty | plain img/s | worker img/s | keras.applications img/s | worker/plain "
        "| worker/plain (train only) | worker diagnostics / epoch | first-epoch extra s (plain / worker / app) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, r in payload["ratios"].items():
        width, kind = key.split("|")
        b = {t: payload["best"].get(f"{t}|{width}|{kind}") for t in TRAINERS}
        app = b["keras_app"]
        lines.append(
            f"| {width} | {kind} | {b['plain']['images_per_s']:.0f} | {b['worker']['images_per_s']:.0f} | "
            f"{app['images_per_s'] if app else '-'} | {r['worker/plain']}x | {r['worker/plain train_only']}x | "
            f"{100 * r['worker diagnostics share of epoch']:.1f}% | "
            f"{b['plain']['first_epoch_extra_s']:.1f} / {b['worker']['first_epoch_extra_s']:.1f} / "
            f"{app['first_epoch_extra_s'] if app else '-'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI entry: run, write ``bench/results/throughput-<size>.json``, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=float, nargs="+", default=[0.25, 1.0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (the first is tracing)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--trainers", nargs="+", choices=TRAINERS, default=list(TRAINERS),
                        help="trainers to measure (plain and worker always are)")
    parser.add_argument("--size", default="full")
    args = parser.parse_args(argv)
    setup()
    # As in the worker's training child (workers.child.process): what the trainer imports is frozen
    # out of full collections, for every trainer measured here alike.
    import workers.child.train  # noqa: F401  # imports Keras and TensorFlow

    gc.freeze()
    payload = run(args.widths, args.epochs, args.repeats, tuple(args.trainers))
    command = "python -m bench.throughput " + " ".join(argv if argv is not None else sys.argv[1:])
    path = write_result("throughput", args.size, payload, command.strip(), keras_too=True)
    print(table(payload))
    logger.info("wrote %s", path)
    return payload


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
