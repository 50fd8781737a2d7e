"""The library window against a real Service and llama-server: list, filter, load, settings."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QPoint, QSize, Qt
from PySide6.QtWidgets import QFileDialog, QWidget
from pytestqt.qtbot import QtBot
from tests.support.stores import FakeOllamaStore

from llamarunner.config import ConfigStore
from llamarunner.gui.bridge import ServiceBridge
from llamarunner.gui.models.library_model import (
    COL_CONTEXT,
    COL_KIND,
    COL_NAME,
    COL_PARAMS,
    COL_SIZE,
    COL_SOURCE,
    COL_TEMPLATE,
    COLUMNS,
    NAME_ROLE,
    LibraryRow,
)
from llamarunner.gui.windows.library import (
    LibraryWindow,
    format_arg_value,
    parse_arg_value,
)
from llamarunner.service import Service

NO_SOURCES = {"ollama": {"enabled": False}, "lmstudio": {"enabled": False}}


# Every qasync loop a test made stays referenced: dropped, it could be collected on a worker
# thread, and its timer object would then be destroyed off the GUI thread, leaving Qt timers
# that fire into freed memory ("Timers cannot be stopped from another thread").
class Library:
    """A started Service, the real bridge and the window, driven through the qasync loop."""

    def __init__(self, driver: Any, service: Service, window: LibraryWindow) -> None:
        self.driver = driver
        self.service = service
        self.window = window

    def click(self, widget: QWidget) -> None:
        # Inside the running loop, as in the app: the bridge schedules tasks on it.
        async def press() -> None:
            QtBot.mouseClick(widget, Qt.MouseButton.LeftButton)

        self.driver.run(press())

    def select(self, name: str) -> None:
        """Click the model's row in the table."""
        table, proxy = self.window.table, self.window.proxy
        for row in range(proxy.rowCount()):
            index = proxy.index(row, COL_NAME)
            if index.data(NAME_ROLE) == name:
                QtBot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton,
                                 pos=table.visualRect(index).center())
                assert self.window.selected_name() == name
                return
        raise AssertionError(f"{name} is not listed: {self.names()}")

    def names(self) -> list[str]:
        proxy = self.window.proxy
        return [proxy.index(row, COL_NAME).data(NAME_ROLE) for row in range(proxy.rowCount())]

    def row(self, name: str) -> LibraryRow:
        found = self.window.model.row_for(name)
        assert found is not None, f"{name} is not listed"
        return found

    def cell(self, name: str, column: int) -> str:
        proxy = self.window.proxy
        for row in range(proxy.rowCount()):
            if proxy.index(row, COL_NAME).data(NAME_ROLE) == name:
                return str(proxy.index(row, column).data())
        raise AssertionError(f"{name} is not listed")

    def until(self, predicate: Callable[[], bool], message: str, timeout: float = 30) -> None:
        self.driver.until(predicate, timeout=timeout, message=message)


@pytest.fixture
def open_library(driver: Any, tmp_path: Path) -> Iterator[Callable[[Path], Library]]:
    """Start a Service on a config, with the real bridge and a shown library window."""
    opened: list[tuple[Service, ServiceBridge, LibraryWindow]] = []

    def start(config: Path) -> Library:
        service = Service(ConfigStore(config), runner_log_dir=tmp_path / "runners")
        assert not driver.run(service.start())
        bridge = ServiceBridge(service, capture_logs=False)
        window = LibraryWindow(service, bridge)
        opened.append((service, bridge, window))
        window.resize(QSize(1100, 700))
        window.show()
        return Library(driver, service, window)

    yield start
    for service, bridge, window in opened:
        window.hide()
        driver.run(service.stop())
        bridge.close()


@pytest.fixture
def library(open_library: Callable[[Path], Library], tiny_config: Callable[..., Path],
            tiny_model: Path, tiny_model_b: Path, tmp_path: Path) -> Library:
    """`tiny` from the config, `tiny-b` found in a model folder; both real GGUF files."""
    folder = tmp_path / "folder-models"
    folder.mkdir()
    shutil.copy(tiny_model_b, folder / "tiny-b.gguf")
    return open_library(tiny_config(
        {"tiny": {"path": str(tiny_model), "args": {"ctx-size": 256}}},
        model_dirs=[str(folder)], sources=NO_SOURCES))


