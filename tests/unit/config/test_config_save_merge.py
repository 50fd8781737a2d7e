"""ConfigStore.save on real files: what the user wrote in config.json is never lost.

A save re-reads the file and applies only the app's change to it; a file that does not
parse is never replaced; a conflict is refused naming the key; links, modes and layout stay.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from llamarunner.config import ConfigError, ConfigStore, ConfigValidationError
from llamarunner.config.store import (
    ConfigConflictError,
    ConfigFileInvalidError,
    ConfigNotSavedError,
    TextStyle,
    render_config,
    text_style,
)
from llamarunner.core.errors import LlamaRunnerError

START = {
    "_comment": "my models",
    "models": {
        "gemma": {"path": "/models/gemma.gguf", "ttl": "5m"},
        "qwen": {"path": "/models/qwen.gguf"},
    },
    "scheduler": {"max_queue": 4},
}
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions and links")


def write(path: Path, data: Any, indent: int | str = 2, end: str = "\n") -> bytes:
    raw = (json.dumps(data, indent=indent) + end).encode()
    path.write_bytes(raw)
    return raw


def loaded(tmp_path: Path, data: Any = START) -> tuple[ConfigStore, Path]:
    path = tmp_path / "config.json"
    write(path, data)
    store = ConfigStore(path)
    store.load()
    return store, path


def app_change(store: ConfigStore, path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """The app's edit of one key, made on the config it last loaded (as the Service does)."""
    assert store.config is not None
    data = store.config.to_dict()
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return data


