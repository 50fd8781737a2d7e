"""config.merge: the three-way merge of the app's change into the file, as tables of cases."""

from __future__ import annotations

from typing import Any

import pytest

from llamarunner.config.locate import KeyPath
from llamarunner.config.merge import (
    MISSING,
    Change,
    MergeConflict,
    apply,
    changes,
    lookup,
    merge,
    same,
)

BASE = {"models": {"gemma": {"path": "/g.gguf", "ttl": "5m"}}, "scheduler": {"max_queue": 4}}


def edited(data: Any, path: KeyPath, value: Any) -> Any:
    return apply(data, [Change(path, value)])


# (name, base, ours, theirs, expected result)
MERGES: list[tuple[str, Any, Any, Any, Any]] = [
    ("nothing changed", BASE, BASE, BASE, BASE),
    ("only the app changed a key", BASE,
     edited(BASE, ("models", "gemma", "ttl"), "10m"), BASE,
     edited(BASE, ("models", "gemma", "ttl"), "10m")),
    ("only the file changed a key: the file's value stays", BASE, BASE,
     edited(BASE, ("scheduler", "max_queue"), 9),
     edited(BASE, ("scheduler", "max_queue"), 9)),
    ("different keys on each side", BASE,
     edited(BASE, ("models", "gemma", "ttl"), "10m"),
     edited(BASE, ("scheduler", "max_queue"), 9),
     {"models": {"gemma": {"path": "/g.gguf", "ttl": "10m"}}, "scheduler": {"max_queue": 9}}),
    ("the same change on both sides", BASE,
     edited(BASE, ("models", "gemma", "ttl"), "1h"),
     edited(BASE, ("models", "gemma", "ttl"), "1h"),
     edited(BASE, ("models", "gemma", "ttl"), "1h")),
    ("the app adds a model while the file adds another", BASE,
     edited(BASE, ("models", "copy"), {"path": "/g.gguf"}),
     edited(BASE, ("models", "hand"), {"path": "/h.gguf"}),
     {"models": {"gemma": {"path": "/g.gguf", "ttl": "5m"}, "hand": {"path": "/h.gguf"},
                 "copy": {"path": "/g.gguf"}},
      "scheduler": {"max_queue": 4}}),
    ("the app removes a model the file did not touch", BASE,
     edited(BASE, ("models", "gemma"), MISSING),
     edited(BASE, ("scheduler", "max_queue"), 9),
     {"models": {}, "scheduler": {"max_queue": 9}}),
    ("both remove the same key", BASE,
     edited(BASE, ("models", "gemma", "ttl"), MISSING),
     edited(BASE, ("models", "gemma", "ttl"), MISSING),
     {"models": {"gemma": {"path": "/g.gguf"}}, "scheduler": {"max_queue": 4}}),
    ("the app sets a key under a section the file lacks", {}, {"security": {"api_key": "k"}},
     {"_comment": "mine"}, {"_comment": "mine", "security": {"api_key": "k"}}),
    ("a comment written by hand stays", BASE, edited(BASE, ("scheduler", "max_queue"), 1),
     {"_about": "my setup", **BASE, "$schema": "x"},
     {"_about": "my setup", **edited(BASE, ("scheduler", "max_queue"), 1), "$schema": "x"}),
    ("lists are merged whole: the same new list on both sides",
     {"model_dirs": ["/a"]}, {"model_dirs": ["/a", "/b"]}, {"model_dirs": ["/a", "/b"]},
     {"model_dirs": ["/a", "/b"]}),
]


@pytest.mark.parametrize(("base", "ours", "theirs", "expected"),
                         [case[1:] for case in MERGES], ids=[case[0] for case in MERGES])
def test_merge(base: Any, ours: Any, theirs: Any, expected: Any) -> None:
    result = merge(base, ours, theirs)
    assert result == expected
    assert list(result) == list(expected)  # key order too


