"""Memory of one worker's training child across many trials (issue: no growth over 30 trials).

Runs one real ``sweep-worker`` on a study of N tiny Keras trials and reads the training child's
resident memory recorded on each trial (``diagnostics.trainer_rss_mb``). The child is replaced
every ``recycle_after`` trials (10 by default), which bounds any growth Keras leaves behind.

    python -m bench.memory --trials 30
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

SPEC = """
dedup = false
[study]
name = "{name}"
[space.kernel]
kinds = ["none", "l1", "l2"]
[training]
dataset = "digits"
input_size = 32
width = 0.25
epochs = 1
batch_size = 64
limit = 256
[sampler]
name = "random"
seed = 1
[budget]
trials = {trials}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--storage", default="postgresql+psycopg2://postgres@127.0.0.1:5432/test")
    parser.add_argument("--out", default="bench/results/memory.json")
    args = parser.parse_args()
    name = f"bench-memory-{int(time.time())}"
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "spec.toml"
        spec.write_text(SPEC.format(name=name, trials=args.trials))
        bin_dir = Path(sys.executable).parent
        subprocess.run([str(bin_dir / "sweep"), "create", str(spec), "--storage", args.storage], check=True)
        started = time.time()
        subprocess.run([str(bin_dir / "sweep-worker"), "--study", name], check=True,
                       env={**os.environ, "SWEEP_STORAGE": args.storage, "SWEEP_LOG_LEVEL": "WARNING"})
        wall = time.time() - started
    trials = optuna.load_study(study_name=name, storage=args.storage).get_trials()
    rss = [t.user_attrs.get("diagnostics", {}).get("trainer_rss_mb") for t in trials]
    served = [t.user_attrs.get("diagnostics", {}).get("trainer_trials") for t in trials]
    result = {
        "benchmark": "memory",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "trials": len(trials),
        "wall_s": round(wall, 1),
        "trainer_rss_mb": rss,
        "trial_in_child": served,
        "max_rss_mb": max(r for r in rss if r is not None),
        "rss_first_child": [r for r, n in zip(rss, served, strict=True) if n is not None and r is not None][:10],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine",)}, indent=1))


if __name__ == "__main__":
    main()
