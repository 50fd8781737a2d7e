"""The tray against a real Service (real llama-server, tiny model), and the app without a tray.

These tests drive one qasync loop (see conftest): the menu's actions start real runners,
and the icon, check marks and notifications follow the Service's events.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

import psutil
import pytest
from PySide6.QtCore import QPoint, QSettings
from PySide6.QtGui import QAction, QIcon, QImage
from PySide6.QtWidgets import QApplication, QLabel, QMessageBox, QSystemTrayIcon, QWidget

from llamarunner.config import ConfigStore
from llamarunner.gui import window_manager
from llamarunner.gui.app import EXIT_CONFIG, EXIT_OK, DesktopApp
from llamarunner.gui.bridge import ServiceBridge
from llamarunner.gui.icons import IconState, state_icon
from llamarunner.gui.tray import TrayIcon, compute_state
from llamarunner.gui.window_manager import WindowManager
from llamarunner.integration.single_instance import SingleInstance
from llamarunner.service import Service

if TYPE_CHECKING:
    from tests.gui.conftest import QtDriver, RecordingWindows

Screenshot = Callable[[QWidget, str], Path]


@pytest.mark.parametrize(("states", "listener_error", "failure", "expected"), [
    ([], False, False, IconState.IDLE),
    (["stopped", "stopped"], False, False, IconState.IDLE),
    (["starting"], False, False, IconState.LOADING),
    (["ready", "starting"], False, False, IconState.LOADING),
    (["ready"], False, False, IconState.SERVING),
    (["ready", "stopping"], False, False, IconState.SERVING),
    (["failed"], False, True, IconState.ERROR),
    (["ready", "failed"], False, True, IconState.ERROR),  # a crash is not hidden by others
    (["starting", "failed"], False, True, IconState.LOADING),  # a retry is under way
    (["ready"], True, False, IconState.ERROR),  # no client can reach a dead listener
    (["starting"], True, False, IconState.ERROR),
])
def test_icon_state_priorities(states: list[str], listener_error: bool, failure: bool,
                               expected: IconState) -> None:
    assert compute_state(states, listener_error=listener_error,
                         failure_pending=failure) is expected


def image(icon: QIcon) -> QImage:
    return icon.pixmap(64, 64).toImage()


def open_menu(tray: TrayIcon) -> list[QAction]:
    """What Qt does when the user opens the menu; returns the Models entries."""
    tray.menu.aboutToShow.emit()
    return [action for action in tray.models_menu.actions() if action.data()]


@pytest.fixture
def make_tray(qt_driver: QtDriver, recording_windows: RecordingWindows) -> Any:
    made: list[tuple[TrayIcon, ServiceBridge]] = []

    def make(service: Service) -> TrayIcon:
        bridge = ServiceBridge(service, loop=qt_driver.loop, capture_logs=False)
        tray = TrayIcon(service, bridge, recording_windows)
        made.append((tray, bridge))
        return tray

    yield make
    for tray, bridge in made:
        bridge.close()
        tray.hide()
        tray.deleteLater()


def test_menu_has_every_entry_and_routes_them(qt_driver: QtDriver, gui_service: Any,
                                               make_tray: Any,
                                               recording_windows: RecordingWindows) -> None:
    tray = make_tray(gui_service())
    open_menu(tray)
    entries = [(a.text(), a.isEnabled(), a.isVisible()) for a in tray.menu.actions()]
    assert entries == [
        ("No model loaded", False, True),
        ("Models", True, True),
        ("", True, True),
        ("Model library…", True, True),
        ("Settings…", True, True),
        ("Logs…", True, True),
        ("Meters…", True, True),
        ("Check clients…", True, True),
        ("Start at login", False, True),  # a development run has no installed app
        ("", True, True),
        ("About LlamaRunner Pro", True, True),
        ("Quit", True, True),
    ]
    assert tray.autostart_action.isCheckable()
    for action in tray.menu.actions()[3:8]:
        action.trigger()
    tray.activated.emit(QSystemTrayIcon.ActivationReason.Trigger)  # left click
    tray.activated.emit(QSystemTrayIcon.ActivationReason.Context)  # right click: menu only
    assert recording_windows.shown == ["library", "settings", "logs", "meters", "doctor",
                                       "library"]
    quits: list[bool] = []
    tray.quit_requested.connect(lambda: quits.append(True))
    tray.menu.actions()[-1].trigger()
    assert quits == [True]


def test_loading_from_the_menu_checks_the_model_and_turns_the_icon_green(
        qt_driver: QtDriver, gui_service: Any, make_tray: Any,
        screenshot: Screenshot) -> None:
    service = gui_service()
    tray = make_tray(service)
    seen: list[IconState] = []
    tray.notified.connect(lambda *args: pytest.fail(f"unexpected notification {args}"))
    # Connected after the tray's own slot, so it sees the state the tray just computed.
    tray._bridge.runner_state_changed.connect(lambda *_: seen.append(tray.state))

    [tiny] = open_menu(tray)
    assert (tiny.text(), tiny.isCheckable(), tiny.isChecked()) == ("tiny", True, False)
    assert tray.state is IconState.IDLE
    assert image(tray.icon()) == image(state_icon(IconState.IDLE))

    tiny.trigger()
    qt_driver.until(lambda: tray.state is IconState.SERVING, message="tiny to be served")
    assert seen == [IconState.LOADING, IconState.SERVING]
    assert image(tray.icon()) == image(state_icon(IconState.SERVING))
    [tiny] = open_menu(tray)
    assert tiny.isChecked()
    assert tray.menu.actions()[0].text() == "Serving tiny"

    tray.menu.popup(QPoint(300, 40))
    tray.models_menu.popup(QPoint(300 + tray.menu.sizeHint().width(), 80))
    qt_driver.sleep(0.2)
    screenshot(tray.menu, "tray-menu")
    screenshot(tray.models_menu, "tray-models-menu")
    tray.models_menu.hide()
    tray.menu.hide()

    [tiny] = open_menu(tray)  # popping up rebuilt the menu: the old actions are gone
    tiny.trigger()  # a loaded model's entry unloads it
    qt_driver.until(lambda: service.manager.snapshot()[0].state == "stopped",
                    message="tiny to be unloaded")
    assert tray.state is IconState.IDLE
    [tiny] = open_menu(tray)
    assert not tiny.isChecked()


def test_tooltip_names_served_models_and_both_addresses(qt_driver: QtDriver,
                                                        gui_service: Any,
                                                        make_tray: Any) -> None:
    service = gui_service()
    tray = make_tray(service)
    addresses = service.listeners.addresses()
    assert tray.toolTip().splitlines() == [
        "LlamaRunner Pro — No model loaded",
        f"Ollama API: {addresses['ollama']}",
        f"LM Studio / OpenAI API: {addresses['lmstudio']}",
    ]
    qt_driver.run(service.manager.load("tiny"))  # as an API request would
    assert tray.toolTip().splitlines()[0] == "LlamaRunner Pro — Serving tiny"
    assert tray.state is IconState.SERVING


def test_a_model_that_fails_to_load_is_notified_with_the_reason(
        qt_driver: QtDriver, gui_service: Any, make_tray: Any, tmp_path: Path,
        tiny_model: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x00" * 64)  # a header llama-server rejects
    service = gui_service({"broken": {"path": str(broken)},
                           "tiny": {"path": str(tiny_model), "args": {"ctx-size": 256}}})
    tray = make_tray(service)
    notes: list[tuple[str, str]] = []
    tray.notified.connect(lambda title, message: notes.append((title, message)))

    broken_action = next(a for a in open_menu(tray) if a.data() == "broken")
    broken_action.trigger()
    qt_driver.until(lambda: bool(notes), message="a notification")
    assert notes == [("broken failed to load", "llama-server exited while loading")]
    assert tray.state is IconState.ERROR
    assert image(tray.icon()) == image(state_icon(IconState.ERROR))
    assert "broken: failed to load" in tray.toolTip()
    entries = {a.data(): a.text() for a in open_menu(tray)}
    assert entries["broken"] == "broken (failed)"

    # A later successful load clears the alarm.
    next(a for a in open_menu(tray) if a.data() == "tiny").trigger()
    qt_driver.until(lambda: tray.state is IconState.SERVING, message="tiny to be served")


def test_a_crashed_runner_is_notified_and_reloading_recovers(qt_driver: QtDriver,
                                                             gui_service: Any,
                                                             make_tray: Any) -> None:
    service = gui_service()
    tray = make_tray(service)
    notes: list[tuple[str, str]] = []
    tray.notified.connect(lambda title, message: notes.append((title, message)))
    qt_driver.run(service.manager.load("tiny"))
    runner = service.manager.runner("tiny")
    assert runner is not None and runner.pid is not None
    psutil.Process(runner.pid).kill()

    qt_driver.until(lambda: bool(notes), message="a crash notification")
    assert notes == [("tiny stopped unexpectedly", "exited with code -9")]
    assert tray.state is IconState.ERROR
    [tiny] = open_menu(tray)
    assert (tiny.text(), tiny.isChecked()) == ("tiny (failed)", False)
    tiny.trigger()
    qt_driver.until(lambda: tray.state is IconState.SERVING, message="tiny to be served")


def test_a_port_in_use_shows_the_error_state(qt_driver: QtDriver, write_config: Any,
                                             make_tray: Any) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config({}, proxies={
            "ollama": {"enabled": True, "host": "127.0.0.1", "port": port},
            "lmstudio": {"enabled": True, "host": "127.0.0.1", "port": 0}})
        service = Service(ConfigStore(config))
        try:
            errors = qt_driver.run(service.start())
            assert [e.name for e in errors] == ["ollama"]
            tray = make_tray(service)
            assert tray.state is IconState.ERROR
            lines = tray.toolTip().splitlines()
            assert lines[0] == "LlamaRunner Pro — Not listening: Ollama API"
            assert lines[1] == "Ollama API: not listening (see Settings)"
            assert lines[2].startswith("LM Studio / OpenAI API: http://127.0.0.1:")
        finally:
            qt_driver.run(service.stop())


# ---- the app around the tray (DesktopApp, in process) ------------------------------------


class StubLibrary(QLabel):
    def __init__(self) -> None:
        super().__init__("library window stand-in")
        self.setWindowTitle("Model library (stub)")
        self.resize(420, 160)


@pytest.fixture
def stub_windows() -> tuple[list[StubLibrary], dict[str, Callable[[], QWidget]]]:
    built: list[StubLibrary] = []

    def library() -> QWidget:
        built.append(StubLibrary())
        return built[-1]

    return built, {"library": library}


def visible_boxes() -> list[QMessageBox]:
    return [w for w in QApplication.topLevelWidgets()
            if isinstance(w, QMessageBox) and w.isVisible()]


def test_without_a_tray_the_library_window_is_the_app(
        qt_driver: QtDriver, tiny_config: Any, gui_settings: QSettings,
        stub_windows: Any, screenshot: Screenshot) -> None:
    built, factories = stub_windows
    assert not QSystemTrayIcon.isSystemTrayAvailable()  # offscreen has no tray
    app = DesktopApp(ConfigStore(tiny_config()), window_factories=factories,
                     settings=gui_settings, tray_wait_s=0.6, handle_signals=False)
    started = time.monotonic()
    run = qt_driver.loop.create_task(app.run())
    qt_driver.until(lambda: bool(built) and built[0].isVisible(), message="the library")
    assert time.monotonic() - started >= 0.6, "gave up on the tray without waiting"
    assert app.no_tray and app.tray is not None and not app.tray.isVisible()
    screenshot(built[0], "no-tray-fallback")

    app.tray.toggle_model("tiny")  # what the library's Load button does, via the bridge
    qt_driver.until(lambda: app.tray is not None and app.tray.state is IconState.SERVING)
    runner_pid = app.service.manager.runner("tiny").pid  # type: ignore[union-attr]

    built[0].close()  # closing the only window quits, cleanly
    assert qt_driver.run(run) == EXIT_OK
    assert app.service.listeners.addresses() == {}
    assert not psutil.pid_exists(runner_pid) or \
        psutil.Process(runner_pid).status() == psutil.STATUS_ZOMBIE
    assert gui_settings.value("library/geometry") is not None


def test_a_second_launch_shows_the_library_and_can_quit_the_app(
        qt_driver: QtDriver, tiny_config: Any, gui_settings: QSettings, stub_windows: Any,
        tmp_path: Path) -> None:
    built, factories = stub_windows
    first = SingleInstance("gui-test", tmp_path / "run")
    assert first.acquire()
    app = DesktopApp(ConfigStore(tiny_config()), instance=first, window_factories=factories,
                     settings=gui_settings, tray_wait_s=60, handle_signals=False)
    run = qt_driver.loop.create_task(app.run())
    qt_driver.until(lambda: first.endpoint_path.exists(), message="the endpoint")
    second = SingleInstance("gui-test", tmp_path / "run")
    assert not second.acquire()
    assert qt_driver.run(asyncio.to_thread(second.notify_running, "show"))
    assert built and built[0].isVisible()
    assert qt_driver.run(asyncio.to_thread(second.notify_running, "quit"))
    assert qt_driver.run(run) == EXIT_OK
    assert not first.acquired and not first.endpoint_path.exists()


def test_an_unusable_config_is_shown_then_exits_2(qt_driver: QtDriver, tmp_path: Path,
                                                  gui_settings: QSettings,
                                                  screenshot: Screenshot) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"proxies": {"ollama": {"port": "eleven"}}}))
    app = DesktopApp(ConfigStore(config), settings=gui_settings, handle_signals=False)
    run = qt_driver.loop.create_task(app.run())
    qt_driver.until(lambda: bool(visible_boxes()), message="the error message")
    [box] = visible_boxes()
    assert box.icon() is QMessageBox.Icon.Critical
    assert str(config) in box.text() and "proxies.ollama.port" in box.informativeText()
    screenshot(box, "config-error")
    assert not run.done(), "must wait for the user to read the message"
    box.accept()
    assert qt_driver.run(run) == EXIT_CONFIG


def test_a_port_in_use_is_shown_and_the_app_keeps_running(
        qt_driver: QtDriver, tiny_config: Any, write_config: Any, tiny_model: Path,
        llama_server_bin: Path, gui_settings: QSettings, stub_windows: Any,
        screenshot: Screenshot) -> None:
    _, factories = stub_windows
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config({"tiny": {"path": str(tiny_model)}}, runtime=llama_server_bin,
                              proxies={"ollama": {"enabled": False},
                                       "lmstudio": {"host": "127.0.0.1", "port": port}})
        app = DesktopApp(ConfigStore(config), window_factories=factories,
                         settings=gui_settings, tray_wait_s=60, handle_signals=False)
        run = qt_driver.loop.create_task(app.run())
        qt_driver.until(lambda: bool(visible_boxes()), message="the warning")
        [box] = visible_boxes()
        assert box.icon() is QMessageBox.Icon.Warning
        assert f"port {port} is already in use" in box.informativeText()
        screenshot(box, "port-in-use")
        box.accept()
        qt_driver.sleep(0.1)
        assert not run.done(), "a port in use must not end the app"
        assert app.tray is not None and app.tray.state is IconState.ERROR
        app.request_quit()
        assert qt_driver.run(run) == EXIT_OK


# ---- the windows the tray opens (WindowManager) ------------------------------------------


class StubWindow(QLabel):
    def __init__(self, *args: Any) -> None:
        super().__init__("stand-in")
        self.args = args


def test_windows_are_built_once_brought_back_and_remember_their_geometry(
        qtbot: Any, gui_settings: QSettings) -> None:
    built: list[StubWindow] = []

    def library() -> QWidget:
        built.append(StubWindow())
        return built[-1]

    manager = WindowManager(cast(Any, None), cast(Any, None), settings=gui_settings,
                            factories={"library": library})
    closed: list[str] = []
    manager.window_closed.connect(closed.append)
    window = manager.show_library()
    assert window is built[0] and window.isVisible()
    window.setGeometry(120, 80, 333, 222)
    window.close()  # closing hides; the window object lives on
    qtbot.waitUntil(lambda: closed == ["library"], timeout=2000)
    assert window.isHidden() and manager.window("library") is window
    assert manager.show_library() is window and window.isVisible() and len(built) == 1
    manager.close_all()

    again = WindowManager(cast(Any, None), cast(Any, None), settings=gui_settings,
                          factories={"library": library})
    restored = again.show_library()
    assert restored is built[1] and restored.size().toTuple() == (333, 222)
    again.close_all()


def test_a_window_that_refuses_to_close_is_not_reported_closed(
        qtbot: Any, gui_settings: QSettings) -> None:
    class Stubborn(QLabel):
        def closeEvent(self, event: Any) -> None:
            event.ignore()  # unsaved edits, say

    manager = WindowManager(cast(Any, None), cast(Any, None), settings=gui_settings,
                            factories={"settings": Stubborn})
    closed: list[str] = []
    manager.window_closed.connect(closed.append)
    window = manager.show_settings()
    assert window is not None
    window.close()
    qtbot.wait(50)
    assert window.isVisible() and closed == []
    manager.close_all()


@pytest.fixture
def fake_window_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real import path, stand-in classes: the default factories without the real windows."""
    module = ModuleType("llamarunner.gui.windows.fake_windows")
    module.LibraryWindow = StubWindow  # type: ignore[attr-defined]
    module.MetersWindow = StubWindow  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(window_manager._WINDOWS, "library",
                        ("fake_windows", "LibraryWindow", "Model library"))
    monkeypatch.setitem(window_manager._WINDOWS, "meters",
                        ("fake_windows", "MetersWindow", "Meters"))
    monkeypatch.setitem(window_manager._WINDOWS, "logs",
                        ("not_written_yet", "LogsWindow", "Logs"))


def test_default_factories_import_lazily_and_explain_what_is_missing(
        qtbot: Any, gui_settings: QSettings, fake_window_modules: None,
        screenshot: Screenshot) -> None:
    service, bridge = cast(Any, object()), cast(Any, object())
    monitor: list[object | None] = [None]
    manager = WindowManager(service, bridge, lambda: monitor[0], settings=gui_settings)

    library = manager.show_library()
    assert isinstance(library, StubWindow) and library.args == (service, bridge)

    assert manager.show_logs() is None  # its module is not there: a message, not a crash
    assert manager.show_meters() is None  # no monitor to show
    boxes = {box.text(): box for box in visible_boxes()}
    missing = ("The Logs window is not part of this build yet "
               "(llamarunner.gui.windows.not_written_yet is missing).")
    assert sorted(boxes) == [
        "Meters are not available: no resource monitor is running.", missing]
    screenshot(boxes[missing], "window-missing")
    monitor[0] = sentinel = object()
    meters = manager.show_meters()
    assert isinstance(meters, StubWindow) and meters.args == (sentinel,)
    manager.close_all()
    assert visible_boxes() == []
