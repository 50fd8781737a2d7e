"""The start-at-login facade: which app it registers, refusals, reconcile, and the config key."""

from __future__ import annotations

import json
import logging
import plistlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from llamarunner.config import ConfigStore, ConfigValidationError
from llamarunner.integration.autostart import (
    Autostart,
    AutostartResult,
    EntryState,
    LaunchAgent,
    RunKey,
    XdgAutostart,
    bundle_executable,
    change_start_at_login,
    entry_for_platform,
    find_installed_app,
    set_start_at_login,
)


@pytest.fixture
def xdg(tmp_path: Path) -> XdgAutostart:
    return XdgAutostart(tmp_path / "autostart")


@pytest.fixture
def exe(tmp_path: Path) -> Path:
    path = tmp_path / "opt" / "llamarunner"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\n")
    return path


# ---- which app is registered --------------------------------------------------------------


def test_a_development_run_is_not_an_installed_app() -> None:
    app = find_installed_app(frozen=False, executable="/home/dev/.venv/bin/python",
                             platform="linux", environ={})
    assert app.executable is None
    assert "registers the installed app" in app.reason
    assert "development run" in app.reason and "/home/dev/.venv/bin/python" in app.reason


def test_this_test_run_is_a_development_run() -> None:
    assert not Autostart(XdgAutostart(Path("/nonexistent"))).installed


@pytest.mark.parametrize(("executable", "platform", "environ", "expected"), [
    ("/opt/llamarunner/llamarunner", "linux", {}, "/opt/llamarunner/llamarunner"),
    ("/tmp/.mount_abc/usr/bin/llamarunner", "linux",
     {"APPIMAGE": "/home/u/Apps/LlamaRunner.AppImage"}, "/home/u/Apps/LlamaRunner.AppImage"),
    ("/Applications/LlamaRunner Pro.app/Contents/MacOS/llamarunner", "darwin", {},
     "/Applications/LlamaRunner Pro.app/Contents/MacOS/llamarunner"),
    ("/Applications/LlamaRunner Pro.app/Contents/Frameworks/llamarunner", "darwin", {},
     "/Applications/LlamaRunner Pro.app/Contents/MacOS/llamarunner"),
    ("/usr/local/bin/llamarunner", "darwin", {}, "/usr/local/bin/llamarunner"),
])
def test_a_frozen_build_registers_its_installed_executable(
        executable: str, platform: str, environ: dict[str, str], expected: str) -> None:
    app = find_installed_app(frozen=True, executable=executable, platform=platform,
                             environ=environ)
    assert app.executable == Path(expected)


def test_the_bundle_executable_comes_from_info_plist(tmp_path: Path) -> None:
    contents = tmp_path / "LlamaRunner Pro.app" / "Contents"
    (contents / "Resources").mkdir(parents=True)
    (contents / "Info.plist").write_bytes(plistlib.dumps({"CFBundleExecutable": "main"}))
    assert bundle_executable(contents / "Resources" / "worker") == contents / "MacOS" / "main"


def test_a_translocated_app_is_refused_with_what_to_do() -> None:
    app = find_installed_app(
        frozen=True, platform="darwin", environ={},
        executable="/private/var/folders/x/T/AppTranslocation/1234/d/LlamaRunner Pro.app"
                   "/Contents/MacOS/llamarunner")
    assert app.executable is None and "Applications folder" in app.reason


def test_each_os_gets_its_own_class() -> None:
    assert isinstance(entry_for_platform("win32"), RunKey)
    assert isinstance(entry_for_platform("darwin"), LaunchAgent)
    assert isinstance(entry_for_platform("linux"), XdgAutostart)
    assert isinstance(entry_for_platform("freebsd14"), XdgAutostart)


# ---- refusals and reconcile ---------------------------------------------------------------


def test_a_development_run_refuses_enable_but_reports_and_removes(
        xdg: XdgAutostart, exe: Path) -> None:
    Autostart(xdg, target=exe).enable()  # the installed app registered itself earlier
    development = Autostart(xdg)
    outcome = development.enable()
    assert outcome.result is AutostartResult.NOT_INSTALLED and not outcome.ok
    assert "development run" in outcome.message
    status = development.status()
    assert status.active and status.target == str(exe)  # status still reads the disk
    assert development.disable().result is AutostartResult.DISABLED