# (name, base, ours, theirs, the key paths named)
CONFLICTS: list[tuple[str, Any, Any, Any, list[KeyPath]]] = [
    ("both changed a key differently", BASE,
     edited(BASE, ("models", "gemma", "ttl"), "10m"),
     edited(BASE, ("models", "gemma", "ttl"), "1h"), [("models", "gemma", "ttl")]),
    ("the app removed a model the file changed", BASE,
     edited(BASE, ("models", "gemma"), MISSING),
     edited(BASE, ("models", "gemma", "ttl"), "1h"), [("models", "gemma")]),
    ("the app changed a model the file removed", BASE,
     edited(BASE, ("models", "gemma", "ttl"), "10m"),
     edited(BASE, ("models", "gemma"), MISSING), [("models", "gemma", "ttl")]),
    ("both added the same model differently", BASE,
     edited(BASE, ("models", "new"), {"path": "/a"}),
     edited(BASE, ("models", "new"), {"path": "/b"}), [("models", "new")]),
    ("lists are whole: different additions conflict",
     {"model_dirs": ["/a"]}, {"model_dirs": ["/a", "/b"]}, {"model_dirs": ["/a", "/c"]},
     [("model_dirs",)]),
    ("true is not 1", {"args": {"x": 1}}, {"args": {"x": 2}}, {"args": {"x": True}},
     [("args", "x")]),
    ("every conflicting key is named", BASE,
     edited(edited(BASE, ("models", "gemma", "ttl"), "1m"), ("scheduler", "max_queue"), 1),
     edited(edited(BASE, ("models", "gemma", "ttl"), "2m"), ("scheduler", "max_queue"), 2),
     [("models", "gemma", "ttl"), ("scheduler", "max_queue")]),
]


@pytest.mark.parametrize(("base", "ours", "theirs", "paths"),
                         [case[1:] for case in CONFLICTS], ids=[case[0] for case in CONFLICTS])
def test_conflicts(base: Any, ours: Any, theirs: Any, paths: list[KeyPath]) -> None:
    with pytest.raises(MergeConflict) as info:
        merge(base, ours, theirs)
    assert list(info.value.paths) == paths


def test_the_conflict_text_names_keys_as_users_read_them() -> None:
    error = MergeConflict([("models", "qwen2.5", "ttl"), ("model_dirs",)])
    assert str(error) == 'models."qwen2.5".ttl, model_dirs'


def _minutes(data: Any) -> Any:
    """A toy normal form: durations in minutes however written, max_queue defaults to 4."""
    section = dict(data.get("scheduler", {}))
    ttl = section.get("default_ttl", "5m")
    section["default_ttl"] = f"{ttl // 60}m" if isinstance(ttl, int) else ttl
    section.setdefault("max_queue", 4)
    return {**data, "scheduler": section}


# (name, base, ours, theirs, expected): all as written; judged in _minutes' form.
NORMALISED: list[tuple[str, Any, Any, Any, Any]] = [
    ("the file's spelling stays where the app changed nothing",
     {"scheduler": {"default_ttl": "5m"}}, {"scheduler": {"default_ttl": "5m", "max_queue": 8}},
     {"scheduler": {"default_ttl": 600}}, {"scheduler": {"default_ttl": 600, "max_queue": 8}}),
    ("a change the app makes is written as the app wrote it",
     {"scheduler": {"default_ttl": "5m"}}, {"scheduler": {"default_ttl": 3600}},
     {"scheduler": {"default_ttl": "5m", "_c": "hand"}},
     {"scheduler": {"default_ttl": 3600, "_c": "hand"}}),
    ("the same change spelled two ways is no conflict: the file's spelling stays",
     {"scheduler": {"default_ttl": "5m"}}, {"scheduler": {"default_ttl": 3600}},
     {"scheduler": {"default_ttl": "60m"}}, {"scheduler": {"default_ttl": "60m"}}),
    ("a default written out or left out is the same, yet the app's removal is made",
     {"scheduler": {"default_ttl": "5m", "max_queue": 4}}, {"scheduler": {"default_ttl": "5m"}},
     {"scheduler": {"default_ttl": 300, "max_queue": 4}}, {"scheduler": {"default_ttl": 300}}),
]


@pytest.mark.parametrize(("base", "ours", "theirs", "expected"),
                         [case[1:] for case in NORMALISED],
                         ids=[case[0] for case in NORMALISED])