def test_lists_every_model_with_its_facts(library: Library) -> None:
    assert library.names() == ["tiny", "tiny-b"]
    assert [library.window.model.headerData(c, Qt.Orientation.Horizontal)
            for c in range(len(COLUMNS))] == list(COLUMNS)
    row = library.row("tiny")
    assert (row.source, row.architecture, row.quantization, row.context_length) == (
        "config", "llama", "F32", 256)
    assert row.parameters and row.parameters[-1] in "KMB"
    assert row.size == Path(row.path).stat().st_size
    assert "completion" in row.capabilities
    assert library.cell("tiny", COL_SIZE).endswith("KB")
    assert library.cell("tiny", COL_CONTEXT) == "256"
    assert library.cell("tiny-b", COL_SOURCE) == "folder"
    assert library.window.state_text("tiny") == "stopped"
    assert library.window.count_label.text() == "2 models"


def test_text_filter_and_numeric_sort(library: Library, qtbot: QtBot) -> None:
    qtbot.keyClicks(library.window.filter_edit, "TINY-B")  # case-insensitive
    assert library.names() == ["tiny-b"]
    assert library.window.count_label.text() == "1 of 2 models"
    library.window.filter_edit.clear()
    qtbot.keyClicks(library.window.filter_edit, "f32")  # any column, not just the name
    assert library.names() == ["tiny", "tiny-b"]
    library.window.filter_edit.clear()
    qtbot.keyClicks(library.window.filter_edit, "no such model")
    assert library.names() == []
    library.window.filter_edit.clear()

    # Sorting by a number column uses the number, not its label.
    header = library.window.table.horizontalHeader()
    x = header.sectionViewportPosition(COL_PARAMS) + 5
    QtBot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(x, 5))
    counts = [library.row(n).parameter_count for n in library.names()]
    assert counts == sorted(counts) or counts == sorted(counts, reverse=True)


def test_load_and_unload_a_real_llama_server(library: Library) -> None:
    window = library.window
    seen: list[str] = []
    window.model.dataChanged.connect(lambda *_: seen.append(window.state_text("tiny")))
    library.select("tiny")
    assert window.load_button.isEnabled() and not window.unload_button.isEnabled()

    library.click(window.load_button)
    library.until(lambda: window.state_text("tiny") == "ready", "tiny to be ready")
    assert "loading…" in seen  # the busy state was shown on the way
    assert window.status_label.text() == "tiny is loaded."
    info = next(i for i in library.service.manager.snapshot() if i.name == "tiny")
    assert info.state == "ready" and info.pid is not None
    assert not window.load_button.isEnabled() and window.unload_button.isEnabled()
    assert not window.busy_bar.isVisible()

    library.click(window.unload_button)
    library.until(lambda: window.state_text("tiny") == "stopped", "tiny to stop")
    assert window.load_button.isEnabled()
    info = next(i for i in library.service.manager.snapshot() if i.name == "tiny")
    assert info.pid is None


def test_busy_bar_shows_while_loading(library: Library) -> None:
    window = library.window
    shown: list[bool] = []
    window.model.dataChanged.connect(lambda *_: shown.append(window.busy_bar.isVisible()))
    library.select("tiny-b")
    library.click(window.load_button)
    library.until(lambda: window.state_text("tiny-b") == "ready", "tiny-b to be ready")
    assert True in shown
    assert not window.busy_bar.isVisible()


@pytest.fixture
def speech_library(open_library: Callable[[Path], Library], tiny_config: Callable[..., Path],
                   tiny_model: Path, whisper_model: Path, tmp_path: Path) -> Library:
    """`tiny` (a GGUF chat model) and `whisper` (Whisper tiny.en, speech to text)."""
    return open_library(tiny_config(
        {"tiny": {"path": str(tiny_model), "args": {"ctx-size": 256}},
         "whisper": {"path": str(whisper_model)}},
        model_dirs=[str(tmp_path / "no-models")], sources=NO_SOURCES))


