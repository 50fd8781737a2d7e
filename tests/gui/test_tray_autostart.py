"""The tray's "Start at login" toggle and About box, and the desktop app's reconcile.

A stand-in installed executable and a temporary autostart folder replace the real ones,
so the toggle writes a real .desktop file and a real config file, and nothing of the
user's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import shiboken6
from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication, QLabel, QMessageBox, QWidget

from llamarunner import __version__, paths
from llamarunner.config import ConfigStore
from llamarunner.gui.app import EXIT_OK, DesktopApp
from llamarunner.gui.bridge import ServiceBridge
from llamarunner.gui.tray import TrayIcon
from llamarunner.integration.autostart import Autostart, EntryState, XdgAutostart
from llamarunner.service import Service

if TYPE_CHECKING:
    from tests.gui.conftest import QtDriver, RecordingWindows

Screenshot = Callable[[QWidget, str], Path]


@pytest.fixture
def exe(tmp_path: Path) -> Path:
    """The installed app, as far as these tests are concerned."""
    path = tmp_path / "opt" / "LlamaRunner Pro" / "llamarunner"
    path.parent.mkdir(parents=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def entry(tmp_path: Path) -> XdgAutostart:
    return XdgAutostart(tmp_path / "xdg" / "autostart")


@pytest.fixture
def make_tray(qt_driver: QtDriver, recording_windows: RecordingWindows
              ) -> Iterator[Callable[[Service, Autostart], TrayIcon]]:
    made: list[tuple[TrayIcon, ServiceBridge]] = []

    def make(service: Service, autostart: Autostart) -> TrayIcon:
        bridge = ServiceBridge(service, loop=qt_driver.loop, capture_logs=False)
        tray = TrayIcon(service, bridge, recording_windows, autostart=autostart)
        made.append((tray, bridge))
        return tray

    yield make
    for tray, bridge in made:
        tray.close_about()
        bridge.close()
        tray.deleteLater()


def saved_setting(service: Service) -> object:
    data = json.loads(service.store.path.read_text())
    return data.get("desktop", {}).get("start_at_login")


def test_the_toggle_writes_the_entry_and_the_config_key_together(
        qt_driver: QtDriver, gui_service: Any, make_tray: Any, entry: XdgAutostart,
        exe: Path) -> None:
    service = gui_service()
    tray = make_tray(service, Autostart(entry, target=exe))
    tray.menu.aboutToShow.emit()
    action = tray.autostart_action
    assert action.isVisible() and action.isEnabled() and action.isCheckable()
    assert not action.isChecked()
    assert "not registered" in action.toolTip()

    action.trigger()  # the user ticks it
    assert action.isChecked()
    assert entry.read().target == str(exe)
    assert saved_setting(service) is True
    qt_driver.until(lambda: service.config.desktop.start_at_login, message="the new config")
    assert f"starts {exe}" in action.toolTip()

    action.trigger()  # and unticks it
    assert not action.isChecked()
    assert not entry.path.exists()
    assert saved_setting(service) is False
    qt_driver.until(lambda: not service.config.desktop.start_at_login)


def test_the_check_mark_follows_the_disk_when_the_menu_opens(
        qt_driver: QtDriver, gui_service: Any, make_tray: Any, entry: XdgAutostart,
        exe: Path) -> None:
    tray = make_tray(gui_service(), Autostart(entry, target=exe))
    toggled: list[bool] = []
    tray.autostart_action.toggled.connect(toggled.append)
    entry.write(exe)  # registered behind the app's back (the CLI, another copy)
    tray.menu.aboutToShow.emit()
    assert tray.autostart_action.isChecked()
    exe.unlink()  # a stale entry does not start anything: not checked
    tray.menu.aboutToShow.emit()
    assert not tray.autostart_action.isChecked()
    assert "no longer exists" in tray.autostart_action.toolTip()
    assert toggled == []  # syncing the mark is not the user toggling it


def test_a_development_run_shows_the_toggle_disabled_with_the_reason(
        qt_driver: QtDriver, gui_service: Any, make_tray: Any, entry: XdgAutostart) -> None:
    tray = make_tray(gui_service(), Autostart(entry))
    tray.menu.aboutToShow.emit()
    action = tray.autostart_action
    assert action.isVisible() and not action.isEnabled()
    assert action.toolTip().startswith("Not available: start at login registers the "
                                       "installed app")
    assert tray.menu.toolTipsVisible()


def test_a_failure_is_notified_and_the_mark_goes_back(
        qt_driver: QtDriver, gui_service: Any, make_tray: Any, tmp_path: Path,
        exe: Path) -> None:
    service = gui_service()
    blocked = tmp_path / "xdg" / "autostart"
    blocked.parent.mkdir()
    blocked.write_text("a file where the folder should be")
    tray = make_tray(service, Autostart(XdgAutostart(blocked), target=exe))
    notes: list[tuple[str, str]] = []
    tray.notified.connect(lambda title, message: notes.append((title, message)))
    before = service.store.path.read_bytes()

    tray.autostart_action.trigger()
    assert not tray.autostart_action.isChecked()
    [(title, message)] = notes
    assert title == "LlamaRunner Pro"
    assert message.startswith("cannot turn start at login on: could not register")
    assert service.store.path.read_bytes() == before  # the key was not saved


def test_about_shows_versions_and_where_the_files_are(
        qt_driver: QtDriver, gui_service: Any, make_tray: Any, entry: XdgAutostart,
        screenshot: Screenshot) -> None:
    service = gui_service()
    tray = make_tray(service, Autostart(entry))
    tray.menu.aboutToShow.emit()
    assert tray.about_action in tray.menu.actions()
    # trigger() returns with the box up: it runs no nested modal loop of its own.
    tray.about_action.trigger()
    boxes = [w for w in QApplication.topLevelWidgets()
             if isinstance(w, QMessageBox) and w.isVisible()]
    assert len(boxes) == 1
    box = boxes[0]
    assert box.windowTitle() == "About LlamaRunner Pro"
    text = box.text()
    assert f"llamarunner {__version__}" in text
    assert "llama-server" in text
    assert f"Config file: {service.store.path}" in text
    assert f"Log file: {paths.log_dir() / 'llamarunner.log'}" in text
    screenshot(box, "about")
    tray.about_action.trigger()  # a second time brings the same box back
    assert [w for w in QApplication.topLevelWidgets()
            if isinstance(w, QMessageBox) and w.isVisible()] == [box]


# ---- the desktop app keeps the entry in line with the config ------------------------------


def library_stub() -> QWidget:
    return QLabel("library stand-in")


def start_app(qt_driver: QtDriver, config: Path, autostart: Autostart,
              settings: QSettings) -> tuple[DesktopApp, Any]:
    app = DesktopApp(ConfigStore(config), window_factories={"library": library_stub},
                     settings=settings, tray_wait_s=60, handle_signals=False,
                     autostart=autostart)
    run = qt_driver.loop.create_task(app.run())
    qt_driver.until(lambda: app.tray is not None, message="the tray")
    return app, run


def test_the_app_reconciles_at_start_and_after_a_reload(
        qt_driver: QtDriver, write_config: Any, entry: XdgAutostart, exe: Path,
        gui_settings: QSettings) -> None:
    config = write_config({}, desktop={"start_at_login": True})
    app, run = start_app(qt_driver, config, Autostart(entry, target=exe), gui_settings)
    assert entry.read().target == str(exe)  # registered at start

    data = json.loads(config.read_text())
    data["desktop"]["start_at_login"] = False
    config.write_text(json.dumps(data))  # an edit on disk: the watcher reloads it
    qt_driver.until(lambda: not entry.path.exists(), timeout=15, message="the entry removed")

    data["desktop"]["start_at_login"] = True
    config.write_text(json.dumps(data, indent=1))
    qt_driver.until(lambda: entry.path.exists(), timeout=15, message="the entry back")
    app.request_quit()
    assert qt_driver.run(run) == EXIT_OK
    # It quit while still waiting 60 s for a tray: that poll must not outlive the app
    # (firing later, it would open the fallback window of an app that is gone).
    tray = app.tray
    assert tray is not None
    if shiboken6.isValid(tray):
        assert not [t for t in tray.findChildren(QTimer) if t.isActive()]


def test_a_development_run_leaves_the_entry_alone(
        qt_driver: QtDriver, write_config: Any, entry: XdgAutostart, exe: Path,
        gui_settings: QSettings, caplog: pytest.LogCaptureFixture) -> None:
    entry.write(exe)  # the installed app registered itself; the config says off
    before = entry.path.read_bytes()
    config = write_config({}, desktop={"start_at_login": False})
    caplog.set_level("INFO")
    app, run = start_app(qt_driver, config, Autostart(entry), gui_settings)
    assert entry.path.read_bytes() == before
    assert Autostart(entry).status().state is EntryState.ACTIVE
    assert any("leaving the login entry alone" in r.getMessage() for r in caplog.records)
    app.request_quit()
    assert qt_driver.run(run) == EXIT_OK
