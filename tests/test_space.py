"""Conditional space, canonical configs and grids, checked on real studies."""

from __future__ import annotations

import optuna
import pytest

from sweep.errors import SpecError
from sweep.penalties.config import Penalty, RegularizerConfig
from sweep.penalties.searchspace import config_from_params, grid_params, params_from_config, suggest_config
from sweep.spec.load import parse_spec

FULL = parse_spec({
    "study": {"name": "x"},
    "space": {
        "kernel": {"kinds": ["none", "l1", "l2", "l1_l2"]},
        "bias": {"kinds": ["none", "l2"], "l2": {"low": 1e-5, "high": 1e-3}},
        "activity": {"kinds": ["none", "l1"], "l1": {"low": 1e-8, "high": 1e-5}},
    },
})

USES = {"none": set(), "l1": {"l1"}, "l2": {"l2"}, "l1_l2": {"l1", "l2"}}


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_no_inactive_lambda_is_ever_stored(storage_url: str, study_name: str, sampler: str) -> None:
    sampler_obj = (optuna.samplers.RandomSampler(seed=1) if sampler == "random"
                   else optuna.samplers.TPESampler(seed=1, multivariate=True, group=True, n_startup_trials=5))
    study = optuna.create_study(study_name=study_name, storage=storage_url, sampler=sampler_obj, direction="maximize")
    kinds_seen = set()
    for _ in range(30):
        trial = study.ask()
        config = suggest_config(trial, FULL.space)
        study.tell(trial, float(config.kernel.kind == "l2"))
    for trial in optuna.load_study(study_name=study_name, storage=storage_url).trials:
        for placement in ("kernel", "bias", "activity"):
            kind = trial.params.get(f"{placement}_kind")
            kinds_seen.add(kind)
            stored = {k.split("_", 1)[1] for k in trial.params if k.startswith(placement) and not k.endswith("kind")}
            assert stored == USES[kind], (trial.number, placement, trial.params)
        # the stored params rebuild the same config
        assert config_from_params(trial.params, FULL.space).canonical() == \
            RegularizerConfig.from_dict(config_from_params(trial.params, FULL.space).to_dict()).canonical()
    assert {"none", "l1", "l2", "l1_l2"} <= kinds_seen


@pytest.mark.parametrize("a, b", [
    (Penalty("none", l1=0.5, l2=0.3), Penalty("none")),
    (Penalty("l1", l1=1e-3, l2=0.7), Penalty("l1", l1=0.001)),
    (Penalty("l1_l2", l1=0.0, l2=1e-3), Penalty("l2", l2=1e-3)),
    (Penalty("l2", l2=0.0), Penalty("none")),
    (Penalty("l2", l2=1e-3 + 1e-12), Penalty("l2", l2=1e-3)),
])
def test_equivalent_configs_hash_equal(a: Penalty, b: Penalty) -> None:
    assert RegularizerConfig(kernel=a).config_hash() == RegularizerConfig(kernel=b).config_hash()
    assert RegularizerConfig(kernel=a).canonical() == RegularizerConfig(kernel=b).canonical()


def test_different_configs_hash_differently() -> None:
    hashes = {RegularizerConfig(kernel=Penalty("l2", l2=v)).config_hash() for v in (1e-3, 2e-3, 1e-4)}
    hashes.add(RegularizerConfig(bias=Penalty("l2", l2=1e-3)).config_hash())
    assert len(hashes) == 4


def test_no_effect_placement_hashes_like_none() -> None:
    a = RegularizerConfig(bias=Penalty("l2", l2=1e-3), kernel=Penalty("l1", l1=1e-4))
    b = RegularizerConfig(kernel=Penalty("l1", l1=1e-4))
    assert a.config_hash() != b.config_hash()
    assert a.config_hash(no_effect=("bias",)) == b.config_hash()


def test_round_trip_and_validation_messages() -> None:
    config = RegularizerConfig(
        kernel=Penalty("l1_l2", l1=1e-4, l2=1e-3), activity=Penalty("custom", fn="math:fsum", scale=0.5)
    )
    assert RegularizerConfig.from_dict(config.to_dict()) == RegularizerConfig.from_dict(config.canonical())
    with pytest.raises(SpecError, match=r"^Invalid l2: expected a non-negative float, received l2=-1$"):
        Penalty("l2", l2=-1)
    with pytest.raises(SpecError, match=r"Invalid placement: expected kernel, bias or activity, received \['gamma'\]"):
        RegularizerConfig.from_dict({"gamma": {"kind": "none"}})


