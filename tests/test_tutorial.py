"""The tutorial comparison as pure functions, and the preset that replicates the tutorial."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from sweep.penalties.searchspace import config_from_params, grid_params
from sweep.report.tutorial import (
    TUTORIAL_ORDER,
    TUTORIAL_RUNS,
    KindResult,
    check_order,
    comparison_table,
    order_sentences,
    reg_loss_table,
)
from sweep.spec.load import load_spec

PRESETS = Path(__file__).resolve().parents[1] / "sweep" / "presets"


def test_the_tutorials_published_numbers_are_its_finding() -> None:
    """none 0.816 > L2 0.595 > L1 0.333, and ten falling reg-loss values for L1 and L2."""
    values = [TUTORIAL_RUNS[k].val_accuracy for k in TUTORIAL_ORDER]
    assert values == sorted(values, reverse=True) == [0.8164, 0.5945, 0.3328]
    for kind in ("l1", "l2"):
        reg = TUTORIAL_RUNS[kind].reg_loss
        assert len(reg) == 10 and all(a > b for a, b in itertools.pairwise(reg))
    assert TUTORIAL_RUNS["l2"].reg_loss[0] == pytest.approx(2.9584365)


def test_order_holds_only_beyond_seed_noise() -> None:
    results = {
        "none": KindResult("none", [0.95, 0.96, 0.97]),
        "l2": KindResult("l2", [0.80, 0.82, 0.78]),
        "l1": KindResult("l1", [0.85, 0.30, 0.60]),  # lower on average, but far too noisy to tell
    }
    first, second = check_order(results)
    assert (first.better, first.worse, first.holds) == ("none", "l2", True)
    assert first.difference == pytest.approx(0.16) and 0 < first.low < 0.16 < first.high
    assert (second.better, second.worse, second.holds) == ("l2", "l1", False) and second.difference > 0
    lines = order_sentences([first, second])
    assert lines[0].startswith("no regularizer > L2: difference +0.160")
    assert lines[0].endswith("reproduced, beyond seed noise")
    assert lines[1].endswith("same direction, but within seed noise")
    reversed_ = check_order({"none": KindResult("none", [0.5, 0.51]), "l2": KindResult("l2", [0.9, 0.91])})
    assert reversed_[0].holds is False and order_sentences(reversed_)[0].endswith("NOT reproduced")


def test_one_seed_cannot_be_told_from_noise() -> None:
    checks = check_order({"none": KindResult("none", [0.9]), "l2": KindResult("l2", [0.5, 0.6])})
    assert checks[0].holds is None and math.isinf(checks[0].low)
    assert order_sentences(checks)[0].endswith("needs at least two seeds on each side to tell from seed noise")
    assert check_order({"none": KindResult("none", [0.9])}) == []  # nothing to compare with


def test_tables_put_ours_beside_the_tutorial() -> None:
    results = {
        "none": KindResult("none", [0.9, 0.92], [[0.0] * 10, [0.0] * 10], [1, 2]),
        "l1": KindResult("l1", [0.3, 0.4], [[2.0, 1.0], [4.0, 3.0, 0.5]], [1, 2]),
    }
    head, rows = comparison_table(results)
    assert head[:4] == ["experiment", "tutorial val acc", "ours val acc (mean)", "ours 95% CI"]
    assert [r[0] for r in rows] == ["no regularizer", "L2", "L1"]
    assert rows[0][1:3] == ["0.816", "0.910"] and rows[0][4] == "2"
    assert rows[1][2] == "not run yet"
    assert rows[2][5] == "1.12 → 0.346" and rows[2][6] == "3 → 2"  # mean curve: as long as the shortest run
    reg_head, reg_rows = reg_loss_table(results)
    assert reg_head == ["epoch", "L1 tutorial", "L1 ours", "L2 tutorial", "L2 ours"]
    assert len(reg_rows) == 10 and reg_rows[0] == ["1", "1.124", "3", "2.958", ""] and reg_rows[2][2] == ""


def test_seed_replication_preset_is_the_tutorials_experiment() -> None:
    """λ = 1e-3, its placements (L2 reaches the Dense head, L1 does not), SGD, 10 epochs, 6 runs each."""
    spec = load_spec(PRESETS / "seed-replication.toml")
    grid = [config_from_params(p, spec.space) for p in grid_params(spec.space)]
    configs = {c.kernel.kind: c.canonical() for c in grid}
    assert configs == {
        "none": {"kernel": {"kind": "none"}, "bias": {"kind": "none"}, "activity": {"kind": "none"}},
        "l1": {"kernel": {"kind": "l1", "l1": 1e-3, "head": False}, "bias": {"kind": "l1", "l1": 1e-3, "head": False},
               "activity": {"kind": "none"}},
        "l2": {"kernel": {"kind": "l2", "l2": 1e-3}, "bias": {"kind": "l2", "l2": 1e-3}, "activity": {"kind": "none"}},
    }
    training = spec.training
    assert (training.width, training.optimizer, training.epochs, training.conv_bias) == (1.0, "sgd", 10, False)
    assert spec.objective.reduce == "last"  # the tutorial reports its last epoch
    assert (spec.finalists.top_k, spec.finalists.seeds) == (3, 5)  # 4 runs left L2 > L1 within noise
    assert training.steps_per_epoch is not None and training.steps_per_epoch * training.batch_size > 1500


def test_gpu_tutorial_preset_is_the_tutorials_true_setting() -> None:
    spec = load_spec(PRESETS / "tutorial-224.toml")
    assert (spec.training.input_size, spec.training.width, spec.training.optimizer) == (224, 1.0, "sgd")
    assert spec.training.steps_per_epoch is None  # a real image folder: one pass per epoch, as the tutorial
    assert spec.space == load_spec(PRESETS / "seed-replication.toml").space