def test_reconcile_makes_the_entry_match_the_setting(xdg: XdgAutostart, exe: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    autostart = Autostart(xdg, target=exe)
    caplog.set_level(logging.INFO)
    assert autostart.reconcile(True).result is AutostartResult.ENABLED
    assert xdg.path.exists()
    assert autostart.reconcile(True).result is AutostartResult.ALREADY_ENABLED
    assert autostart.reconcile(False).result is AutostartResult.DISABLED
    assert not xdg.path.exists()
    assert autostart.reconcile(False).result is AutostartResult.ALREADY_DISABLED
    changes = [r.getMessage() for r in caplog.records if "start at login" in r.getMessage()]
    assert len(changes) == 2  # only the two changes are logged


def test_reconcile_in_a_development_run_touches_nothing_and_says_so_once(
        xdg: XdgAutostart, exe: Path, caplog: pytest.LogCaptureFixture) -> None:
    Autostart(xdg, target=exe).enable()
    before = xdg.path.read_bytes()
    development = Autostart(xdg)
    caplog.set_level(logging.INFO)
    for wanted in (False, True, False):
        assert development.reconcile(wanted).result is AutostartResult.NOT_INSTALLED
    assert xdg.path.read_bytes() == before
    said = [r for r in caplog.records if "leaving the login entry alone" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.INFO


def test_reconcile_off_leaves_another_copys_entry_alone(
        xdg: XdgAutostart, exe: Path, tmp_path: Path) -> None:
    Autostart(xdg, target=exe).enable()
    before = xdg.path.read_bytes()
    other = tmp_path / "dist" / "llamarunner"  # a test build of the same app
    other.parent.mkdir()
    other.write_text("#!/bin/sh\n")
    outcome = Autostart(xdg, target=other).reconcile(False)
    assert outcome.result is AutostartResult.ALREADY_DISABLED
    assert "another copy" in outcome.message
    assert xdg.path.read_bytes() == before
    # Asked for explicitly (CLI, tray), disabling still removes it.
    assert Autostart(xdg, target=other).disable().result is AutostartResult.DISABLED


def test_enable_that_reads_back_wrong_fails(xdg: XdgAutostart, tmp_path: Path) -> None:
    # An executable that does not exist cannot start at login: the read-back says so.
    outcome = Autostart(xdg, target=tmp_path / "missing").enable()
    assert outcome.result is AutostartResult.FAILED and "no longer exists" in outcome.message


def test_result_properties() -> None:
    assert {r for r in AutostartResult if r.ok} == {
        AutostartResult.ENABLED, AutostartResult.ALREADY_ENABLED,
        AutostartResult.DISABLED, AutostartResult.ALREADY_DISABLED}
    assert {r for r in AutostartResult if r.changed} == {
        AutostartResult.ENABLED, AutostartResult.DISABLED}


# ---- the config key -------------------------------------------------------------------------


def test_set_start_at_login_keeps_the_rest_and_comments() -> None:
    data: dict[str, object] = {"desktop": {"_why": "kept"}, "models": {}}
    set_start_at_login(data, True)
    assert data == {"desktop": {"_why": "kept", "start_at_login": True}, "models": {}}
    data = {"desktop": "broken"}
    set_start_at_login(data, False)
    assert data == {"desktop": {"start_at_login": False}}


def saver(store: ConfigStore) -> Callable[[bool], None]:
    def save(enabled: bool) -> None:
        data = store.load().to_dict()
        set_start_at_login(data, enabled)
        store.save(data)
    return save


def test_change_turns_both_on_and_off(xdg: XdgAutostart, exe: Path, tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "config.json")
    autostart = Autostart(xdg, target=exe)
    assert change_start_at_login(autostart, True, saver(store)).result is \
        AutostartResult.ENABLED
    assert autostart.enabled() and store.load().desktop.start_at_login
    assert change_start_at_login(autostart, False, saver(store)).result is \
        AutostartResult.DISABLED
    assert not autostart.enabled() and not store.load().desktop.start_at_login


def test_a_refused_change_saves_nothing(xdg: XdgAutostart, tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "config.json")
    store.load()
    before = store.path.read_bytes()
    outcome = change_start_at_login(Autostart(xdg), True, saver(store))
    assert outcome.result is AutostartResult.NOT_INSTALLED
    assert store.path.read_bytes() == before


def test_a_failed_save_puts_the_entry_back(xdg: XdgAutostart, exe: Path) -> None:
    autostart = Autostart(xdg, target=exe)

    def refuse(_enabled: bool) -> None:
        raise ConfigValidationError("config.json", [])

    outcome = change_start_at_login(autostart, True, refuse)
    assert outcome.result is AutostartResult.FAILED
    assert "could not save desktop.start_at_login" in outcome.message
    assert "put back" in outcome.message
    assert autostart.status().state is EntryState.ABSENT

    def disk_full(_enabled: bool) -> None:
        raise OSError(28, "No space left on device")

    autostart.enable()
    outcome = change_start_at_login(autostart, False, disk_full)
    assert outcome.result is AutostartResult.FAILED and "No space left" in outcome.message
    assert autostart.status().active


def test_the_saved_file_holds_the_key(xdg: XdgAutostart, exe: Path, tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "config.json")
    change_start_at_login(Autostart(xdg, target=exe), True, saver(store))
    assert json.loads(store.path.read_text())["desktop"] == {"start_at_login": True}


def test_headless_never_loads_start_at_login() -> None:
    """Only the desktop app reconciles the entry: servers and containers never touch it."""
    code = ("import sys, llamarunner.cli, llamarunner.headless, llamarunner.service; "
            "sys.exit('llamarunner.integration.autostart' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60, check=False).returncode == 0
