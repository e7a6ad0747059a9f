"""Run every benchmark: CI size by default (under 15 minutes on 2 CPU cores), ``--full`` for the real sizes.

Each benchmark runs as its own process (``python -m bench.<name> ...``), writes
``bench/results/<name>-<size>.json`` and prints its table; a summary of the goals follows.

    python -m bench.run_all          # make bench
    python -m bench.run_all --full   # make bench-full
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

from bench.common import RESULTS, load1, logger, setup

__all__ = ["PLANS", "main"]

#: Arguments of each benchmark per size.
PLANS: dict[str, dict[str, list[str]]] = {
    "ci": {
        "orchestration": ["--procs", "1", "4", "16", "--trials-per-proc", "20", "--rounds", "3"],
        "throughput": ["--widths", "0.25", "1.0", "--epochs", "3", "--repeats", "2", "--trainers", "plain", "worker"],
        "search": ["--seeds", "60"],
    },
    "full": {
        "orchestration": ["--procs", "1", "4", "16"],
        "throughput": ["--widths", "0.25", "1.0", "--epochs", "5", "--repeats", "2"],
        "search": ["--seeds", "100"],
    },
}


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _goals(size: str) -> list[str]:
    """One line per goal, read back from the result files."""
    lines: list[str] = []
    try:
        o = json.loads((RESULTS / f"orchestration-{size}.json").read_text())
        for goal in o["goals"]:  # issue 16 s.1-2, as bench.orchestration judged them
            lines.append(f"orchestration {goal['goal']}: {goal['value']} ({_met(goal['met'])})")
    except (OSError, KeyError, ValueError) as error:
        lines.append(f"orchestration: no result ({error})")
    try:
        t = json.loads((RESULTS / f"throughput-{size}.json").read_text())
        speed = {k: v["worker/plain"] for k, v in t["ratios"].items()}
        share = {k: v.get("worker diagnostics share of epoch") for k, v in t["ratios"].items()}
        lines.append(f"throughput worker/plain img/s (goal >= 1.0x): {_met(all(x >= 1.0 for x in speed.values()))}; "
                     + ", ".join(f"{k}: {v}x" for k, v in speed.items()))
        lines.append("throughput diagnostics share of an epoch (goal <= 5%): "
                     + _met(all(x is not None and x <= 0.05 for x in share.values())) + "; "
                     + ", ".join(f"{k}: {'-' if v is None else f'{100 * v:.1f}%'}" for k, v in share.items()))
    except (OSError, KeyError, ValueError) as error:
        lines.append(f"throughput: no result ({error})")
    try:
        s = json.loads((RESULTS / f"search-{size}.json").read_text())["evaluation"]
        shares = ", ".join(f"{k}: {100 * v['share_of_random_epochs']:.0f}%" for k, v in s["summary"].items())
        worth = s["summary"]["default"]["incumbent_seed_mean_at_25%_of_budget"]["mean"]
        lines.append(f"search {s['goal']}: {100 * s['goal_value']:.0f}% ({_met(s['goal_met'])}); "
                     f"epochs to random's final best as a share of random's: {shares}; seed-averaged reading: "
                     f"default's incumbent at 25% of the budget {worth:.4f} vs random's at the end "
                     f"{s['summary']['random']['incumbent_seed_mean_at_budget']['mean']:.4f}")
    except (OSError, KeyError, ValueError) as error:
        lines.append(f"search: no result ({error})")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the plan of the chosen size; returns non-zero if a benchmark failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the real sizes (takes much longer)")
    parser.add_argument("--only", nargs="+", choices=list(PLANS["ci"]), help="run only these benchmarks")
    args = parser.parse_args(argv)
    setup()
    size = "full" if args.full else "ci"
    failed = 0
    timings: dict[str, Any] = {}
    for name, bench_args in PLANS[size].items():
        if args.only and name not in args.only:
            continue
        command = [sys.executable, "-m", f"bench.{name}", *bench_args, "--size", size]
        logger.info("%s (load %.2f): %s", name, load1(), " ".join(command[1:]))
        started = time.perf_counter()
        code = subprocess.call(command)
        timings[name] = round(time.perf_counter() - started, 1)
        logger.info("%s finished in %.0fs (exit %d)", name, timings[name], code)
        failed += code != 0
    print("\n## Goals (" + size + ")")
    for line in _goals(size):
        print("- " + line)
    print("- wall time per benchmark (s): " + json.dumps(timings))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
