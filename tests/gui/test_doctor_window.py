"""The "Check clients…" window: the doctor's replays against the app it runs in (a real
Service on the qasync loop, real llama-server, tiny model), one line per client."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QSettings
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QWidget

from llamarunner.doctor import CLIENTS, ClientResult, Report
from llamarunner.gui.bridge import ServiceBridge
from llamarunner.gui.tray import TrayIcon
from llamarunner.gui.window_manager import WindowManager
from llamarunner.gui.windows.doctor import DoctorWindow

if TYPE_CHECKING:
    from pytestqt.qtbot import QtBot
    from tests.gui.conftest import QtDriver

CLIENT_NAMES = [name for name, _ in CLIENTS]


def test_check_clients_from_the_tray_shows_one_line_per_client(
        driver: QtDriver, gui_service: Any, gui_settings: QSettings,
        screenshot: Callable[[QWidget, str], Path]) -> None:
    service = gui_service()
    bridge = ServiceBridge(service, loop=driver.loop, capture_logs=False)
    manager = WindowManager(service, bridge, settings=gui_settings)
    tray = TrayIcon(service, bridge, manager)
    try:
        tray.menu.aboutToShow.emit()
        assert tray.doctor_action in tray.menu.actions()
        tray.doctor_action.trigger()
        window = manager.window("doctor")
        assert isinstance(window, DoctorWindow) and window.isVisible()
        assert window.running and not window.check_button.isEnabled()
        driver.until(lambda: not window.running, timeout=120, message="the check to end")

        assert window.lines() == [f"{name}: works" for name in CLIENT_NAMES]
        assert window.summary_label.text() == "All 5 clients work."
        # The listeners' real ports (the config says 0: any free port).
        ports = [service.listeners.bound_port(api) for api in ("ollama", "lmstudio")]
        assert all(f"127.0.0.1:{port}" in window.header_label.text() for port in ports)
        assert "Model: tiny" in window.header_label.text()
        screenshot(window, "doctor")

        window.copy_report()
        copied = QGuiApplication.clipboard().text()
        assert copied.splitlines()[-1] == "All 5 clients work."

        # Asking again (the tray entry, or the button) runs the checks again.
        tray.doctor_action.trigger()
        assert window.running and window.lines() == []
        driver.until(lambda: not window.running, timeout=120, message="the second check")
        assert len(window.lines()) == len(CLIENT_NAMES)
    finally:
        manager.close_all()
        bridge.close()
        tray.hide()
        tray.deleteLater()


def test_a_report_without_clients_shows_the_problem_and_the_fix(qtbot: QtBot) -> None:
    window = DoctorWindow(Any, Any)  # type: ignore[arg-type]  # shows a report, runs nothing
    qtbot.addWidget(window)
    window.show_report(Report(apis=("Ollama API at http://127.0.0.1:11434",),
                              problem="GET /api/tags (HTTP 401): unauthorized",
                              fix="name the config the app runs with"))
    assert window.lines() == []
    assert window.header_label.text().splitlines()[-2:] == [
        "GET /api/tags (HTTP 401): unauthorized", "Fix: name the config the app runs with"]
    assert window.summary_label.text() == "No client could be checked."

    failing = ClientResult("Open WebUI", False, "POST /api/chat", 400, "cannot chat", "fix it")
    window.show_report(Report((failing, ClientResult("OpenAI SDK", True)), model="x"))
    assert window.lines() == ["Open WebUI: fails at POST /api/chat (HTTP 400): cannot chat; "
                              "fix: fix it", "OpenAI SDK: works"]
    assert window.results_list.item(0).toolTip() == "fix it"
    assert window.summary_label.text() == "1 of 2 clients would fail."
