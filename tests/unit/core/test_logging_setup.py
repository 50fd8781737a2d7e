"""The app's log: text or JSON lines on stderr and in a file rotated by size, changed live."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.support.root_logger import restored_root_logger

from llamarunner.config import LoggingConfig, defaults
from llamarunner.core import logging_setup
from llamarunner.core.logging_setup import (
    LOG_FILE_NAME,
    apply_logging_config,
    configure_logging,
    current_log_format,
)

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR|DEBUG) +\S+: ")


@pytest.fixture(autouse=True)
def restore_root_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """configure_logging replaces the root handlers; give pytest's back afterwards."""
    with restored_root_logger(monkeypatch):
        yield


def file_lines(log_dir: Path, name: str = LOG_FILE_NAME) -> list[str]:
    return (log_dir / name).read_text(encoding="utf-8").splitlines()


def json_lines(log_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in file_lines(log_dir)]


@dataclass(frozen=True)
class Settings:
    format: str = "text"
    max_bytes: int = defaults.DEFAULT_LOG_MAX_BYTES
    backups: int = defaults.DEFAULT_LOG_BACKUPS


def test_defaults_are_the_configs() -> None:
    assert logging_setup.DEFAULT_MAX_BYTES == defaults.DEFAULT_LOG_MAX_BYTES
    assert logging_setup.DEFAULT_BACKUPS == defaults.DEFAULT_LOG_BACKUPS
    assert {logging_setup.TEXT, logging_setup.JSON} == set(defaults.LOG_FORMATS)