def test_merge_with_a_normal_form(base: Any, ours: Any, theirs: Any, expected: Any) -> None:
    normal_forms = (_minutes(base), _minutes(ours), _minutes(theirs))
    assert merge(base, ours, theirs, normal_forms=normal_forms) == expected


def test_a_conflict_is_judged_in_the_normal_form() -> None:
    base = {"scheduler": {"default_ttl": "5m"}}
    ours = {"scheduler": {"default_ttl": 3600}}
    theirs = {"scheduler": {"default_ttl": 600}}
    with pytest.raises(MergeConflict):
        merge(base, ours, theirs, normal_forms=(_minutes(base), _minutes(ours),
                                                _minutes(theirs)))


def test_atomic_paths_are_replaced_whole() -> None:
    def args(path: KeyPath) -> bool:
        return path[-1:] == ("args",)

    def dashless(data: Any) -> Any:
        return {name: {"args": {k.lstrip("-"): v for k, v in model["args"].items()}}
                for name, model in data.items()}

    base = {"m": {"args": {"ctx-size": 512}}}
    ours = {"m": {"args": {"ctx-size": 1024}}}
    theirs = {"m": {"args": {"--ctx-size": 512}}}  # the same flag, spelled with dashes
    normal_forms = (dashless(base), dashless(ours), dashless(theirs))
    assert merge(base, ours, theirs, atomic=args, normal_forms=normal_forms) == ours
    # Key by key it would hold the flag twice.
    assert merge(base, ours, theirs, normal_forms=normal_forms) == {
        "m": {"args": {"--ctx-size": 512, "ctx-size": 1024}}}


# (before, after, changes)
DIFFS: list[tuple[Any, Any, list[Change]]] = [
    ({"a": 1}, {"a": 1}, []),
    ({"a": 1}, {"a": 2}, [Change(("a",), 2)]),
    ({"a": 1}, {}, [Change(("a",), MISSING)]),
    ({}, {"a": {"b": 1}}, [Change(("a",), {"b": 1})]),
    ({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}, [Change(("a", "c"), 3)]),
    ({"a": [1, 2]}, {"a": [1, 3]}, [Change(("a",), [1, 3])]),
    ({"a": {"b": 1}}, {"a": "flat"}, [Change(("a",), "flat")]),
    ({"a": 1}, {"a": 1.0}, []),
    ({"a": 1}, {"a": True}, [Change(("a",), True)]),
    ([1], {"a": 1}, [Change((), {"a": 1})]),
]


@pytest.mark.parametrize(("before", "after", "expected"), DIFFS)
def test_changes(before: Any, after: Any, expected: list[Change]) -> None:
    assert changes(before, after) == expected
    assert apply(before, expected) == after


def test_apply_keeps_key_order_and_does_not_touch_its_input() -> None:
    data = {"z": 1, "a": {"y": 1, "b": 2}}
    result = apply(data, [Change(("a", "y"), 5), Change(("new",), 0), Change(("z",), MISSING),
                          Change(("gone", "deep"), MISSING)])
    assert list(result) == ["a", "new"] and list(result["a"]) == ["y", "b"]
    assert result["a"]["y"] == 5
    assert data == {"z": 1, "a": {"y": 1, "b": 2}}


@pytest.mark.parametrize(("a", "b", "equal"), [
    ({"x": 1, "y": 2}, {"y": 2, "x": 1}, True),
    (1, 1.0, True),
    (1, True, False),
    (0, False, False),
    ([1, 2], [2, 1], False),
    ("1", 1, False),
    (None, None, True),
    ({"x": None}, {}, False),
])
def test_same(a: Any, b: Any, equal: bool) -> None:
    assert same(a, b) is equal


def test_lookup() -> None:
    assert lookup(BASE, ("models", "gemma", "ttl")) == "5m"
    assert lookup(BASE, ("models", "nope", "ttl")) is MISSING
    assert lookup(BASE, ("scheduler", "max_queue", "deeper")) is MISSING
    assert lookup(BASE, ()) is BASE
