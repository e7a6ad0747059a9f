"""Why (and whether) an L1 kernel penalty slows training: an interleaved per-step A/B.

Three identical models (``build_classifier``; no penalty, L1 1e-3, L2 1e-3 on every kernel)
are compiled like the tutorial and trained step by step on the same batches, interleaved in
blocks so that load from other processes hits all three alike; the median step time of each is
compared. Also timed alone: the penalty and its gradient over all 53 kernels (what Keras adds
per step: ``l1 * sum(abs(w))`` per weight, gradient ``l1 * sign(w)``), as 53 separate terms and
as one fused term over the concatenated kernels. Optionally the same with XLA (``jit_compile=True``).

    python -m bench.l1_profile --widths 0.25 1.0 --blocks 6 --xla
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

from bench.common import load1, logger, setup, write_result

__all__ = ["main", "penalty_only", "step_ab"]

KINDS = ("none", "l1", "l2")


def step_ab(width: float, blocks: int, steps: int, jit: bool) -> dict[str, Any]:
    """Median train-step time per penalty kind, interleaved in ``blocks`` of ``steps`` steps."""
    import keras
    import numpy as np

    from workers.child.data import load_dataset
    from workers.child.model import build_classifier
    from workers.child.regularizers import RegularizerSet

    data = load_dataset("digits", image_size=32)
    x, y = data.x_train, data.y_train
    models = {}
    for kind in KINDS:
        keras.utils.set_random_seed(0)
        cfg = {"kernel": {"kind": kind, kind: 1e-3}} if kind != "none" else {}
        m = build_classifier(input_shape=x.shape[1:], num_classes=10, width=width,
                             regularizers=RegularizerSet.from_config(cfg))
        m.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy()], jit_compile=jit)
        m.train_on_batch(x[:32], y[:32])  # trace
        models[kind] = m
    times: dict[str, list[float]] = {k: [] for k in KINDS}
    rng = np.random.default_rng(0)
    for block in range(blocks):
        for kind in (KINDS if block % 2 == 0 else KINDS[::-1]):
            m = models[kind]
            for _ in range(steps):
                idx = rng.integers(0, len(x), 32)
                t0 = time.perf_counter()
                m.train_on_batch(x[idx], y[idx])
                times[kind].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    tiny = {}
    for kind, m in models.items():  # L1 drives weights to ~0: are any subnormal (slow on CPU)?
        ws = np.concatenate([np.abs(keras.ops.convert_to_numpy(v)).ravel() for v in m.trainable_weights])
        tiny[kind] = {"below_1e-3": round(float((ws < 1e-3).mean()), 4),
                      "subnormal": int(((ws > 0) & (ws < np.finfo(np.float32).tiny)).sum())}
    return {"width": width, "jit_compile": jit, "steps_per_kind": blocks * steps, "load1": load1(),
            "median_step_ms": {k: round(v, 3) for k, v in med.items()},
            "slowdown_vs_none": {k: round(med[k] / med["none"] - 1, 3) for k in ("l1", "l2")},
            "weights_after": tiny}


def penalty_only(width: float, repeats: int = 200) -> dict[str, Any]:
    """Time the penalty + gradient alone: 53 separate terms vs one fused term, L1 vs L2."""
    import numpy as np
    import tensorflow as tf

    from workers.child.model import build_classifier, kernel_layers

    model = build_classifier(input_shape=(32, 32, 3), num_classes=10, width=width)
    ws = [v.value if hasattr(v, "value") else v for _, v in kernel_layers(model)]
    out: dict[str, Any] = {"width": width, "kernels": len(ws), "params": int(sum(np.prod(w.shape) for w in ws))}
    for kind in ("l1", "l2"):
        for fused in (False, True):
            op = tf.abs if kind == "l1" else tf.square

            @tf.function
            def step(fused: bool = fused, op: Any = op) -> Any:
                with tf.GradientTape() as tape:
                    tape.watch(ws)
                    if fused:
                        penalty = 1e-3 * tf.reduce_sum(op(tf.concat([tf.reshape(w, [-1]) for w in ws], 0)))
                    else:
                        penalty = tf.add_n([1e-3 * tf.reduce_sum(op(w)) for w in ws])
                return tape.gradient(penalty, ws)

            step()
            t0 = time.perf_counter()
            for _ in range(repeats):
                step()
            out[f"{kind}_{'fused' if fused else 'separate'}_ms"] = round((time.perf_counter() - t0) / repeats * 1000, 3)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI entry: write ``bench/results/l1_profile-<size>.json`` and print the findings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=float, nargs="+", default=[0.25, 1.0])
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--xla", action="store_true", help="also with jit_compile=True (slow on CPU)")
    parser.add_argument("--size", default="full")
    args = parser.parse_args(argv)
    setup()
    payload: dict[str, Any] = {"step_ab": [], "penalty_only": []}
    for width in args.widths:
        for jit in ((False, True) if args.xla else (False,)):
            logger.info("l1_profile: step A/B width=%s jit=%s", width, jit)
            payload["step_ab"].append(step_ab(width, args.blocks, args.steps, jit))
            logger.info("  %s", payload["step_ab"][-1]["median_step_ms"])
        payload["penalty_only"].append(penalty_only(width))
        logger.info("  penalty only: %s", payload["penalty_only"][-1])
    command = "python -m bench.l1_profile " + " ".join(argv if argv is not None else sys.argv[1:])
    path = write_result("l1_profile", args.size, payload, command.strip(), keras_too=True)
    print("| width | jit | none ms/step | L1 ms/step | L2 ms/step | L1 slowdown | L2 slowdown |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in payload["step_ab"]:
        m, s = r["median_step_ms"], r["slowdown_vs_none"]
        print(f"| {r['width']} | {r['jit_compile']} | {m['none']:.1f} | {m['l1']:.1f} | {m['l2']:.1f} | "
              f"{100 * s['l1']:+.1f}% | {100 * s['l2']:+.1f}% |")
    for p in payload["penalty_only"]:
        print(f"penalty+gradient alone, width {p['width']} ({p['kernels']} kernels, {p['params']:,} params): "
              f"L1 {p['l1_separate_ms']} ms separate / {p['l1_fused_ms']} ms fused; "
              f"L2 {p['l2_separate_ms']} ms / {p['l2_fused_ms']} ms")
    logger.info("wrote %s", path)
    return payload


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
