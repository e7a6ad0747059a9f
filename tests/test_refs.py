"""sweep.refs: the one parser and importer of ``package.module:attr`` references."""

from __future__ import annotations

import os.path

import pytest

from sweep.refs import load_ref, split_ref


def test_split_ref_keeps_a_dotted_attribute_path() -> None:
    assert split_ref("os.path:join") == ("os.path", "join")
    assert split_ref("collections:OrderedDict.fromkeys") == ("collections", "OrderedDict.fromkeys")


@pytest.mark.parametrize("ref", ["os.path", ":join", "os.path:", ""])
def test_split_ref_refuses_a_malformed_ref(ref: str) -> None:
    with pytest.raises(ValueError, match="package.module:attr"):
        split_ref(ref)


def test_load_ref_imports_the_module_and_follows_the_path() -> None:
    import collections

    assert load_ref("os.path:join") is os.path.join
    assert load_ref("collections:OrderedDict.fromkeys") == collections.OrderedDict.fromkeys


def test_load_ref_says_which_part_is_missing() -> None:
    with pytest.raises(ImportError):
        load_ref("no_such_module_xyz:f")
    with pytest.raises(AttributeError):
        load_ref("os.path:no_such_fn")


def test_a_trainer_ref_resolves_like_any_other() -> None:
    from workers.child.process import resolve_trainer

    assert resolve_trainer("os.path:join") is os.path.join
    with pytest.raises(AttributeError):
        resolve_trainer("os.path:no_such_trainer")