def on_disk(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ---- a file that does not parse is never replaced ---------------------------------------

BROKEN = [
    ("trailing comma", b'{\n  "models": {\n    "m": {"path": "/m.gguf",}\n  }\n}\n', 3,
     "invalid JSON"),
    ("half written", b'{\n  "models": {\n', 3, "invalid JSON"),
    ("not UTF-8", b'{\n  "_c": "\xff"\n}\n', 2, "not UTF-8"),
    ("schema error", b'{\n  "scheduler": {\n    "max_queue": "many"\n  }\n}\n', 3,
     "scheduler.max_queue"),
    ("not an object", b"[]\n", 1, "must hold a JSON object"),
]


@pytest.mark.parametrize(("raw", "line", "says"), [case[1:] for case in BROKEN],
                         ids=[case[0] for case in BROKEN])
def test_a_file_that_does_not_parse_is_refused_and_left_byte_for_byte(
        tmp_path: Path, raw: bytes, line: int, says: str) -> None:
    store, path = loaded(tmp_path)
    backup_before = store.backup_path.exists()
    path.write_bytes(raw)
    with pytest.raises(ConfigFileInvalidError) as info:
        store.save(app_change(store, ("scheduler", "max_queue"), 9))
    error = info.value
    assert error.line == line
    assert says in str(error)
    assert str(error).startswith(str(path))  # the parse error with its file and line
    assert "Not saved" in str(error) and "Fix the file" in str(error)
    assert path.read_bytes() == raw
    assert store.backup_path.exists() == backup_before
    assert leftovers(tmp_path) == []
    # The store still runs on the last good config.
    assert store.config is not None and store.config.scheduler.max_queue == 4


def test_the_refusal_is_a_config_error_and_a_409_for_api_callers(tmp_path: Path) -> None:
    store, path = loaded(tmp_path)
    path.write_text("{", encoding="utf-8")
    with pytest.raises(ConfigNotSavedError) as info:
        store.save(app_change(store, ("scheduler", "max_queue"), 9))
    assert isinstance(info.value, ConfigError)
    assert isinstance(info.value, LlamaRunnerError)
    assert (info.value.status, info.value.code) == (409, "config_not_saved")
    assert info.value.message == str(info.value)


@posix_only
def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    store, path = loaded(tmp_path)
    path.unlink()
    path.mkdir()  # a folder where the file should be
    with pytest.raises(ConfigFileInvalidError, match="cannot read the config file"):
        store.save(app_change(store, ("scheduler", "max_queue"), 9))
    assert path.is_dir()


def test_once_the_file_is_fixed_the_same_save_goes_through(tmp_path: Path) -> None:
    store, path = loaded(tmp_path)
    data = app_change(store, ("scheduler", "max_queue"), 9)
    path.write_text("{ oops", encoding="utf-8")
    with pytest.raises(ConfigFileInvalidError):
        store.save(data)
    fixed = {**START, "_comment": "fixed by hand"}
    write(path, fixed)
    store.save(data)
    assert on_disk(path) == {**fixed, "scheduler": {"max_queue": 9}}


# ---- hand edits made just before a save stay ---------------------------------------------

def test_a_hand_edit_just_before_an_app_save_survives(tmp_path: Path) -> None:
    store, path = loaded(tmp_path)
    data = app_change(store, ("models", "gemma", "ttl"), "10m")
    # Edited by hand after the last load, before the watcher noticed.
    hand = json.loads(json.dumps(START))
    hand["scheduler"]["max_queue"] = 7
    hand["models"]["mine"] = {"path": "/models/mine.gguf", "args": {"--ctx-size": 2048}}
    hand["_comment"] = "edited by hand"
    hand_raw = write(path, hand)
    config = store.save(data)
    assert on_disk(path) == {
        "_comment": "edited by hand",
        "models": {
            "gemma": {"path": "/models/gemma.gguf", "ttl": "10m"},
            "qwen": {"path": "/models/qwen.gguf"},
            "mine": {"path": "/models/mine.gguf", "args": {"--ctx-size": 2048}},
        },
        "scheduler": {"max_queue": 7},
    }
    # The saved config is what the app then runs: both changes are in it.
    assert config.scheduler.max_queue == 7 and config.models["gemma"].ttl == 600
    assert config.models["mine"].args == {"ctx-size": 2048}
    assert store.config == config
    # The backup is the hand-edited file the save started from.
    assert store.backup_path.read_bytes() == hand_raw


def test_the_files_spelling_stays_where_the_app_changed_nothing(tmp_path: Path) -> None:
    store, path = loaded(tmp_path, {
        "models": {"gemma": {"path": "/g.gguf", "ttl": 300, "args": {"--ctx-size": 512}},
                   "qwen": {"path": "/q.gguf"}},
        "scheduler": {"default_ttl": 600},
    })
    store.save(app_change(store, ("models", "qwen", "ttl"), "1h"))
    assert on_disk(path) == {
        "models": {"gemma": {"path": "/g.gguf", "ttl": 300, "args": {"--ctx-size": 512}},
                   "qwen": {"path": "/q.gguf", "ttl": "1h"}},
        "scheduler": {"default_ttl": 600},
    }


def test_args_change_whole_so_a_flag_is_never_written_twice(tmp_path: Path) -> None:
    store, path = loaded(tmp_path, {"models": {"gemma": {
        "path": "/g.gguf", "args": {"--ctx-size": 512, "_why": "small machine"}}}})
    config = store.save(app_change(store, ("models", "gemma", "args", "ctx-size"), 1024))
    assert on_disk(path)["models"]["gemma"]["args"] == {"ctx-size": 1024, "_why": "small machine"}
    assert config.models["gemma"].args == {"ctx-size": 1024}


def test_comments_and_key_order_stay(tmp_path: Path) -> None:
    start = {"$schema": "./schema.json", "scheduler": {"max_queue": 4, "_q": "why 4"},
             "models": {}, "_end": "last words"}
    store, path = loaded(tmp_path, start)
    store.save(app_change(store, ("scheduler", "max_queue"), 5))
    text = path.read_text(encoding="utf-8")
    assert list(json.loads(text)) == ["$schema", "scheduler", "models", "_end"]
    assert json.loads(text)["scheduler"] == {"max_queue": 5, "_q": "why 4"}


def test_a_save_whose_file_was_deleted_writes_the_app_config(tmp_path: Path) -> None:
    store, path = loaded(tmp_path)
    good = path.read_bytes()
    path.unlink()
    store.save(app_change(store, ("scheduler", "max_queue"), 9))
    assert on_disk(path)["scheduler"]["max_queue"] == 9
    assert store.backup_path.read_bytes() == good


def test_a_merge_that_does_not_validate_is_refused(tmp_path: Path) -> None:
    store, path = loaded(tmp_path)
    data = app_change(store, ("models", "copy"), {"path": "/models/gemma.gguf"})
    hand = json.loads(json.dumps(START))
    hand["models"]["qwen"]["alias"] = ["copy"]  # by hand, the name the app is adding
    raw = write(path, hand)
    with pytest.raises(ConfigValidationError, match="'copy' is already the name of a model"):
        store.save(data)
    assert path.read_bytes() == raw


# ---- conflicts -----------------------------------------------------------------------------

def test_a_key_changed_in_the_file_and_in_the_app_is_refused_by_name(tmp_path: Path) -> None:
    store, path = loaded(tmp_path)
    data = app_change(store, ("models", "gemma", "ttl"), "10m")
    hand = json.loads(json.dumps(START))
    hand["models"]["gemma"]["ttl"] = "1h"
    raw = write(path, hand)
    with pytest.raises(ConfigConflictError) as info:
        store.save(data)
    assert str(info.value) == ("models.gemma.ttl was changed in the file and in the app; "
                               "reload and try again")
    assert info.value.paths == (("models", "gemma", "ttl"),)
    assert path.read_bytes() == raw
    # After a reload the app's base is the file, and the same change goes through.
    store.load()
    store.save(app_change(store, ("models", "gemma", "ttl"), "10m"))
    assert on_disk(path)["models"]["gemma"]["ttl"] == "10m"


def test_the_same_change_in_the_file_and_in_the_app_is_no_conflict(tmp_path: Path) -> None:
    store, path = loaded(tmp_path)
    data = app_change(store, ("models", "gemma", "ttl"), "10m")
    hand = json.loads(json.dumps(START))
    hand["models"]["gemma"]["ttl"] = 600  # the same duration, spelled by hand
    write(path, hand)
    store.save(data)
    assert on_disk(path)["models"]["gemma"]["ttl"] == 600


def test_an_explicit_base_measures_the_change_from_where_the_caller_started(
        tmp_path: Path) -> None:
    store, path = loaded(tmp_path)
    assert store.config is not None
    window_base = store.config.to_dict()  # a window opened now...
    hand = json.loads(json.dumps(START))
    hand["scheduler"]["max_queue"] = 7
    write(path, hand)
    store.load()  # ...the watcher picks up a hand edit meanwhile...
    edits = json.loads(json.dumps(window_base))
    edits["models"]["gemma"]["ttl"] = "1m"  # ...and the window applies its one edit
    store.save(edits, base=window_base)
    assert on_disk(path)["scheduler"]["max_queue"] == 7
    assert on_disk(path)["models"]["gemma"]["ttl"] == "1m"


# ---- links, modes and layout ---------------------------------------------------------------

@posix_only
def test_a_symlinked_config_stays_a_link_and_its_target_is_updated(tmp_path: Path) -> None:
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    real = dotfiles / "llamarunner.json"
    write(real, START)
    real.chmod(0o600)
    path = tmp_path / "config.json"
    path.symlink_to(real)
    store = ConfigStore(path)
    store.load()
    store.save(app_change(store, ("scheduler", "max_queue"), 9))
    assert path.is_symlink() and Path(os.readlink(path)) == real
    assert on_disk(real)["scheduler"]["max_queue"] == 9
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    assert leftovers(tmp_path) == [] and leftovers(dotfiles) == []


@posix_only
@pytest.mark.parametrize("mode", [0o600, 0o640, 0o664])
def test_the_files_mode_is_kept(tmp_path: Path, mode: int) -> None:
    store, path = loaded(tmp_path)
    path.chmod(mode)
    store.save(app_change(store, ("scheduler", "max_queue"), 9))
    assert stat.S_IMODE(path.stat().st_mode) == mode


@posix_only
def test_a_new_config_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    ConfigStore(path).load()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it may hold the API key


@pytest.mark.parametrize(("indent", "end"), [(2, "\n"), (2, ""), (4, "\n"), ("\t", ""),
                                             (2, "\n\n")])
def test_the_layout_and_final_newline_are_kept(tmp_path: Path, indent: int | str,
                                               end: str) -> None:
    path = tmp_path / "config.json"
    write(path, START, indent=indent, end=end)
    store = ConfigStore(path)
    store.load()
    store.save(app_change(store, ("scheduler", "max_queue"), 9))
    expected = {**START, "scheduler": {"max_queue": 9}}
    final = "\n" if end else ""
    assert path.read_text(encoding="utf-8") == json.dumps(expected, indent=indent) + final


def test_windows_line_endings_and_a_byte_order_mark_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(START, indent=2).replace(
        "\n", "\r\n").encode() + b"\r\n")
    store = ConfigStore(path)
    store.load()
    store.save(app_change(store, ("scheduler", "max_queue"), 9))
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf{\r\n")
    assert raw.endswith(b"}\r\n") and b"\n" not in raw.replace(b"\r\n", b"")
    assert json.loads(raw.decode("utf-8-sig"))["scheduler"]["max_queue"] == 9


STYLES = [
    (b'{\n  "a": 1\n}\n', TextStyle()),
    (b'{\n    "a": 1\n}', TextStyle(indent=4, final_newline=False)),
    (b'{\n\t"a": 1\n}\n', TextStyle(indent="\t")),
    (b'{\r\n  "a": 1\r\n}\r\n', TextStyle(newline="\r\n")),
    (b'\xef\xbb\xbf{"a": 1}', TextStyle(final_newline=False, bom=True)),
    (b'{"a": 1}\n', TextStyle()),
    (b"", TextStyle(final_newline=False)),
]


@pytest.mark.parametrize(("raw", "style"), STYLES)
def test_text_style(raw: bytes, style: TextStyle) -> None:
    assert text_style(raw) == style


def test_render_config_round_trips_a_style() -> None:
    raw = b'\xef\xbb\xbf{\r\n\t"a": [\r\n\t\t1\r\n\t]\r\n}'
    assert render_config({"a": [1]}, text_style(raw)) == raw
