"""The logs window: batched live tail, line cap, level filter, search, pause, copy and save."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import ctypes
import itertools
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import (
    QItemSelectionModel,
    QObject,
    QPoint,
    QSize,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QColor, QGuiApplication
from PySide6.QtWidgets import QFileDialog
from pytestqt.qtbot import QtBot

from llamarunner.core.events import EventBus, RunnerLogLine
from llamarunner.gui.bridge import ServiceBridge
from llamarunner.gui.models.log_model import (
    DEBUG,
    ERROR,
    INFO,
    WARNING,
    LogEntry,
    LogModel,
    level_from_name,
    llama_line_level,
)
from llamarunner.gui.windows.logs import LogPane, LogsWindow

STARTUP = Path(__file__).parents[1] / "data" / "llama_server" / "stderr_startup.txt"


class _Probe(QObject):
    fired = Signal()


def emit_drops_a_reference_to_true() -> bool:
    """PySide6 6.12.0's SignalInstance.emit() returns True without taking a reference to
    it. Python 3.12+ makes True immortal; on 3.11 each emit from Python moves True's
    count one step closer to 0, where the interpreter aborts ("bool_dealloc: deallocating
    True or False"). 6.11.3 is fine.
    """
    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(10):
        probe.fired.emit()
    return sys.getrefcount(True) < before


EMIT_DROPS_TRUE = emit_drops_a_reference_to_true()


@pytest.fixture(autouse=True)
def true_kept_alive() -> Iterator[None]:
    """With an affected PySide6, hand True the references its emit() will drop.

    Otherwise the 20 000-line flood below aborts the whole test run (hiding every other
    result); test_emitting_signals_keeps_references_to_true reports the defect itself.
    Extra references to True cost nothing: it is never freed anyway.
    """
    if not EMIT_DROPS_TRUE:
        yield
        return
    before = sys.getrefcount(True)
    _incref_true(50_000)  # more than any test here emits
    yield
    _incref_true(before - sys.getrefcount(True))


def _incref_true(count: int) -> None:
    for _ in range(max(0, count)):
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(True))


class FakeRunner:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def tail(self, lines: int = 20) -> list[str]:
        return self.lines[-lines:]


class FakeManager:
    """The part of RunnerManager the window reads: runners' buffered output."""

    def __init__(self) -> None:
        self.runners: dict[str, FakeRunner] = {}

    def runner(self, name: str) -> FakeRunner | None:
        return self.runners.get(name)

    def snapshot(self) -> list[Any]:
        return [type("Info", (), {"name": name})() for name in self.runners]


class FakeService:
    def __init__(self) -> None:
        self.events = EventBus()
        self.manager = FakeManager()


@pytest.fixture
def service() -> FakeService:
    return FakeService()


@pytest.fixture
def bridge(service: FakeService) -> Iterator[ServiceBridge]:
    bridge = ServiceBridge(service, capture_logs=True)
    yield bridge
    bridge.close()


@pytest.fixture
def window(qtbot: QtBot, service: FakeService, bridge: ServiceBridge) -> Iterator[LogsWindow]:
    window = LogsWindow(service, bridge)  # type: ignore[arg-type]
    window.resize(QSize(760, 500))
    window.show()
    yield window
    window.hide()


def shown(pane: LogPane) -> list[str]:
    return pane.proxy.visible_lines()


def flushed(qtbot: QtBot, pane: LogPane, count: int) -> None:
    qtbot.waitUntil(lambda: pane.proxy.rowCount() == count, timeout=5000)


def runner_line(service: FakeService, model: str, line: str) -> None:
    """As the core sends it: an event on the bus, re-emitted by the bridge."""
    service.events.publish(RunnerLogLine(model, line))


def heartbeat(ticks: list[float]) -> QTimer:
    """A 10 ms timer noting when it fires: long gaps mean the event loop was blocked."""
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    return timer


def test_fast_output_is_batched_capped_and_keeps_the_ui_responsive(
        qtbot: QtBot, window: LogsWindow, service: FakeService) -> None:
    ticks: list[float] = []
    beat = heartbeat(ticks)
    runner_line(service, "tiny", "first")
    pane = window.pane("tiny")
    assert pane is not None
    flushed(qtbot, pane, 1)
    updates: list[str] = []
    pane.model.rowsInserted.connect(lambda *_: updates.append("insert"))
    pane.model.modelReset.connect(lambda *_: updates.append("reset"))

    started = time.perf_counter()
    for chunk in range(20):
        for i in range(1000):
            runner_line(service, "tiny", f"0.01.000.{chunk:03d} I slot line {chunk * 1000 + i}")
        qtbot.wait(1)  # the event loop gets a turn between bursts, as with a real pipe
    feeding = time.perf_counter() - started
    qtbot.waitUntil(lambda: shown(pane)[-1].endswith("line 19999"), timeout=5000)
    beat.stop()

    assert pane.model.rowCount() == 5000  # the cap: the oldest lines were dropped
    assert shown(pane)[0].endswith("line 15000")
    # One model update per flush tick, not one per line.
    assert 1 <= len(updates) <= 10, updates
    assert feeding < 5, f"queueing 20 000 lines took {feeding:.2f}s"
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert gaps and max(gaps) < 1.0, f"the event loop stalled for {max(gaps):.2f}s"


def test_runner_tab_is_created_on_first_line_and_prefilled(
        qtbot: QtBot, window: LogsWindow, service: FakeService) -> None:
    assert window.tabs.count() == 1 and window.tabs.tabText(0) == "App"
    startup = STARTUP.read_text().splitlines()[:5]
    service.manager.runners["gemma"] = FakeRunner(startup)
    runner_line(service, "gemma", startup[-1])  # already in the runner's buffer
    runner_line(service, "gemma", "0.00.100.000 I slot next line")
    pane = window.pane("gemma")
    assert pane is not None and window.tabs.tabText(1) == "gemma"
    flushed(qtbot, pane, 6)
    assert shown(pane) == [*startup, "0.00.100.000 I slot next line"]


def test_open_runners_get_their_tab_when_the_window_opens(
        qtbot: QtBot, service: FakeService, bridge: ServiceBridge) -> None:
    service.manager.runners["tiny"] = FakeRunner(["0.00.001.000 I srv hello"])
    window = LogsWindow(service, bridge)  # type: ignore[arg-type]
    pane = window.pane("tiny")
    assert pane is not None
    flushed(qtbot, pane, 1)
    window.show_runner("tiny")
    assert window.tabs.currentWidget() is pane


def test_runner_level_filter_uses_llama_server_level_letters(
        qtbot: QtBot, window: LogsWindow, service: FakeService) -> None:
    lines = STARTUP.read_text().splitlines()
    for line in lines:
        runner_line(service, "tiny", line)
    runner_line(service, "tiny", "0.00.200.000 E srv  load_model: failed to load")
    runner_line(service, "tiny", "a plain print without a level")
    pane = window.pane("tiny")
    assert pane is not None
    flushed(qtbot, pane, len(lines) + 2)
    pane.set_min_level("WARNING")
    visible = shown(pane)
    assert visible and all(" W " in line or " E " in line for line in visible)
    assert visible[-1].endswith("failed to load")
    pane.set_min_level("ERROR")
    visible = shown(pane)
    assert visible[-1] == "0.00.200.000 E srv  load_model: failed to load"
    assert all(" E " in line for line in visible)
    assert len(visible) == sum(" E " in line for line in lines) + 1
    pane.set_min_level("DEBUG")
    assert len(shown(pane)) == len(lines) + 2
    assert pane.model.data(pane.model.index(len(lines), 0),
                           Qt.ItemDataRole.ForegroundRole) == QColor("#c62828")


def test_app_tab_shows_log_records_by_level(qtbot: QtBot, window: LogsWindow) -> None:
    logger = logging.getLogger("llamarunner.test_logs_window")
    logger.warning("disk almost full")
    logger.error("config rejected\nsecond line of the record")
    pane = window.app_pane
    qtbot.waitUntil(lambda: any("config rejected" in line for line in shown(pane)),
                    timeout=5000)
    assert any(line.endswith("disk almost full") for line in shown(pane))
    assert "second line of the record" in shown(pane)  # one row per line
    pane.level_combo.setCurrentIndex(pane.level_combo.findText("ERROR"))
    assert not any("disk almost full" in line for line in shown(pane))
    assert any("config rejected" in line for line in shown(pane))


def test_search_highlights_or_filters(qtbot: QtBot, window: LogsWindow,
                                      service: FakeService) -> None:
    for i in range(10):
        runner_line(service, "tiny", f"0.00.000.00{i} I line {i}{' needle' if i % 3 == 0 else ''}")
    pane = window.pane("tiny")
    assert pane is not None
    flushed(qtbot, pane, 10)
    qtbot.keyClicks(pane.search_edit, "NEEDLE")
    backgrounds = [pane.proxy.index(r, 0).data(Qt.ItemDataRole.BackgroundRole)
                   for r in range(pane.proxy.rowCount())]
    assert [b is not None for b in backgrounds] == [i % 3 == 0 for i in range(10)]
    box = pane.only_matching
    qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=QPoint(8, box.height() // 2))
    assert box.isChecked()
    assert shown(pane) == [f"0.00.000.00{i} I line {i} needle" for i in (0, 3, 6, 9)]
    pane.search_edit.clear()
    assert len(shown(pane)) == 10  # an empty search matches everything


def test_pause_keeps_lines_and_counts_them(qtbot: QtBot, window: LogsWindow,
                                           service: FakeService) -> None:
    runner_line(service, "tiny", "before")
    pane = window.pane("tiny")
    assert pane is not None
    flushed(qtbot, pane, 1)
    qtbot.mouseClick(pane.pause_button, Qt.MouseButton.LeftButton)
    assert pane.paused and pane.pause_button.text() == "Resume"
    for i in range(12):
        runner_line(service, "tiny", f"while paused {i}")
    qtbot.waitUntil(lambda: pane.pending_label.text() == "12 new lines", timeout=5000)
    qtbot.wait(250)  # several flush ticks
    assert shown(pane) == ["before"]
    qtbot.mouseClick(pane.pause_button, Qt.MouseButton.LeftButton)
    assert shown(pane) == ["before", *(f"while paused {i}" for i in range(12))]
    assert pane.pending_label.text() == "" and pane.pause_button.text() == "Pause"


def test_copy_selected_lines_or_all(qtbot: QtBot, window: LogsWindow,
                                    service: FakeService) -> None:
    for i in range(5):
        runner_line(service, "tiny", f"line {i}")
    pane = window.pane("tiny")
    assert pane is not None
    flushed(qtbot, pane, 5)
    selection = pane.view.selectionModel()
    for row in (3, 1):
        selection.select(pane.proxy.index(row, 0), QItemSelectionModel.SelectionFlag.Select)
    qtbot.mouseClick(pane.copy_button, Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == "line 1\nline 3\n"
    selection.clearSelection()
    qtbot.mouseClick(pane.copy_button, Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == "".join(f"line {i}\n" for i in range(5))


def test_save_writes_the_shown_lines(qtbot: QtBot, window: LogsWindow, service: FakeService,
                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for line in ("0.1 I ok", "0.2 W careful", "0.3 E broken"):
        runner_line(service, "tiny", line)
    pane = window.pane("tiny")
    assert pane is not None
    flushed(qtbot, pane, 3)
    target = tmp_path / "saved.log"
    offered: list[str] = []

    def ask(parent: Any, caption: str, start: str, filters: str) -> tuple[str, str]:
        offered.append(start)
        return str(target), filters

    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(ask))
    pane.set_min_level("WARNING")
    qtbot.mouseClick(pane.save_button, Qt.MouseButton.LeftButton)
    assert target.read_text() == "0.2 W careful\n0.3 E broken\n"
    assert offered[0].endswith("tiny.log")
    assert pane.message_label.text() == f"Saved 2 lines to {target}."

    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        staticmethod(lambda *a: (str(tmp_path / "no" / "such.log"), "")))
    qtbot.mouseClick(pane.save_button, Qt.MouseButton.LeftButton)
    assert pane.message_label.text().startswith("Could not save")


def test_clear_empties_the_tab(qtbot: QtBot, window: LogsWindow, service: FakeService) -> None:
    runner_line(service, "tiny", "something")
    pane = window.pane("tiny")
    assert pane is not None
    flushed(qtbot, pane, 1)
    qtbot.mouseClick(pane.clear_button, Qt.MouseButton.LeftButton)
    assert pane.model.rowCount() == 0


def test_close_hides_and_geometry_is_remembered(qtbot: QtBot, window: LogsWindow,
                                                service: FakeService,
                                                bridge: ServiceBridge) -> None:
    runner_line(service, "tiny", "kept while hidden")
    window.resize(QSize(720, 460))  # inside the offscreen screen (800x600)
    window.close()
    assert not window.isVisible()
    runner_line(service, "tiny", "arrived while hidden")
    pane = window.pane("tiny")
    assert pane is not None
    flushed(qtbot, pane, 2)
    window.show_and_raise()
    assert window.isVisible()
    window.hide()
    again = LogsWindow(service, bridge)  # type: ignore[arg-type]
    assert again.size() == QSize(720, 460)


def test_emitting_signals_keeps_references_to_true() -> None:
    """The bridge emits one signal per runner log line: a PySide6 whose emit() drops a
    reference to True aborts the app within a few thousand lines on Python 3.11. Use a
    PySide6-Essentials other than 6.12.0 (6.11.3 works).
    """
    import PySide6

    assert not emit_drops_a_reference_to_true(), (
        f"PySide6 {PySide6.__version__} on Python {sys.version.split()[0]}: "
        "SignalInstance.emit() drops a reference to True on every call; the app will "
        "abort after a few thousand log lines")


def test_model_cap_and_levels() -> None:
    model = LogModel(max_lines=3)
    model.append([LogEntry(INFO, "a"), LogEntry(INFO, "b")])
    model.append([LogEntry(INFO, "c"), LogEntry(INFO, "d")])
    assert [e.text for e in model.entries()] == ["b", "c", "d"]
    model.append([LogEntry(INFO, str(i)) for i in range(5)])  # one batch over the cap
    assert [e.text for e in model.entries()] == ["2", "3", "4"]
    assert llama_line_level("0.00.005.475 W srv  llama_server: security") == WARNING
    assert llama_line_level("E main: error") == ERROR
    assert llama_line_level("0.00.001.000 D debug detail") == DEBUG
    assert llama_line_level("llama_model_loader: - kv 0") == INFO
    assert llama_line_level("0.00.001.000 Info without a letter column") == INFO
    assert level_from_name("warning") == WARNING and level_from_name("CRITICAL") == ERROR
    assert level_from_name("TRACE") == INFO
