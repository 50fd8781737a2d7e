"""The config editor on a live Service: form tabs, raw JSON, validation, apply without restart."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QPoint, QSettings, QSize, Qt
from PySide6.QtWidgets import QFileDialog, QWidget
from pytestqt.qtbot import QtBot

from llamarunner import paths
from llamarunner.config import ConfigStore, parse_config
from llamarunner.gui.bridge import ServiceBridge
from llamarunner.gui.windows.settings import SettingsWindow, runtime_check
from llamarunner.service import Service


# See test_library_window.py: loops stay referenced so none is collected off the GUI thread.
class Editor:
    """A started Service, the real bridge and the settings window."""

    def __init__(self, driver: Any, service: Service, window: SettingsWindow) -> None:
        self.driver = driver
        self.service = service
        self.window = window

    def click(self, widget: QWidget) -> None:
        async def press() -> None:  # inside the loop, as in the app
            QtBot.mouseClick(widget, Qt.MouseButton.LeftButton)

        self.driver.run(press())

    def open_tab(self, title: str) -> None:
        tabs = self.window.tabs
        index = next(i for i in range(tabs.count()) if tabs.tabText(i) == title)
        bar = tabs.tabBar()
        QtBot.mouseClick(bar, Qt.MouseButton.LeftButton, pos=bar.tabRect(index).center())
        assert tabs.currentIndex() == index

    def until(self, predicate: Callable[[], bool], message: str, timeout: float = 15) -> None:
        self.driver.until(predicate, timeout=timeout, message=message)

    @property
    def file_bytes(self) -> bytes:
        return self.service.store.path.read_bytes()

    def on_disk(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.service.store.path.read_text())
        return data


@pytest.fixture
def editor(driver: Any, tiny_config: Callable[..., Path], tmp_path: Path
           ) -> Iterator[Editor]:
    config = tiny_config(sources={"ollama": {"enabled": False}, "lmstudio": {"enabled": False}})
    service = Service(ConfigStore(config), runner_log_dir=tmp_path / "runners")
    assert not driver.run(service.start())
    bridge = ServiceBridge(service, capture_logs=False)
    window = SettingsWindow(service, bridge)
    window.resize(QSize(760, 560))
    window.show()
    try:
        yield Editor(driver, service, window)
    finally:
        window.hide()
        driver.run(service.stop())
        bridge.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def refuses(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        try:
            probe.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
        return False


def test_form_shows_the_running_config(editor: Editor, llama_server_bin: Path) -> None:
    window, config = editor.window, editor.service.config
    for name in ("ollama", "lmstudio"):
        fields = window.proxy_fields[name]
        assert fields.enabled.isChecked()
        assert fields.host.text() == "127.0.0.1"
        assert fields.port.value() == 0
        port = editor.service.listeners.bound_port(name)
        assert fields.listening.text() == f"listening on http://127.0.0.1:{port}"
    assert window.max_loaded.value() == config.scheduler.max_loaded_models
    assert window.duration_edits["load_timeout"].text() == "30s"
    assert window.duration_edits["stop_grace"].text() == "2s"
    assert window.duration_edits["default_ttl"].text() == "5m"
    assert window.runtimes_table.item(0, 0).text() == "default"
    assert window.runtimes_table.item(0, 1).text() == str(llama_server_bin)
    assert [window.folders_list.item(i).text() for i in range(window.folders_list.count())] \
        == list(config.model_dirs)
    assert str(paths.models_dir()) in window.folders_note.text()


def test_new_port_is_applied_without_restart(editor: Editor) -> None:
    window = editor.window
    old = editor.service.listeners.bound_port("lmstudio")
    assert old is not None and not refuses(old)
    new = free_port()
    fields = window.proxy_fields["lmstudio"]
    fields.port.selectAll()
    QtBot.keyClicks(fields.port, str(new))
    assert fields.port.value() == new

    editor.click(window.apply_button)
    editor.until(lambda: editor.service.listeners.bound_port("lmstudio") == new,
                 "the listener to move")
    editor.until(lambda: window.status_label.text() == "Saved and applied.", "the status")
    assert refuses(old)
    assert not refuses(new)
    assert editor.on_disk()["proxies"]["lmstudio"]["port"] == new
    assert fields.listening.text() == f"listening on http://127.0.0.1:{new}"
    # Nothing else changed: the other listener kept its port.
    assert editor.service.listeners.bound_port("ollama") is not None


def test_invalid_raw_json_is_shown_and_never_written(editor: Editor, qtbot: QtBot) -> None:
    window = editor.window
    before = editor.file_bytes
    editor.open_tab("Raw JSON")
    # The whole config, defaults written out: the same meaning as the file.
    assert parse_config(json.loads(window.raw_edit.toPlainText())) == \
        parse_config(json.loads(before))

    window.raw_edit.setPlainText('{"proxies": {"lmstudio": {"port": 1234}')  # unclosed
    editor.click(window.apply_button)
    assert window.raw_error.isVisible()
    assert window.raw_error.text().startswith("Not valid JSON at line 1, column")
    assert editor.file_bytes == before

    data = json.loads(before)
    data["proxies"]["lmstudio"]["port"] = "twelve"
    data["scheduler"]["max_queue"] = -1
    window.raw_edit.setPlainText(json.dumps(data, indent=2))
    editor.click(window.apply_button)
    shown = window.raw_error.text()
    assert "proxies.lmstudio.port: must be a whole number, not the string 'twelve'" in shown
    assert "scheduler.max_queue: must be 0 or more, not -1" in shown
    assert "line " in shown  # problems point at lines of the text
    assert editor.file_bytes == before
    # The same problems also wait next to their fields on the form tabs.
    assert "whole number" in window.proxy_fields["lmstudio"].port_error.text()
    assert "0 or more" in window.scheduler_errors["max_queue"].text()

    # A config that does not validate cannot leave the raw tab for the form.
    editor.open_tab("Proxies")
    qtbot.waitUntil(lambda: window.tabs.currentWidget() is window.raw_tab)
    assert "Revert" in window.raw_error.text()

    editor.click(window.revert_button)
    assert parse_config(json.loads(window.raw_edit.toPlainText())) == \
        parse_config(json.loads(before))
    assert not window.raw_error.isVisible()


def test_raw_edits_show_in_the_form_and_apply(editor: Editor) -> None:
    window = editor.window
    editor.open_tab("Raw JSON")
    data = json.loads(window.raw_edit.toPlainText())
    data["scheduler"]["max_loaded_models"] = 3
    data["_note"] = "comments survive the editor"
    window.raw_edit.setPlainText(json.dumps(data, indent=2))
    editor.open_tab("Scheduler")
    assert window.max_loaded.value() == 3

    editor.click(window.apply_button)
    editor.until(lambda: editor.service.config.scheduler.max_loaded_models == 3, "the apply")
    assert editor.service.manager.scheduler.max_loaded_models == 3
    assert editor.on_disk()["_note"] == "comments survive the editor"


def test_form_problems_are_shown_next_to_their_fields(editor: Editor) -> None:
    window = editor.window
    before = editor.file_bytes
    editor.open_tab("Scheduler")
    window.duration_edits["default_ttl"].setText("soon")
    window.duration_edits["load_timeout"].setText("0")
    editor.open_tab("Proxies")
    ollama, lmstudio = window.proxy_fields["ollama"], window.proxy_fields["lmstudio"]
    ollama.port.setValue(4321)
    lmstudio.port.setValue(4321)
    lmstudio.host.setText("")

    editor.click(window.apply_button)
    assert "'soon' is not a duration" in window.scheduler_errors["default_ttl"].text()
    assert window.scheduler_errors["load_timeout"].text() == "must be more than 0"
    assert "also used by proxies.ollama" in lmstudio.port_error.text()
    assert lmstudio.host_error.text() == "must not be empty"
    assert not ollama.port_error.isVisible()
    assert not window.general_error.isVisible()
    assert editor.file_bytes == before

    editor.click(window.revert_button)
    assert not lmstudio.port_error.isVisible()
    assert lmstudio.host.text() == "127.0.0.1"
    assert window.duration_edits["default_ttl"].text() == "5m"


def test_runtimes_found_check_browse_add_remove(editor: Editor, llama_server_bin: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    window = editor.window
    editor.open_tab("Runtimes")
    table = window.runtimes_table
    status = window.runtime_status(0)
    assert status is not None and status.found
    assert status.text().startswith("found ")
    assert status.text().endswith(f": {llama_server_bin}")

    table.item(0, 1).setText("/nowhere/llama-server")
    assert not status.found and status.text() == "not found: no such file"

    monkeypatch.setattr(QFileDialog, "getOpenFileName",
                        staticmethod(lambda *args, **kwargs: (str(llama_server_bin), "")))
    editor.click(table.cellWidget(0, 2))
    assert table.item(0, 1).text() == str(llama_server_bin)
    assert status.found

    editor.click(window.add_runtime_button)
    assert table.rowCount() == 2 and table.item(1, 0).text() == "runtime-2"
    table.item(1, 1).setText("")
    editor.click(window.apply_button)
    new_status = window.runtime_status(1)
    assert new_status is not None and new_status.text() == "path: must not be empty"
    assert "runtime-2" not in editor.on_disk()["runtimes"]

    table.selectRow(1)
    editor.click(window.remove_runtime_button)
    assert table.rowCount() == 1
    editor.click(window.apply_button)
    editor.until(lambda: window.status_label.text() == "Saved and applied.", "the apply")
    assert list(editor.on_disk()["runtimes"]) == ["default"]


def test_model_folders_add_and_remove(editor: Editor, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    window = editor.window
    editor.open_tab("Model folders")
    folder = tmp_path / "my models"
    folder.mkdir()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                        staticmethod(lambda *args, **kwargs: str(folder)))
    before = list(editor.service.config.model_dirs)
    editor.click(window.add_folder_button)
    assert window.folders_list.item(window.folders_list.count() - 1).text() == str(folder)
    editor.click(window.apply_button)
    editor.until(lambda: str(folder) in editor.service.config.model_dirs, "the apply")
    assert editor.on_disk()["model_dirs"] == [*before, str(folder)]

    window.folders_list.item(window.folders_list.count() - 1).setSelected(True)
    editor.click(window.remove_folder_button)
    editor.click(window.apply_button)
    editor.until(lambda: list(editor.service.config.model_dirs) == before, "the removal")


def test_other_apps_stores_can_be_switched_and_pointed(editor: Editor,
                                                      tmp_path: Path) -> None:
    window = editor.window
    editor.open_tab("Model folders")
    ollama = window.source_fields["ollama"]
    assert not ollama.enabled.isChecked() and ollama.path.text() == ""
    QtBot.mouseClick(ollama.enabled, Qt.MouseButton.LeftButton,
                     pos=QPoint(8, ollama.enabled.height() // 2))
    assert ollama.enabled.isChecked()
    store = tmp_path / "ollama-store"
    (store / "manifests").mkdir(parents=True)
    QtBot.keyClicks(ollama.path, str(store))
    editor.click(window.apply_button)
    editor.until(lambda: editor.service.config.sources["ollama"].enabled, "the apply")
    assert editor.on_disk()["sources"]["ollama"] == {"enabled": True, "path": str(store)}
    assert editor.on_disk()["sources"]["lmstudio"]["enabled"] is False


def test_outside_edit_refreshes_an_untouched_form(editor: Editor) -> None:
    window = editor.window
    data = editor.on_disk()
    data["scheduler"]["max_queue"] = 7
    editor.service.store.path.write_text(json.dumps(data, indent=2))
    editor.until(lambda: window.max_queue.value() == 7, "the watcher's reload")

    # With unapplied edits the form is kept, and says what happened.
    window.max_loaded.setValue(5)
    data["scheduler"]["max_queue"] = 8
    editor.service.store.path.write_text(json.dumps(data, indent=2))
    editor.until(lambda: "changed outside this window" in window.status_label.text(),
                 "the notice")
    assert window.max_loaded.value() == 5 and window.max_queue.value() == 7


def test_a_rejected_outside_edit_is_reported(editor: Editor) -> None:
    editor.service.store.path.write_text('{"scheduler": {"max_queue": "many"}}')
    editor.until(lambda: editor.window.general_error.isVisible(), "the rejection", timeout=20)
    assert "keeps running with the last good configuration" in \
        editor.window.general_error.text()


def test_a_file_that_does_not_parse_refuses_apply_and_says_why(
        editor: Editor, screenshot: Callable[[QWidget, str], Path]) -> None:
    window = editor.window
    window.max_queue.setValue(9)  # an edit in the window...
    broken = b'{\n  "scheduler": {\n    "max_queue": 3,\n  }\n}\n'
    editor.service.store.path.write_bytes(broken)  # ...while the file is mid-edit by hand

    editor.click(window.apply_button)
    shown = window.general_error.text()
    assert window.general_error.isVisible()
    assert f"{editor.service.store.path}:4:3: invalid JSON" in shown
    assert "Not saved" in shown and "press Apply again once the file is fixed" in shown
    assert editor.file_bytes == broken  # byte for byte
    assert window.max_queue.value() == 9  # the edit waits in the window
    assert window.status_label.text() == ""
    screenshot(window, "settings-not-saved")

    # Fixed by hand: the same Apply now goes through, with the hand edit kept.
    data = json.loads(editor.service.store.last_good_text or "")
    data["_note"] = "fixed"
    editor.service.store.path.write_text(json.dumps(data, indent=2))
    editor.click(window.apply_button)
    editor.until(lambda: window.status_label.text() == "Saved and applied.", "the apply")
    assert editor.on_disk()["scheduler"]["max_queue"] == 9
    assert editor.on_disk()["_note"] == "fixed"


def test_a_key_changed_in_the_file_and_the_window_is_refused_by_name(editor: Editor) -> None:
    window = editor.window
    window.max_queue.setValue(5)
    data = editor.on_disk()
    data["scheduler"]["max_queue"] = 9
    editor.service.store.path.write_text(json.dumps(data, indent=2))
    before = editor.file_bytes

    editor.click(window.apply_button)
    assert window.general_error.text() == (
        "scheduler.max_queue was changed in the file and in the app; reload and try again\n"
        "Revert shows the file as it is now.")
    assert editor.file_bytes == before
    editor.until(lambda: editor.service.config.scheduler.max_queue == 9, "the watcher")
    editor.click(window.revert_button)
    assert window.max_queue.value() == 9


def test_hand_edits_made_while_the_window_has_edits_survive_apply(editor: Editor) -> None:
    window = editor.window
    window.max_loaded.setValue(3)
    # Written by hand just before Apply, before the watcher saw it: a key the form shows,
    # one it does not, and a comment.
    data = editor.on_disk()
    data["scheduler"]["default_ttl"] = 3600
    data["scheduler"]["max_queue"] = 11
    data["_note"] = "mine"
    editor.service.store.path.write_text(json.dumps(data, indent=2))

    editor.click(window.apply_button)
    editor.until(lambda: window.status_label.text() == "Saved and applied.", "the apply")
    saved = editor.on_disk()
    assert saved["scheduler"]["max_loaded_models"] == 3
    assert saved["scheduler"]["default_ttl"] == 3600  # as the user wrote it
    assert saved["scheduler"]["max_queue"] == 11 and saved["_note"] == "mine"
    config = editor.service.config
    assert (config.scheduler.max_loaded_models, config.scheduler.max_queue) == (3, 11)
    assert config.scheduler.default_ttl == 3600
    assert window.duration_edits["default_ttl"].text() == "1h"


def test_close_hides_the_window(editor: Editor) -> None:
    editor.window.close()
    assert not editor.window.isVisible()
    assert QSettings("llamarunner", "LlamaRunner Pro").contains("settings/geometry")


def test_runtime_check_words() -> None:
    assert runtime_check("/no/such/llama-server") == ("not found: no such file", False)
    text, found = runtime_check("no-such-command-anywhere")
    assert not found and text == "not found: not on PATH"