def test_a_speech_model_is_listed_as_speech_to_text(
        speech_library: Library, whisper_model: Path,
        screenshot: Callable[[QWidget, str], Path]) -> None:
    library, window = speech_library, speech_library.window
    assert library.names() == ["tiny", "whisper"]
    row = library.row("whisper")
    assert (row.kind, row.kind_text, row.languages) == ("audio", "Speech to text", "English")
    assert library.cell("whisper", COL_KIND) == "Speech to text (English)"
    assert library.cell("tiny", COL_KIND) == "Language model"
    assert row.size == sum(f.stat().st_size for f in whisper_model.iterdir() if f.is_file())
    assert library.cell("whisper", COL_SIZE).endswith("MB")
    assert row.capabilities == ("audio",) and row.architecture == "whisper"
    # What only a llama-server model has reads as not applicable, not as unknown.
    assert library.cell("whisper", COL_CONTEXT) == ""
    assert library.cell("whisper", COL_TEMPLATE) == ""
    assert library.window.state_text("whisper") == "stopped"

    library.select("whisper")
    assert window.transcribe_button.isEnabled() and window.load_button.isEnabled()
    assert not window.tabs.isTabEnabled(window.chat_tab)  # it cannot chat
    assert window.chat.model is None
    assert window.kind_label.text() == "Speech to text (English)"
    assert not window.detail_form.isRowVisible(window.template_label)
    assert window.args_caption.text() == "Speech worker arguments"
    assert "compute-type" in window.args_table.toolTip()
    library.driver.sleep(0.1)  # the form lays itself out again without the hidden row
    assert screenshot(window, "library-audio").stat().st_size > 0

    library.select("tiny")  # a GGUF chat model: no transcribing, chat and its hints back
    assert not window.transcribe_button.isEnabled()
    assert window.open_transcribe() is None and window.transcribe_dialog is None
    assert window.tabs.isTabEnabled(window.chat_tab) and window.chat.model == "tiny"
    assert window.kind_label.text() == "Language model"
    assert window.detail_form.isRowVisible(window.template_label)
    assert window.args_caption.text() == "llama-server arguments"
    assert "ctx-size" in window.args_table.toolTip()

    # Chatting with tiny, then picking the speech model: its settings show, not an empty chat.
    window.tabs.setCurrentWidget(window.chat)
    library.select("whisper")
    assert window.tabs.currentWidget() is window.detail


def test_load_unload_and_settings_of_a_speech_model(speech_library: Library) -> None:
    library, window = speech_library, speech_library.window
    library.select("whisper")
    window._add_arg_row()
    row = window.args_table.rowCount() - 1
    window.args_table.item(row, 0).setText("threads")
    window.args_table.item(row, 1).setText("1")
    library.click(window.save_button)
    library.until(lambda: window.detail_status.text() == "Saved the settings of whisper.",
                  "the save")
    saved = json.loads(library.service.store.path.read_text())["models"]["whisper"]
    assert saved["args"] == {"threads": 1}
    assert library.row("whisper").kind == "audio"  # still the speech model after the reload

    library.select("whisper")
    library.click(window.load_button)
    library.until(lambda: window.state_text("whisper") == "ready", "the speech worker")
    assert window.status_label.text() == "whisper is loaded."
    info = next(i for i in library.service.manager.snapshot() if i.name == "whisper")
    assert info.pid is not None
    assert window.unload_button.isEnabled() and window.transcribe_button.isEnabled()
    library.click(window.unload_button)
    library.until(lambda: window.state_text("whisper") == "stopped", "whisper to stop")
    assert window.status_label.text() == "whisper is unloaded."


def test_settings_saved_in_place_and_applied(library: Library) -> None:
    window = library.window
    library.select("tiny")
    assert window.ttl_edit.text() == ""
    assert window.ttl_edit.placeholderText() == "default (5m)"
    window.ttl_edit.setText("10m")
    window._add_arg_row()
    row = window.args_table.rowCount() - 1
    window.args_table.item(row, 0).setText("threads")
    window.args_table.item(row, 1).setText("2")
    library.click(window.save_button)
    library.until(lambda: window.detail_status.text() == "Saved the settings of tiny.",
                  "the save")

    saved = json.loads(library.service.store.path.read_text())["models"]["tiny"]
    assert saved["ttl"] == "10m"
    assert saved["args"] == {"ctx-size": 256, "threads": 2}
    assert library.service.config.models["tiny"].ttl == 600
    # The panel shows what is now in force.
    assert window.ttl_edit.text() == "10m"


def test_invalid_settings_are_shown_next_to_their_field_and_not_written(
        library: Library) -> None:
    window = library.window
    before = library.service.store.path.read_bytes()
    library.select("tiny")

    window.ttl_edit.setText("soon")
    library.click(window.save_button)
    assert window.ttl_error.isVisible()
    assert "'soon' is not a duration" in window.ttl_error.text()

    window.ttl_edit.setText("")
    window._add_arg_row()
    row = window.args_table.rowCount() - 1
    window.args_table.item(row, 0).setText("port")
    window.args_table.item(row, 1).setText("9999")
    library.click(window.save_button)
    assert not window.ttl_error.isVisible()
    assert window.args_error.text() == "port: set by the runner, remove it"

    window.args_table.item(row, 0).setText("")  # a value without a flag name
    library.click(window.save_button)
    assert "give the argument's name" in window.args_error.text()
    assert library.service.store.path.read_bytes() == before

    library.click(window.revert_button)
    assert window.args_table.rowCount() == 1 and not window.args_error.isVisible()


