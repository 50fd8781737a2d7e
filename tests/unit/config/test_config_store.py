"""ConfigStore: first start, loading, atomic saves with backup, and failure behaviour."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from llamarunner.config import (
    Config,
    ConfigReadError,
    ConfigStore,
    ConfigSyntaxError,
    ConfigValidationError,
    default_config_path,
)
from llamarunner.config import store as store_module
from llamarunner.config.store import ConfigFileInvalidError

GOOD = {"models": {"m": {"path": "/m.gguf", "args": {"ctx-size": 512}}}}


def write(path: Path, data: Any) -> bytes:
    raw = (json.dumps(data, indent=2) + "\n").encode()
    path.write_bytes(raw)
    return raw


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_default_config_path() -> None:
    path = default_config_path()
    assert path.name == "config.json"
    assert path.parent.name == "llamarunner"


def test_first_start_creates_the_default_file(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "config.json"
    store = ConfigStore(path)
    config = store.load()
    assert config == Config.default()
    text = path.read_text(encoding="utf-8")
    assert json.loads(text) == Config.default().to_dict()
    assert text.startswith('{\n  "proxies": {\n    "ollama": {\n      "enabled": true,')
    assert text.endswith("}\n")
    assert store.last_good_text == text
    assert store.config == config
    assert not store.backup_path.exists()
    assert leftovers(path.parent) == []
    # Loading again reads what was written.
    assert ConfigStore(path).load() == config


def test_first_start_in_an_unwritable_folder_runs_with_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(path: Path, data: bytes, **options: Any) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(store_module, "atomic_write", refuse)
    path = tmp_path / "config.json"
    with caplog.at_level("WARNING"):
        config = ConfigStore(path).load()
    assert config == Config.default()
    assert not path.exists()
    assert "cannot create the config file" in caplog.text
    assert "Permission denied" in caplog.text


def test_load_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    write(path, GOOD)
    config = ConfigStore(path).load()
    assert config.models["m"].args == {"ctx-size": 512}


def test_load_accepts_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode())
    assert "m" in ConfigStore(path).load().models


def test_syntax_error_has_file_line_column_and_leaves_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    raw = b'{\n  "models": {\n    "m": {"path": "/m.gguf",}\n  }\n}\n'
    path.write_bytes(raw)
    with pytest.raises(ConfigSyntaxError) as info:
        ConfigStore(path).load()
    error = info.value
    assert (error.file, error.line, error.column) == (str(path), 3, 29)
    assert "property name" in error.reason
    assert str(error) == f"{path}:3:29: invalid JSON: {error.reason}"
    assert path.read_bytes() == raw
    assert not (tmp_path / "config.json.bak").exists()


def test_empty_file_is_a_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(b"")
    with pytest.raises(ConfigSyntaxError) as info:
        ConfigStore(path).load()
    assert (info.value.line, info.value.column) == (1, 1)
    assert path.read_bytes() == b""


def test_non_utf8_file_is_a_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(b'{\n  "a": "\xff"\n}')
    with pytest.raises(ConfigSyntaxError) as info:
        ConfigStore(path).load()
    assert (info.value.line, info.value.column) == (2, 9)
    assert "UTF-8" in str(info.value)


def test_validation_error_names_the_file_and_lines(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    raw = write(path, {"models": {"gemma": {"path": "/g", "args": {"port": 1}}}})
    with pytest.raises(ConfigValidationError) as info:
        ConfigStore(path).load()
    assert str(info.value) == f"{path}:6: models.gemma.args.port: set by the runner, remove it"
    assert path.read_bytes() == raw


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_unreadable_file_is_a_read_error(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.mkdir()  # a folder where the file should be: unreadable as a file for everyone
    with pytest.raises(ConfigReadError) as info:
        ConfigStore(path).load()
    assert str(path) in str(info.value)


def test_legacy_file_is_converted_on_load_but_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    legacy = {
        "llama-runtimes": {"default": {"runtime": "/opt/llama-server", "supports_tools": True}},
        "concurrentRunners": 2,
        "models": {
            "Qwen": {
                "model_id": "qwen-id",
                "model_path": "/q.gguf",
                "llama_cpp_runtime": "default",
                "parameters": {"ctx_size": 1024, "port": 9999},
            }
        },
    }
    raw = write(path, legacy)
    store = ConfigStore(path)
    config = store.load()
    assert path.read_bytes() == raw
    assert config.scheduler.max_loaded_models == 2
    assert config.runtimes["default"].path == "/opt/llama-server"
    assert config.models["Qwen"].args == {"ctx-size": 1024}
    assert config.resolve_model("qwen-id") is config.models["Qwen"]
    # The next save writes the new format, with the unmatched settings kept.
    store.save(config.to_dict())
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["_legacy"]["models"]["Qwen"]["parameters"] == {"port": 9999}
    assert saved["_legacy"]["llama-runtimes"]["default"] == {"supports_tools": True}
    assert store.backup_path.read_bytes() == raw
    assert ConfigStore(path).load() == config


def test_legacy_problems_point_at_the_old_files_lines(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    text = (
        "{\n"
        '  "concurrentRunners": 1,\n'
        '  "models": {\n'
        '    "m": {\n'
        '      "model_path": "/m.gguf",\n'
        '      "parameters": {\n'
        '        "ctx size": 1\n'
        "      }\n"
        "    }\n"
        "  }\n"
        "}\n"
    )
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigValidationError) as info:
        ConfigStore(path).load()
    (problem,) = info.value.problems
    assert problem.path == 'models.m.args."ctx size"'
    assert problem.line == 7


def test_save_writes_atomically_and_keeps_a_backup(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    store = ConfigStore(path)
    first = store.load()
    first_raw = path.read_bytes()
    config = store.save(GOOD)
    assert config.models["m"].path == "/m.gguf"
    assert store.config == config
    assert json.loads(path.read_text(encoding="utf-8")) == GOOD
    assert path.read_text(encoding="utf-8") == json.dumps(GOOD, indent=2) + "\n"
    assert store.backup_path == tmp_path / "config.json.bak"
    assert store.backup_path.read_bytes() == first_raw
    assert ConfigStore(store.backup_path).load() == first
    assert leftovers(tmp_path) == []
    # A second save backs up the first save.
    second = {"models": {}, "_comment": "second"}
    store.save(second)
    assert json.loads(store.backup_path.read_text(encoding="utf-8")) == GOOD
    assert json.loads(path.read_text(encoding="utf-8")) == second


def test_save_uses_fsync_and_replace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.json"
    store = ConfigStore(path)
    store.load()
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append("fsync")
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        calls.append(f"replace->{Path(dst).name}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store.save(GOOD)
    # backup: fsync file, replace, fsync dir; then the same for the config itself.
    assert calls.index("replace->config.json.bak") < calls.index("replace->config.json")
    first_replace = calls.index("replace->config.json.bak")
    assert calls[first_replace - 1] == "fsync"
    main_replace = calls.index("replace->config.json")
    assert calls[main_replace - 1] == "fsync"
    if os.name != "nt":
        assert calls[main_replace + 1 :] == ["fsync"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_save_keeps_the_files_mode(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    write(path, {})
    path.chmod(0o640)
    ConfigStore(path).save(GOOD)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_invalid_save_raises_and_leaves_the_file_byte_identical(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    store = ConfigStore(path)
    store.load()
    store.save(GOOD)
    raw = path.read_bytes()
    backup = store.backup_path.read_bytes()
    bad = {"models": {"m": {"path": "/m.gguf", "args": {"--port": 8080}}}, "scheduler": []}
    with pytest.raises(ConfigValidationError) as info:
        store.save(bad)
    assert [p.path for p in info.value.problems] == ["models.m.args.--port", "scheduler"]
    # Line numbers refer to the text that would have been written.
    assert [p.line for p in info.value.problems] == [6, 10]
    assert path.read_bytes() == raw
    assert store.backup_path.read_bytes() == backup
    assert store.config is not None and store.config.models["m"].args == {"ctx-size": 512}
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("bad", [{"x": float("inf")}, {"x": object()}])
def test_unwritable_data_is_refused(tmp_path: Path, bad: dict[str, Any]) -> None:
    path = tmp_path / "config.json"
    store = ConfigStore(path)
    store.load()
    raw = path.read_bytes()
    with pytest.raises(ConfigValidationError, match="cannot be written as JSON"):
        store.save(bad)
    assert path.read_bytes() == raw


def test_crash_during_save_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.json"
    store = ConfigStore(path)
    store.load()
    store.save(GOOD)
    raw = path.read_bytes()

    def crash(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="No space left"):
        store.save({"models": {}})
    assert path.read_bytes() == raw
    assert leftovers(tmp_path) == []
    assert store.config is not None and "m" in store.config.models


def test_crash_replacing_the_config_after_the_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.json"
    store = ConfigStore(path)
    store.load()
    store.save(GOOD)
    raw = path.read_bytes()
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        if Path(dst).name == "config.json":
            raise KeyboardInterrupt  # even a non-Exception interruption cleans up
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        store.save({"models": {}})
    assert path.read_bytes() == raw
    assert store.backup_path.read_bytes() == raw
    assert leftovers(tmp_path) == []


def test_crash_while_writing_the_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.json"
    store = ConfigStore(path)
    store.load()
    raw = path.read_bytes()

    def fail(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="Input/output"):
        store.save(GOOD)
    assert path.read_bytes() == raw
    assert leftovers(tmp_path) == []


def test_broken_hand_edit_is_neither_replaced_nor_backed_up(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    store = ConfigStore(path)
    store.load()
    store.save(GOOD)
    backup = store.backup_path.read_bytes()
    path.write_text("{ broken", encoding="utf-8")
    with pytest.raises(ConfigFileInvalidError):
        store.save({"models": {}})
    assert path.read_bytes() == b"{ broken"
    assert store.backup_path.read_bytes() == backup


def test_valid_hand_edit_is_what_gets_backed_up(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    store = ConfigStore(path)
    store.load()
    edited = write(path, {"_comment": "edited by hand"})
    store.save(GOOD)
    assert store.backup_path.read_bytes() == edited


def test_saving_identical_content_does_not_touch_files(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    store = ConfigStore(path)
    store.load()
    store.save(GOOD)
    backup = store.backup_path.read_bytes()
    mtime = path.stat().st_mtime_ns
    store.save(GOOD)
    assert store.backup_path.read_bytes() == backup
    assert path.stat().st_mtime_ns == mtime


def test_save_without_load_creates_the_file(tmp_path: Path) -> None:
    path = tmp_path / "new" / "config.json"
    ConfigStore(path).save(GOOD)
    assert json.loads(path.read_text(encoding="utf-8")) == GOOD
    assert not (tmp_path / "new" / "config.json.bak").exists()
