"""`llamarunner autostart enable|disable|status`: the entry and the config key move together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llamarunner.cli import main


@pytest.fixture
def xdg_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "xdg-config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home


@pytest.fixture
def frozen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make this process look like the installed (PyInstaller) app; returns its exe."""
    exe = tmp_path / "LlamaRunner Pro" / "llamarunner"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(exe))
    return exe


def run(config: Path, *action: str) -> int:
    return main(["--config", str(config), "autostart", *action])


def test_enable_status_disable(xdg_home: Path, frozen: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.json"
    entry = xdg_home / "autostart" / "llamarunner.desktop"

    assert run(config, "enable") == 0
    out = capsys.readouterr().out
    assert "starts at login" in out and str(entry) in out
    assert f'Exec="{frozen}"' in entry.read_text().splitlines()
    assert json.loads(config.read_text())["desktop"] == {"start_at_login": True}

    assert run(config, "enable") == 0
    assert "already starts at login" in capsys.readouterr().out

    assert run(config, "status") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "start at login: on"
    assert out[1] == f"entry: registered at {entry}: starts {frozen}"
    assert out[2] == f"config: desktop.start_at_login is true in {config}"
    assert out[3] == f"this app: {frozen}"

    assert run(config, "disable") == 0
    assert f"removed {entry}" in capsys.readouterr().out
    assert not entry.exists()
    assert json.loads(config.read_text())["desktop"] == {"start_at_login": False}


def test_status_reports_a_stale_entry_and_a_disagreement(
        xdg_home: Path, frozen: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.json"
    assert run(config, "enable") == 0
    frozen.unlink()
    capsys.readouterr()
    assert run(config, "status") == 0
    out = capsys.readouterr().out
    assert "start at login: off" in out
    assert f"stale entry at {xdg_home / 'autostart' / 'llamarunner.desktop'}" in out
    assert "makes the entry match the config" in out


def test_an_unusable_config_changes_nothing(xdg_home: Path, frozen: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"desktop": {"start_at_login": "yes"}}')
    assert run(config, "enable") == 2
    err = capsys.readouterr().err
    assert "desktop.start_at_login: must be true or false" in err
    assert "nothing was changed" in err
    assert not (xdg_home / "autostart").exists()


def test_a_development_run_refuses_with_the_reason(xdg_home: Path, tmp_path: Path) -> None:
    """The real command in a real interpreter: exit 1, the reason on stderr, nothing written."""
    config = tmp_path / "config.json"
    env = {**os.environ, "XDG_CONFIG_HOME": str(xdg_home)}
    done = subprocess.run(
        [sys.executable, "-m", "llamarunner", "--config", str(config), "autostart", "enable"],
        capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 1, done
    assert done.stdout == ""
    assert "start at login registers the installed app" in done.stderr
    assert "development run" in done.stderr and sys.executable in done.stderr
    assert not (xdg_home / "autostart").exists()
    assert "desktop" not in json.loads(config.read_text())

    done = subprocess.run(
        [sys.executable, "-m", "llamarunner", "--config", str(config), "autostart", "status"],
        capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, done
    assert "start at login: off" in done.stdout and "this app: not installed" in done.stdout