def test_settings_of_a_folder_model_keep_its_file_in_place(library: Library) -> None:
    window = library.window
    library.select("tiny-b")
    path = library.row("tiny-b").path
    assert "folder" in window.source_label.text()
    window.ttl_edit.setText("-1")
    library.click(window.save_button)
    library.until(lambda: window.detail_status.text() == "Saved the settings of tiny-b.",
                  "the save")
    entry = json.loads(library.service.store.path.read_text())["models"]["tiny-b"]
    assert entry["path"] == path and entry["ttl"] == "-1"
    assert Path(path).is_file()
    library.until(lambda: library.cell("tiny-b", COL_SOURCE) == "config", "the new source")
    assert library.names() == ["tiny", "tiny-b"]  # listed once, not twice


def test_settings_of_an_ollama_model_stay_with_the_store(
        open_library: Callable[[Path], Library], tiny_config: Callable[..., Path],
        tiny_model: Path, tmp_path: Path) -> None:
    store = FakeOllamaStore(tmp_path / "ollama")
    store.add_model("tinyllama", "latest", tiny_model)
    library = open_library(tiny_config(
        {}, model_dirs=[str(tmp_path / "no-models")],
        sources={"ollama": {"enabled": True, "path": str(store.root)},
                 "lmstudio": {"enabled": False}}))
    window = library.window
    [name] = library.names()
    assert library.cell(name, COL_SOURCE) == "ollama"
    library.select(name)
    assert "Ollama" in window.source_label.text()
    keys = [window.args_table.item(r, 0).text() for r in range(window.args_table.rowCount())]
    assert "jinja" in keys  # a default every discovered model gets
    window.args_table.selectRow(keys.index("jinja"))
    QtBot.mouseClick(window.remove_arg_button, Qt.MouseButton.LeftButton)
    window.ttl_edit.setText("2m")
    library.click(window.save_button)
    library.until(lambda: window.detail_status.text() == f"Saved the settings of {name}.",
                  "the save")

    entry = json.loads(library.service.store.path.read_text())["models"][name]
    assert "path" not in entry  # the blob stays Ollama's
    assert entry["ttl"] == "2m" and entry["args"]["jinja"] is False
    model = library.service.models()[name]
    assert "jinja" not in model.args and model.ttl == 120
    assert library.cell(name, COL_SOURCE) == "ollama"


def test_add_folder_lists_its_models(library: Library, tmp_path: Path, tiny_model: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    extra = tmp_path / "more models"
    extra.mkdir()
    shutil.copy(tiny_model, extra / "extra.gguf")
    asked: list[str] = []

    def choose(parent: QWidget, caption: str, start: str = "") -> str:
        asked.append(caption)
        return str(extra)

    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(choose))
    before = list(library.service.config.model_dirs)
    library.click(library.window.add_folder_button)
    library.until(lambda: "extra" in library.names(), "the new folder's model")
    assert asked
    assert list(library.service.config.model_dirs) == [*before, str(extra)]
    assert library.cell("extra", COL_SOURCE) == "folder"


def test_refreshes_when_the_config_file_changes(library: Library) -> None:
    path = library.service.store.path
    data = json.loads(path.read_text())
    data["models"]["renamed"] = data["models"].pop("tiny")
    path.write_text(json.dumps(data))
    library.until(lambda: "renamed" in library.names(), "the watcher to apply the edit",
                  timeout=15)
    assert "tiny" not in library.names()


def test_close_hides_and_geometry_is_remembered(library: Library) -> None:
    window = library.window
    # Smaller than the offscreen screen (800x600): a restore clamps to the screen.
    window.resize(QSize(700, 500))
    window.close()
    assert not window.isVisible()
    # Still usable: the tray shows it again with its state intact.
    window.show_and_raise()
    assert window.isVisible() and library.names() == ["tiny", "tiny-b"]
    window.hide()
    bridge = ServiceBridge(library.service, capture_logs=False)
    try:
        again = LibraryWindow(library.service, bridge)
        assert again.size() == QSize(700, 500)
    finally:
        bridge.close()


@pytest.mark.parametrize("value", ["8192", "0.7", "true", "q8_0", '"8"', '["a", 2]',
                                   "/models/proj.gguf"])
def test_argument_values_read_back_equal(value: str) -> None:
    parsed = parse_arg_value(value)
    assert parse_arg_value(format_arg_value(parsed)) == parsed
    assert format_arg_value(parse_arg_value(format_arg_value(parsed))) == \
        format_arg_value(parsed)
