"""Deduplicated configs and the finalist phase, end to end with real workers on real Postgres."""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path

import optuna
from optuna.trial import TrialState

from sweep.report.data import collect
from sweep.storage.engine import engine_of, open_storage
from sweep.study.budget import budget_state, counts_toward_budget
from sweep.study.finalists import finalist_ranking, t_quantile_975
from sweep.study.sweeps import load_sweep
from tests.helpers import BIN, run_cli, synthetic_spec, worker_env


def _workers(pg_url: str, study: str, n: int) -> list[str]:
    env = worker_env(pg_url, study)
    procs = [subprocess.Popen([str(BIN / "sweep-worker"), "--worker-index", str(i)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(n)]
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * n, outputs
    return outputs


def test_equal_configs_reuse_results_and_count_saved_epochs(pg_url: str, study_name: str, tmp_path: Path) -> None:
    spec = synthetic_spec(tmp_path, study_name, trials=8, epochs=3, changes={
        "space": {"kernel": {"kinds": ["none", "l2"], "l2": {"values": [1e-3]}}},
        "sampler": {"name": "random", "seed": 3},
    })
    run_cli("create", str(spec), "--storage", pg_url, check=True)
    _workers(pg_url, study_name, 1)
    trials = optuna.load_study(study_name=study_name, storage=pg_url).get_trials()
    # Reused duplicates take no slot until the 2-config space is plainly exhausted (workers.parent.loop).
    assert sum(counts_toward_budget(t.state, t.user_attrs) for t in trials) == 8
    assert all(t.state == TrialState.COMPLETE for t in trials)
    trained = [t for t in trials if "dedup_of" not in t.user_attrs]
    reused = [t for t in trials if "dedup_of" in t.user_attrs]
    assert len(trained) == len({t.user_attrs["config_hash"] for t in trials}) == 2
    by_number = {t.number: t for t in trials}
    for t in reused:
        source = by_number[t.user_attrs["dedup_of"]]
        assert t.value == source.value and t.user_attrs["config_hash"] == source.user_attrs["config_hash"]
        assert t.user_attrs["epochs_saved"] == 3 and t.user_attrs["curves"] == source.user_attrs["curves"]
    status = run_cli("status", study_name, "--storage", pg_url, check=True).stdout
    assert f"deduplicated: {len(reused)} trial(s) reused an equal config, {3 * len(reused)} GPU-epochs saved" in status


def test_finalists_rerun_top_configs_with_fresh_seeds(pg_url: str, study_name: str, tmp_path: Path) -> None:
    spec = synthetic_spec(tmp_path, study_name, trials=5, epochs=2)
    spec.write_text(spec.read_text() + "\n[finalists]\ntop_k = 2\nseeds = 3\n")
    run_cli("create", str(spec), "--storage", pg_url, check=True)
    _workers(pg_url, study_name, 2)
    study = optuna.load_study(study_name=study_name, storage=pg_url)
    trials = study.get_trials()
    finalists = [t for t in trials if t.user_attrs.get("phase") == "finalist"]
    assert sum(counts_toward_budget(t.state, t.user_attrs) for t in trials) == 5 + 2 * 3 and len(finalists) == 6
    assert all(t.state == TrialState.COMPLETE for t in trials)
    search_best = sorted((t for t in trials if t.user_attrs.get("phase") == "search"), key=lambda t: -t.value)
    top_hashes = []
    for t in search_best:
        if t.user_attrs["config_hash"] not in top_hashes:
            top_hashes.append(t.user_attrs["config_hash"])
    assert {t.user_attrs["config_hash"] for t in finalists} == set(top_hashes[:2])
    assert sorted({t.user_attrs["seed"] for t in finalists}) == [1, 2, 3]
    ranking = finalist_ranking(study)
    assert len(ranking) == 2 and ranking[0].mean >= ranking[1].mean
    for row in ranking:
        assert len(row.values) == 3 and row.ci_low < row.mean < row.ci_high
        sd = (sum((v - row.mean) ** 2 for v in row.values) / 2) ** 0.5
        assert abs((row.ci_high - row.mean) - t_quantile_975(2) * sd / 3**0.5) < 1e-9
    # Welch's test of best vs second at 5%, worked out here: the verdict is computed, not left unset.
    best, second = ranking
    va, vb = (statistics.variance(r.values) / 3 for r in ranking)
    if va + vb == 0:
        expected = best.mean != second.mean
    else:
        df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
        expected = best.mean - second.mean - t_quantile_975(df) * (va + vb) ** 0.5 > 0
    assert best.worse_than_best is None and second.worse_than_best is expected


def test_status_and_report_show_the_budget_the_finalists_extended(
    pg_url: str, study_name: str, tmp_path: Path
) -> None:
    """The budget lives in one place: after the finalist phase extends it, ``sweep status``, the
    report and the budget table give the same total (the report once read the study attr instead)."""
    spec = synthetic_spec(tmp_path, study_name, trials=3, epochs=1, extra="\n[finalists]\ntop_k = 1\nseeds = 2\n")
    run_cli("create", str(spec), "--storage", pg_url, check=True)
    _workers(pg_url, study_name, 1)
    extended = 3 + 1 * 2
    table = budget_state(engine_of(open_storage(pg_url)), study_name)
    assert table is not None and table.total == extended
    status = json.loads(run_cli("status", study_name, "--storage", pg_url, "--json", check=True).stdout)
    report = collect(load_sweep(open_storage(pg_url), study_name))
    assert status["budget_total"] == report.budget_total == extended
    out = tmp_path / "report.html"
    run_cli("report", study_name, "--storage", pg_url, "--out", str(out), check=True)
    assert f"{extended} trials" in out.read_text()