def test_grid_is_deduplicated_and_tied() -> None:
    spec = parse_spec({
        "study": {"name": "x"},
        "sampler": {"name": "grid"},
        "space": {"kernel": {"kinds": ["none", "l1", "l2"], "l1": {"values": [1e-3]}, "l2": {"values": [1e-4, 1e-3]}},
                  "bias": {"tie": "kernel"}},
    })
    grid = grid_params(spec.space)
    configs = [config_from_params(p, spec.space) for p in grid]
    assert len(grid) == 4  # none, l1(1e-3), l2(1e-4), l2(1e-3)
    assert len({c.config_hash() for c in configs}) == 4
    assert all(c.bias == c.kernel for c in configs)


def test_head_option_follows_the_kind_and_keeps_old_hashes() -> None:
    """``head = ["l2"]``: L2 reaches the Dense head, L1 leaves it out (the tutorial's two runs)."""
    spec = parse_spec({
        "study": {"name": "x"},
        "sampler": {"name": "grid"},
        "space": {"kernel": {"kinds": ["none", "l1", "l2"], "l1": {"values": [1e-3]}, "l2": {"values": [1e-3]},
                             "head": ["l2"]},
                  "bias": {"tie": "kernel"}},
    })
    configs = {c.kernel.kind: c for c in (config_from_params(p, spec.space) for p in grid_params(spec.space))}
    assert set(configs) == {"none", "l1", "l2"}
    assert configs["l1"].canonical()["kernel"] == {"kind": "l1", "l1": 1e-3, "head": False}
    assert configs["l1"].bias == configs["l1"].kernel  # the tie copies the scope too
    assert configs["l2"].canonical()["kernel"] == {"kind": "l2", "l2": 1e-3}
    assert configs["none"].canonical()["kernel"] == {"kind": "none"}
    # A penalty on the head hashes as before the option existed; leaving the head out differs.
    on_head = RegularizerConfig(kernel=Penalty("l1", l1=1e-3))
    assert on_head.config_hash() == RegularizerConfig(kernel=Penalty("l1", l1=1e-3, head=True)).config_hash()
    assert on_head.config_hash() != configs["l1"].config_hash()
    assert RegularizerConfig.from_dict(configs["l1"].to_dict()) == configs["l1"]
    assert configs["l1"].label() == "kernel L1 1.0e-03 (not on the head), bias L1 1.0e-03 (not on the head)"
    # sweep enqueue: the study's space decides the scope from the kind.
    l1 = Penalty("l1", l1=1e-3)
    params = params_from_config(RegularizerConfig(kernel=l1, bias=l1), spec.space)
    assert config_from_params(params, spec.space) == configs["l1"]
    with pytest.raises(SpecError, match=r"^Invalid head: expected true or false, received head='no'$"):
        Penalty("l1", l1=1e-3, head="no")  # type: ignore[arg-type]


def test_params_from_config_inverts_suggest_and_rejects_outside() -> None:
    config = RegularizerConfig(kernel=Penalty("l2", l2=1e-3), bias=Penalty("l2", l2=1e-4))
    params = params_from_config(config, FULL.space)
    assert config_from_params(params, FULL.space).canonical() == config.canonical()
    with pytest.raises(SpecError, match=r"Invalid bias.kind: expected one of \['none', 'l2'\], received kind='l1'"):
        params_from_config(RegularizerConfig(bias=Penalty("l1", l1=1e-4)), FULL.space)
    with pytest.raises(SpecError, match=r"Invalid bias.l2: expected a value in \[1e-05, 0.001\], received l2=0.1"):
        params_from_config(RegularizerConfig(bias=Penalty("l2", l2=0.1)), FULL.space)


def test_no_effect_is_learned_only_from_trials_that_set_the_penalty() -> None:
    from optuna.trial import create_trial

    from workers.parent.dedup import learned_no_effect

    def trial(config: dict, layers: dict) -> optuna.trial.FrozenTrial:
        return create_trial(value=0.5, user_attrs={"config": config, "diagnostics": {"placement_layers": layers}})

    unset = trial({"kernel": {"kind": "l2", "l2": 1e-3}, "bias": {"kind": "none"}, "activity": {"kind": "none"}},
                  {"kernel": 53, "bias": 0, "activity": 0})
    assert learned_no_effect([unset]) == ()  # 0 layers because nothing was set there
    reached_nothing = trial(
        {"kernel": {"kind": "none"}, "bias": {"kind": "l2", "l2": 1e-3}, "activity": {"kind": "none"}},
        {"kernel": 0, "bias": 0, "activity": 0},
    )
    assert learned_no_effect([unset, reached_nothing]) == ("bias",)