def test_json_lines_carry_time_level_logger_message_and_extras(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log_file = configure_logging("INFO", tmp_path, log_format="json")
    assert log_file == tmp_path / LOG_FILE_NAME
    log = logging.getLogger("llamarunner.test")
    log.info("model %s ready on port %d", "tiny", 1234)
    log.warning("slow", extra={"route": "/v1/chat/completions", "status": 200,
                               "duration_ms": 412.5, "model": None})
    log.debug("not at INFO")
    first, second = json_lines(tmp_path)
    assert TIME.match(first["time"]), first["time"]
    assert first == {"time": first["time"], "level": "INFO", "logger": "llamarunner.test",
                     "message": "model tiny ready on port 1234"}
    assert second["level"] == "WARNING" and second["message"] == "slow"
    assert second["route"] == "/v1/chat/completions" and second["status"] == 200
    assert second["duration_ms"] == 412.5 and second["model"] is None
    # stderr gets the same lines.
    err = capsys.readouterr().err.splitlines()
    assert [json.loads(line) for line in err] == [first, second]


def test_json_exceptions_stay_on_one_line(tmp_path: Path) -> None:
    configure_logging("INFO", tmp_path, log_format="json")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("llamarunner.test").exception("request failed")
    (entry,) = json_lines(tmp_path)
    assert entry["level"] == "ERROR" and entry["message"] == "request failed"
    assert entry["exc_info"].startswith("Traceback (most recent call last)")
    assert entry["exc_info"].endswith("ValueError: boom")


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text for you")

    def __repr__(self) -> str:
        raise RuntimeError("none at all")


def test_json_never_fails_on_odd_values(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", tmp_path, log_format="json")
    log = logging.getLogger("llamarunner.test")
    log.info("odd", extra={"path": Path("/m/a.gguf"), "blob": b"\x00\xff", "items": {1, 2},
                           "nested": {(1, 2): "tuple key"}, "obj": Unprintable()})
    log.info("huge", extra={"big": 2**70, "label": "bad \udcff name"})
    log.info("%d tokens", "not a number")  # a wrong %-format in the call itself
    log.info("unprintable %s", Unprintable())
    log.info("nan", extra={"ratio": float("nan")})
    odd, huge, bad_format, unprintable, nan = json_lines(tmp_path)
    assert odd["path"] == "/m/a.gguf" and odd["obj"] == "<unprintable Unprintable>"
    assert huge["big"] == str(2**70) and huge["label"] == "bad \\udcff name"
    assert "%d tokens" in bad_format["message"] and "not a number" in bad_format["message"]
    assert unprintable["message"].startswith("unprintable %s")
    assert nan["ratio"] is None
    assert "Logging error" not in capsys.readouterr().err


def test_text_lines_look_as_before(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", tmp_path)
    logging.getLogger("llamarunner.test").info("hello %s", "there",
                                               extra={"route": "/api/tags"})
    (line,) = file_lines(tmp_path)
    assert TEXT_LINE.match(line) and line.endswith("llamarunner.test: hello there")
    assert "/api/tags" not in line  # extras are for the JSON form
    assert capsys.readouterr().err.splitlines() == [line]


def test_python_warnings_go_to_the_log(tmp_path: Path) -> None:
    import warnings

    configure_logging("INFO", tmp_path, log_format="json")
    warnings.warn("old thing", DeprecationWarning, stacklevel=1)
    (entry,) = json_lines(tmp_path)
    assert entry["logger"] == "py.warnings" and "old thing" in entry["message"]


def test_the_file_rotates_at_max_bytes_keeping_backups(tmp_path: Path) -> None:
    configure_logging("INFO", tmp_path, max_bytes=2000, backups=2)
    log = logging.getLogger("llamarunner.test")
    for number in range(200):
        log.info("line %03d %s", number, "x" * 60)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [LOG_FILE_NAME, f"{LOG_FILE_NAME}.1", f"{LOG_FILE_NAME}.2"]
    assert all((tmp_path / name).stat().st_size <= 2000 for name in names)
    # The newest lines are in the current file, the ones before in .1.
    assert file_lines(tmp_path)[-1].split(": ", 1)[1].startswith("line 199 ")
    previous = int(file_lines(tmp_path)[0].split("line ", 1)[1][:3]) - 1
    assert f"line {previous:03d} " in file_lines(tmp_path, f"{LOG_FILE_NAME}.1")[-1]


def test_no_backups_still_bounds_the_file(tmp_path: Path) -> None:
    configure_logging("INFO", tmp_path, max_bytes=1000, backups=0)
    log = logging.getLogger("llamarunner.test")
    for number in range(100):
        log.info("line %03d %s", number, "x" * 60)
    assert [p.name for p in tmp_path.iterdir()] == [LOG_FILE_NAME]
    assert (tmp_path / LOG_FILE_NAME).stat().st_size <= 1000
    assert "line 099 " in file_lines(tmp_path)[-1]


def test_configuring_again_replaces_the_handlers(tmp_path: Path) -> None:
    configure_logging("INFO", tmp_path)
    configure_logging("DEBUG", tmp_path, log_format="json")
    root = logging.getLogger()
    assert len(root.handlers) == 2 and root.level == logging.DEBUG
    logging.getLogger("llamarunner.test").debug("once")
    assert [e["message"] for e in json_lines(tmp_path)] == ["once"]


def test_apply_switches_the_format_both_ways(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", tmp_path)
    log = logging.getLogger("llamarunner.test")
    log.info("as text")
    assert apply_logging_config(LoggingConfig(format="json")) is True
    assert current_log_format() == "json"
    log.info("as json")
    assert apply_logging_config(LoggingConfig(format="text")) is True
    log.info("text again")
    text, as_json, again = file_lines(tmp_path)
    assert TEXT_LINE.match(text) and TEXT_LINE.match(again)
    assert json.loads(as_json)["message"] == "as json"
    err = capsys.readouterr().err.splitlines()
    assert json.loads(err[1])["message"] == "as json" and TEXT_LINE.match(err[2])


def test_apply_is_idempotent(tmp_path: Path) -> None:
    configure_logging("INFO", tmp_path, log_format="json", max_bytes=100_000, backups=3)
    handlers = list(logging.getLogger().handlers)
    same = Settings(format="json", max_bytes=100_000, backups=3)
    assert apply_logging_config(same) is False
    assert apply_logging_config(same) is False
    assert logging.getLogger().handlers == handlers


def test_apply_changes_the_rotation_of_the_open_file(tmp_path: Path) -> None:
    configure_logging("INFO", tmp_path)
    assert apply_logging_config(Settings(max_bytes=1500, backups=1)) is True
    log = logging.getLogger("llamarunner.test")
    for number in range(100):
        log.info("line %03d %s", number, "x" * 60)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOG_FILE_NAME, f"{LOG_FILE_NAME}.1"]
    assert (tmp_path / LOG_FILE_NAME).stat().st_size <= 1500


def test_a_format_from_the_command_line_outlives_config_changes(tmp_path: Path) -> None:
    configure_logging("INFO", tmp_path, log_format="json", format_fixed=True)
    assert apply_logging_config(Settings(format="text", max_bytes=70_000)) is True
    assert current_log_format() == "json"
    logging.getLogger("llamarunner.test").info("still json")
    assert json_lines(tmp_path)[0]["message"] == "still json"
    file_handler = logging.getLogger().handlers[1]
    assert isinstance(file_handler, logging_setup.SizeRotatingFileHandler)
    assert file_handler.maxBytes == 70_000


def test_apply_before_configure_touches_nothing() -> None:
    root = logging.getLogger()
    handlers = list(root.handlers)
    assert current_log_format() is None
    assert apply_logging_config(LoggingConfig(format="json")) is False
    assert root.handlers == handlers


def test_no_log_folder_means_stderr_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert configure_logging("INFO", None, log_format="json") is None
    assert apply_logging_config(Settings(format="json", max_bytes=70_000)) is False
    logging.getLogger("llamarunner.test").info("stderr only")
    assert json.loads(capsys.readouterr().err)["message"] == "stderr only"
