"""Random interleavings of hand edits (some unparsable), reloads and app saves on a real file.

The property: no accepted change is ever lost. An app save that succeeded is in the file
until something changes it again; a hand edit that was on disk when a save happened is
still there after it, unless that save was refused; a refused save leaves the file byte for
byte. The expected outcome of each save is worked out here from a flat model of a few keys,
independently of the store's merge.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from llamarunner.config import Config, ConfigStore, parse_config, render_path
from llamarunner.config.store import ConfigConflictError, ConfigFileInvalidError

# The keys the model follows, each with how to read it from a config and set it in JSON.
# None means "not there" (no ttl, no model m3, no comment).
Getter = Callable[[dict[str, Any]], Any]
Setter = Callable[[dict[str, Any], Any], None]


def _set_in(path: tuple[str, ...]) -> Setter:
    def set_value(data: dict[str, Any], value: Any) -> None:
        node = data
        for key in path[:-1]:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value

    return set_value


def _get_in(path: tuple[str, ...]) -> Getter:
    def get_value(data: dict[str, Any]) -> Any:
        node: Any = data
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    return get_value


def _set_m3(data: dict[str, Any], present: Any) -> None:
    models = data.setdefault("models", {})
    if present:
        models["m3"] = {"path": "/models/m3.gguf"}
    else:
        models.pop("m3", None)


KEYS: dict[str, tuple[str, Getter, Setter]] = {
    "queue": ("scheduler.max_queue", _get_in(("scheduler", "max_queue")),
              _set_in(("scheduler", "max_queue"))),
    "loaded": ("scheduler.max_loaded_models", _get_in(("scheduler", "max_loaded_models")),
               _set_in(("scheduler", "max_loaded_models"))),
    "m1.ttl": ("models.m1.ttl", _get_in(("models", "m1", "ttl")),
               _set_in(("models", "m1", "ttl"))),
    "m2.ttl": ("models.m2.ttl", _get_in(("models", "m2", "ttl")),
               _set_in(("models", "m2", "ttl"))),
    "m3": ("models.m3", lambda data: "m3" in data.get("models", {}), _set_m3),
    "note": ("_note", _get_in(("_note",)), _set_in(("_note",))),
}
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "queue": st.integers(0, 5),
    "loaded": st.integers(1, 3),
    # One duration spelled several ways: the same change written differently is no conflict.
    "m1.ttl": st.sampled_from([None, "1m", 60, "60s", "2m", 120, "5m"]),
    "m2.ttl": st.sampled_from([None, "1m", 60, "2m", "120s", "5m", 300]),
    "m3": st.booleans(),
    "note": st.sampled_from([None, "a", "b"]),
}
START = {
    "_note": "a",
    "models": {"m1": {"path": "/models/m1.gguf"},
               "m2": {"path": "/models/m2.gguf", "ttl": "5m"}},
    "scheduler": {"max_queue": 2},
}
# Files a user can leave behind mid-edit, or with a mistake in them.
BROKEN = [b"", b'{"models": {', b'{"scheduler": {"max_queue": "many"}}', b"[]",
          b'{"models": {"m1": {"path": "/m1.gguf",}}}', b"\xff\xfe{}"]

# Some of the keys, each set to a value (or removed).
edits = st.fixed_dictionaries({}, optional={key: VALUES[key] for key in KEYS})


def tracked(config: Config) -> dict[str, Any]:
    data = config.to_dict()
    return {key: get(data) for key, (_name, get, _set) in KEYS.items()}


def tracked_json(data: dict[str, Any]) -> dict[str, Any]:
    return tracked(parse_config(data))


class SaveInterleavings(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="llamarunner-save-"))
        self.path = self.folder / "config.json"
        self.path.write_text(json.dumps(START, indent=2) + "\n", encoding="utf-8")
        self.store = ConfigStore(self.path)
        self.store.load()
        # The model: what the app last loaded or saved, and what the file holds (None while
        # it does not parse).
        self.base = tracked_json(START)
        self.disk: dict[str, Any] | None = dict(self.base)
        self.last_good_json: dict[str, Any] = json.loads(json.dumps(START))

    def teardown(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    @rule(edit=edits, indent=st.sampled_from([2, 4, "\t"]), newline=st.booleans())
    def hand_edit(self, edit: dict[str, Any], indent: int | str, newline: bool) -> None:
        data = json.loads(json.dumps(self.last_good_json))
        for key, value in edit.items():
            KEYS[key][2](data, value)
        text = json.dumps(data, indent=indent) + ("\n" if newline else "")
        self.path.write_text(text, encoding="utf-8")
        self.last_good_json = data
        self.disk = tracked_json(data)

    @rule(raw=st.sampled_from(BROKEN))
    def hand_edit_that_does_not_parse(self, raw: bytes) -> None:
        self.path.write_bytes(raw)
        self.disk = None

    @rule()
    def reload(self) -> None:
        """The watcher (or the user, after a conflict) picks up the file."""
        if self.disk is None:
            return  # a file that does not parse is not loaded; the app keeps its config
        self.store.load()
        self.base = dict(self.disk)

    @rule(edit=edits)
    def app_save(self, edit: dict[str, Any]) -> None:
        config = self.store.config
        assert config is not None
        data = config.to_dict()
        for key, value in edit.items():
            KEYS[key][2](data, value)
        ours = tracked_json(data)
        before = self.path.read_bytes()
        if self.disk is None:
            try:
                self.store.save(data)
            except ConfigFileInvalidError:
                assert self.path.read_bytes() == before
                return
            raise AssertionError("a file that does not parse was replaced")
        disk = self.disk
        conflicts = {
            KEYS[key][0] for key in KEYS
            if ours[key] != self.base[key] and disk[key] != self.base[key]
            and ours[key] != disk[key]}
        try:
            saved = self.store.save(data)
        except ConfigConflictError as exc:
            assert {render_path(path) for path in exc.paths} == conflicts, str(exc)
            assert self.path.read_bytes() == before
            return
        assert not conflicts, f"{conflicts} were changed on both sides, yet it saved"
        # Every key: the app's value where the app changed it, else the file's.
        expected = {key: ours[key] if ours[key] != self.base[key] else disk[key]
                    for key in KEYS}
        assert tracked(saved) == expected
        on_disk = json.loads(self.path.read_text(encoding="utf-8"))
        assert tracked_json(on_disk) == expected
        # And as written: the file's spelling of what the file changed (60 stays 60, not
        # "1m", also when the app made the same change), the app's of the rest it changed.
        for key, (_name, get, _set) in KEYS.items():
            if disk[key] != self.base[key]:
                assert get(on_disk) == get(self.last_good_json), key
            elif ours[key] != self.base[key]:
                assert get(on_disk) == get(data), key
        self.base = dict(expected)
        self.disk = dict(expected)
        self.last_good_json = on_disk

    @invariant()
    def no_temp_files_are_left(self) -> None:
        assert [p.name for p in self.folder.iterdir() if p.name.endswith(".tmp")] == []

    @invariant()
    def the_store_runs_on_the_models_base(self) -> None:
        assert self.store.config is not None
        assert tracked(self.store.config) == self.base


TestSaveInterleavings = SaveInterleavings.TestCase
TestSaveInterleavings.settings = settings(
    max_examples=100, stateful_step_count=20, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow])
