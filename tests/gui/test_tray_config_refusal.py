"""The tray's "Start at login" toggle when config.json cannot take the key.

A real Service, a real .desktop entry in a temporary autostart folder and a real config
file: a file that does not parse is left byte for byte, the entry is put back, and the
notification says why; a hand edit made just before the toggle stays in the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from llamarunner.gui.bridge import ServiceBridge
from llamarunner.gui.tray import TrayIcon
from llamarunner.integration.autostart import Autostart, XdgAutostart
from llamarunner.service import Service

if TYPE_CHECKING:
    from tests.gui.conftest import QtDriver, RecordingWindows


@pytest.fixture
def toggle(qt_driver: QtDriver, gui_service: Callable[..., Service],
           recording_windows: RecordingWindows, tmp_path: Path
           ) -> Iterator[tuple[Service, TrayIcon, XdgAutostart, list[str]]]:
    exe = tmp_path / "opt" / "llamarunner"  # the installed app, as far as this test goes
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    entry = XdgAutostart(tmp_path / "xdg" / "autostart")
    service = gui_service()
    bridge = ServiceBridge(service, loop=qt_driver.loop, capture_logs=False)
    tray = TrayIcon(service, bridge, recording_windows, autostart=Autostart(entry, target=exe))
    notes: list[str] = []
    tray.notified.connect(lambda _title, message: notes.append(message))
    tray.menu.aboutToShow.emit()
    try:
        yield service, tray, entry, notes
    finally:
        bridge.close()
        tray.deleteLater()


def test_a_config_that_does_not_parse_refuses_the_toggle_and_says_why(
        toggle: tuple[Service, TrayIcon, XdgAutostart, list[str]]) -> None:
    service, tray, entry, notes = toggle
    broken = b'{\n  "desktop": {"start_at_login": tru}\n}\n'
    service.store.path.write_bytes(broken)

    tray.autostart_action.trigger()
    [message] = notes
    assert message.startswith("cannot turn start at login on: could not save "
                              "desktop.start_at_login in the config file: ")
    assert f"{service.store.path}:2:" in message and "invalid JSON" in message
    assert "Not saved" in message
    assert "The login entry was put back as it was." in message
    assert service.store.path.read_bytes() == broken
    assert not entry.path.exists()
    assert not tray.autostart_action.isChecked()


def test_a_hand_edit_just_before_the_toggle_stays(
        qt_driver: QtDriver, toggle: tuple[Service, TrayIcon, XdgAutostart, list[str]]) -> None:
    service, tray, entry, notes = toggle
    data: dict[str, Any] = json.loads(service.store.path.read_text())
    data["scheduler"]["max_queue"] = 3
    data["_note"] = "edited by hand"
    service.store.path.write_text(json.dumps(data, indent=2))

    tray.autostart_action.trigger()
    assert notes == []
    saved = json.loads(service.store.path.read_text())
    assert saved["desktop"] == {"start_at_login": True}
    assert saved["scheduler"]["max_queue"] == 3 and saved["_note"] == "edited by hand"
    assert entry.path.exists()
    qt_driver.until(lambda: service.config.scheduler.max_queue == 3, message="the new config")
