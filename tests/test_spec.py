"""Spec validation: every bad spec is rejected with one message naming the field and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep.errors import SpecError
from sweep.spec.load import load_spec, parse_spec

PRESETS = sorted((Path(__file__).resolve().parents[1] / "sweep" / "presets").glob("*.toml"))


def _spec(**sections: object) -> dict:
    data = {"study": {"name": "x"}, "space": {"kernel": {"kinds": ["l2"]}}}
    data.update(sections)
    return data


def _space(**kernel: object) -> dict:
    return {"study": {"name": "x"}, "space": {"kernel": kernel}}


BAD_SPECS = [
    (_space(kinds=["l2"], l2={"low": -1, "high": 1e-2}),
     "Invalid space.kernel.l2.low: expected a positive float, received low=-1.0"),
    (_space(kinds=["l2"], l2={"low": 1e-6, "high": 0}),
     "Invalid space.kernel.l2.high: expected a positive float, received high=0.0"),
    (_space(kinds=["l1"], l1={"low": 1e-2, "high": 1e-6}),
     "Invalid space.kernel.l1: expected low <= high, received low=0.01, high=1e-06"),
    (_space(kinds=["l3"]),
     "Invalid space.kernel.kinds: expected none, l1, l2, l1_l2 or 'package.module:function', received kind='l3'"),
    ({"study": {"name": "x"}, "space": {"gamma": {"kinds": ["l2"]}}},
     "Invalid space.gamma: unknown field, received gamma={'kinds': ['l2']}"),
    (_space(kinds=["none"]),
     "Invalid space: empty search space: every placement allows only kind 'none'"),
    (_space(kinds=[]), "Invalid space.kernel.kinds: expected at least one kind, received kinds=[]"),
    (_spec(training={"dataset": "imagenet"}),
     "Invalid training.dataset: expected digits, dir:PATH, npz:PATH or tfds:NAME, received dataset='imagenet'"),
    (_spec(training={"dataset": "dir:/nonexistent/images"}),
     "Invalid training.dataset: dir path does not exist, received dataset='dir:/nonexistent/images'"),
    (_spec(training={"epochs": "ten"}),
     "Invalid training.epochs: input should be a valid integer, unable to parse string as an integer, "
     "received epochs='ten'"),
    (_spec(training={"epochs": 0}),
     "Invalid training.epochs: input should be greater than or equal to 1, received epochs=0"),
    (_spec(sampler={"name": "cmaes"}),
     "Invalid sampler.name: input should be 'tpe', 'random' or 'grid', received name='cmaes'"),
    (_spec(pruner={"name": "asha"}),
     "Invalid pruner.name: input should be 'none', 'median' or 'hyperband', received name='asha'"),
    ({**_space(kinds=["l2"]), "sampler": {"name": "grid"}},
     "Invalid space.kernel.l2: the grid sampler needs values = [...], received a range low=1e-06, high=0.01"),
    ({"study": {"name": "has space"}, "space": {"kernel": {"kinds": ["l2"]}}},
     "Invalid study.name: expected letters, digits, '.', '_' or '-' (max 100), received name='has space'"),
    ({"study": {}, "space": {"kernel": {"kinds": ["l2"]}}}, "Invalid study.name: field required"),
    (_spec(budget={"deadline": "2026-11-24T07:00:00"}),
     "Invalid budget.deadline: expected a time zone offset (e.g. +01:00), received deadline='2026-11-24T07:00:00'"),
    (_spec(budget={"trials": -5}),
     "Invalid budget.trials: input should be greater than or equal to 1, received trials=-5"),
    (_space(kinds=["nosuchmod:fn"]),
     "Invalid space.kernel.kinds: cannot find module 'nosuchmod' of custom kind, received kind='nosuchmod:fn'"),
    (_space(kinds=["l2"], tie="kernel"),
     "Invalid space.kernel.tie: a placement cannot tie to itself, received tie='kernel'"),
    (_spec(training={"bn_momentum": 1.5}),
     "Invalid training.bn_momentum: input should be less than 1, received bn_momentum=1.5"),
    (_spec(training={"learning_rate": -0.1}),
     "Invalid training.learning_rate: input should be greater than 0, received learning_rate=-0.1"),
    (_spec(foo=1), "Invalid foo: unknown field, received foo=1"),
    (_space(kinds=["l2", "l2"]), "Invalid space.kernel.kinds: expected each kind once, received kinds=['l2', 'l2']"),
    (_space(kinds=["l2"], l2={"values": []}),
     "Invalid space.kernel.l2.values: expected at least one value, received values=[]"),
    (_space(kinds=["l2"], l2={"low": 1e-3, "high": 1e-2, "values": [1e-3]}),
     "Invalid space.kernel.l2: give either low/high or values, not both"),
    (_space(kinds=["l2"], l2={"low": float("nan"), "high": 1e-2}),
     "Invalid space.kernel.l2.low: expected a positive float, received low=nan"),
    (_spec(training={"trainer": "tensorflow"}),
     "Invalid training.trainer: expected 'keras' or 'package.module:function', received trainer='tensorflow'"),
    (_spec(training={"optimizer": "rmsprop"}),
     "Invalid training.optimizer: input should be 'sgd', 'momentum' or 'adam', received optimizer='rmsprop'"),
    (_space(kinds=["none", "l2"], head=["l1"]),
     "Invalid space.kernel.head: expected kinds of this placement ['none', 'l2'], received head=['l1']"),
    (_spec(training={"steps_per_epoch": 0}),
     "Invalid training.steps_per_epoch: input should be greater than or equal to 1, received steps_per_epoch=0"),
]


@pytest.mark.parametrize("data, message", BAD_SPECS,
                         ids=[m.split(":")[0][8:] + f"-{i}" for i, (_, m) in enumerate(BAD_SPECS)])
def test_bad_spec_gives_exact_message(data: dict, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    assert str(info.value) == message


def test_toml_syntax_error_names_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[study\nname = 1\n")
    with pytest.raises(SpecError, match=r"Invalid spec .*bad.toml: TOML syntax error"):
        load_spec(bad)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="file not found"):
        load_spec(tmp_path / "nope.toml")


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_presets_are_valid(path: Path) -> None:
    spec = load_spec(path)
    assert spec.study.name == path.stem


def test_public_dict_drops_storage_password() -> None:
    spec = parse_spec(_spec(study={"name": "x", "storage": "postgresql://u:hunter2@h/db"}))
    assert "hunter2" not in str(spec.public_dict())
    without_storage = spec.model_copy(update={"study": spec.study.model_copy(update={"storage": None})})
    assert parse_spec(spec.public_dict()) == without_storage
