"""Benchmarks of regsweep: orchestration overhead, training throughput, search efficiency.

Run all of them with ``python -m bench.run_all`` (CI size) or ``python -m bench.run_all --full``;
results land as JSON in ``bench/results/`` and are summarised in ``bench/README.md``.
"""
