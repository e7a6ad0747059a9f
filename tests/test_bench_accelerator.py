"""bench/accelerator.py at tiny size: real Keras, a real sweep-worker trial, every planned figure present."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, worker_env


@pytest.mark.slow
def test_accelerator_bench_tiny_measures_every_combination(tmp_path: Path) -> None:
    env = worker_env(TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-m", "bench.accelerator", "--tiny", "--out", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    files = list(tmp_path.glob("accelerator-*-tiny.json"))
    assert len(files) == 1, files
    doc = json.loads(files[0].read_text())
    plan, device = doc["plan"], doc["device"]
    slug = re.sub(r"[^a-z0-9]+", "-", device["name"].lower()).strip("-")
    assert files[0].name == f"accelerator-{slug}-{device['backend']}-tiny.json"
    assert doc["versions"]["keras"] and doc["commit"] and doc["machine"]["cpus"] >= 1

    runs = doc["runs"]
    expected = {
        (t, s, b, m, x)
        for t in ("keras_app", "plain", "worker")
        for s in plan["sizes"]
        for b in plan["batches"]
        for m in plan["mixed"]
        for x in plan["xla"]
    }
    expected |= {(t, s, b, m, "auto") for t, m in (("worker", "auto"), ("plain", "off"))
                 for s in plan["sizes"] for b in plan["batches"]}
    measured = {(r["trainer"], r["image_size"], r["batch"], r["mixed"], r["xla"]): r for r in runs}
    assert set(measured) == expected
    for key, run in measured.items():
        assert "error" not in run and "skipped" not in run, (key, run)
        assert run["images_per_s"] > 0 and run["train_only_images_per_s"] > 0, (key, run)
        assert len(run["epoch_wall_s"]) == plan["epochs"] and all(w > 0 for w in run["epoch_wall_s"]), (key, run)
        if run["mixed"] != "auto":  # an explicit setting really ran with that policy and jit setting
            assert (run["policy"] == "mixed_float16") == (run["mixed"] == "on"), (key, run)
        if run["xla"] != "auto":
            assert bool(run["jit_compile"]) == (run["xla"] == "on"), (key, run)
        assert run["n_train"] == plan["limit"], (key, run)

    e2e = doc["end_to_end"]
    assert e2e["state"] == "COMPLETE", e2e
    gpu = e2e["worker_attr"]["gpu"]  # recorded by the worker (nvidia-smi), what deadline predictions key on
    assert (gpu == "cpu") == (not device["gpu"]) and (e2e["trainer_device"] == "cpu") == (not device["gpu"]), e2e
    assert e2e["gpu_attr_matches_device"] and e2e["trainer_backend"] == device["backend"], e2e
    assert e2e["prediction_ok"] and e2e["predicted_s"] == pytest.approx(1.25 * e2e["duration_s"]), e2e
    assert 0 < e2e["in_steps_fraction"] < 1 and e2e["in_steps_s"] > 0, e2e

    goals = doc["goals"]
    assert len(goals) == 2 * len(plan["sizes"]) + 1
    for verdict in goals.values():
        assert isinstance(verdict["met"], bool) and (verdict.get("ratio") or verdict.get("fraction")) > 0, goals
    for line in ("worker >= 0.9x keras MobileNetV2 fit", "worker >= 2x tutorial plain fit", "training steps"):
        assert line in done.stdout, done.stdout
