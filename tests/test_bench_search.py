"""bench.search's replay: the table lookup and the project's own sampler, pruner and dedup.

A small made-up table of the ``full`` space (every kind combination, lambdas drawn by
``bench.search_record.draw_configs``) whose curves rise with a known score, so what the replay
counts can be checked by hand. No Keras, no database (in-memory Optuna, as the benchmark runs).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench.search import evaluate, replay, spec_for
from bench.search_record import draw_configs
from bench.search_table import Table, load_table

EPOCHS = 6


def _score(config: dict[str, Any]) -> float:
    # The kernel penalty decides: none best, then l2, l1, l1_l2; bias and activity cost a little.
    base = {"none": 0.95, "l2": 0.9, "l1": 0.6, "l1_l2": 0.5}[config["kernel"]["kind"]]
    return base - 0.02 * (config["bias"]["kind"] != "none") - 0.01 * (config["activity"]["kind"] != "none")


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Table:
    rows = []
    for c in draw_configs(1):
        top = _score(c["config"])
        curve = [round(top * (1 - 0.5 ** (e + 1)), 5) for e in range(EPOCHS)]
        c.update(curves={"0": curve, "1": [round(v - 0.01, 5) for v in curve]}, diverged={"0": False, "1": False})
        rows.append(c)
    path: Path = tmp_path_factory.mktemp("table") / "search-curves-table.json"
    path.write_text(json.dumps({"epochs": EPOCHS, "configs": rows}))
    return load_table(path)


def test_the_lookup_keeps_the_kinds_and_takes_the_nearest_lambdas(table: Table) -> None:
    assert len(table.rows) == 64 and table.seeds == 2
    row = next(r for r in table.rows if r["config"]["kernel"]["kind"] == "l2")
    probe = json.loads(json.dumps(row["config"]))
    probe["kernel"]["l2"] *= 1.5  # off the recorded point, same kinds
    assert table.nearest(probe) is row
    curve, diverged = table.curve(probe, 1)
    assert curve == row["curves"]["1"] and diverged is False


def test_a_replay_spends_epochs_until_the_budget_and_its_best_only_grows(table: Table) -> None:
    trace = replay(table, "tpe+hyperband", seed=3, budget_epochs=120)
    used = [u for u, _, _, _ in trace]
    best = [b for _, b, _, _ in trace if b > -math.inf]
    assert used == sorted(used) and 120 <= used[-1] < 120 + EPOCHS
    assert best == sorted(best) and best[-1] <= 0.95
    # Hyperband pruned some trials: fewer epochs than trials x EPOCHS.
    assert "pruned" in {end for _, _, end, _ in trace} and used[-1] < len(trace) * EPOCHS
    # Replay 3 trains with the table's seed 1, which records 0.01 less than seed 0: the
    # incumbent's worth (its mean over both seeds) is its value seen + 0.005.
    assert trace[-1][3] == pytest.approx(trace[-1][1] + 0.005)


def test_strategies_are_the_preset_with_only_sampler_and_pruner_changed() -> None:
    default, random_search = spec_for("default", EPOCHS), spec_for("random", EPOCHS)
    assert default.space == random_search.space and default.training == random_search.training
    assert default.training.epochs == EPOCHS and default.training.width == 0.25
    assert (random_search.sampler.name, random_search.pruner.name) == ("random", "none")
    assert (default.sampler.name, default.pruner.name) == ("random", "hyperband")
    tpe = spec_for("tpe+hyperband", EPOCHS)  # the preset's pruner, TPE sampling
    assert (tpe.sampler.name, tpe.sampler.n_startup_trials, tpe.pruner) == ("tpe", 10, default.pruner)


def test_the_evaluation_measures_every_strategy_against_random(table: Table) -> None:
    result = evaluate(table, seeds=2, budget_trials=12)
    assert result["budget_epochs"] == 12 * EPOCHS
    assert set(result["summary"]) == {"random", "tpe", "tpe+median", "tpe+hyperband", "default"}
    # Random's final best is taken per table seed, each no higher than that seed's best record, so
    # every strategy can reach it; random itself reaches it in a replay of each seed.
    best_at = {str(seed): max(max(row["curves"][str(seed)]) for row in table.rows) for seed in range(table.seeds)}
    targets = result["target_random_final_best"]
    assert set(targets) == set(best_at) and all(0.5 < targets[w] <= best_at[w] for w in targets)
    assert result["summary"]["random"]["reached"] == "2/2"
    assert result["goal_met"] == (result["goal_value"] <= 0.25)
