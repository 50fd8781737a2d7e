"""The library window's "Try it" chat panel against a real Service and llama-server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import QWidget
from pytestqt.qtbot import QtBot
from tests.support.tiny_gguf import write_tiny_gguf

from llamarunner.config import ConfigStore
from llamarunner.gui.bridge import ServiceBridge
from llamarunner.gui.models.library_model import COL_NAME, COL_TEMPLATE, NAME_ROLE
from llamarunner.gui.widgets.chat_panel import ChatPanel
from llamarunner.gui.windows.library import LibraryWindow
from llamarunner.service import Service

NO_SOURCES = {"ollama": {"enabled": False}, "lmstudio": {"enabled": False}}


class Window:
    """A started Service, the real bridge and a shown library window on the qasync loop."""

    def __init__(self, driver: Any, service: Service, window: LibraryWindow) -> None:
        self.driver = driver
        self.service = service
        self.window = window
        self.panel: ChatPanel = window.chat
        self.outcomes: list[str] = []
        self.panel.finished.connect(self.outcomes.append)

    def inside(self, action: Callable[[], object]) -> None:
        """Run a UI action inside the running loop, as in the app (the bridge needs it)."""

        async def act() -> None:
            action()

        self.driver.run(act())

    def open_chat(self, name: str) -> None:
        proxy = self.window.proxy
        for row in range(proxy.rowCount()):
            if proxy.index(row, COL_NAME).data(NAME_ROLE) == name:
                self.window.table.selectRow(row)
                break
        assert self.window.selected_name() == name
        self.window.tabs.setCurrentWidget(self.panel)
        assert self.panel.model == name

    def type_and_send(self, text: str) -> None:
        QtBot.keyClicks(self.panel.input, text)
        self.inside(lambda: QtBot.keyClick(self.panel.input, Qt.Key.Key_Return))

    def wait_answer(self, count: int = 1) -> str:
        self.driver.until(lambda: len(self.outcomes) >= count, timeout=60,
                          message="the answer to end")
        return self.outcomes[count - 1]

    def template_cell(self, name: str) -> tuple[str, str]:
        proxy = self.window.proxy
        for row in range(proxy.rowCount()):
            index = proxy.index(row, COL_NAME)
            if index.data(NAME_ROLE) == name:
                cell = proxy.index(row, COL_TEMPLATE)
                return str(cell.data()), str(cell.data(Qt.ItemDataRole.ToolTipRole))
        raise AssertionError(f"{name} is not listed")

    async def slot_freed(self, name: str) -> None:
        """Return once llama-server has no slot generating any more (GET /slots)."""
        runner = self.service.manager.runner(name)
        assert runner is not None
        while True:
            async with self.service.http.get(runner.base_url + "/slots",
                                             headers=runner.auth_headers) as response:
                slots = await response.json()
            if not any(slot["is_processing"] for slot in slots):
                return
            await asyncio.sleep(0.02)


@pytest.fixture
def plain_model(tmp_path: Path) -> Path:
    """A model that cannot chat: no template in its file, an architecture of no family."""
    return write_tiny_gguf(tmp_path / "plain.gguf", name="plain", chat_template=None,
                           architecture_extras={"general.architecture": "mystery"})


@pytest.fixture
def chat_window(driver: Any, tiny_config: Callable[..., Path], tiny_model: Path,
                plain_model: Path, tmp_path: Path) -> Iterator[Window]:
    config = tiny_config(
        {"tiny": {"path": str(tiny_model), "args": {"ctx-size": 256, "threads": 1}},
         "plain": {"path": str(plain_model)},
         "broken": {"path": str(tiny_model), "args": {"no-such-flag": True}}},
        model_dirs=[str(tmp_path / "no-models")], sources=NO_SOURCES)
    service = Service(ConfigStore(config), runner_log_dir=tmp_path / "runners")
    assert not driver.run(service.start())
    bridge = ServiceBridge(service, capture_logs=False)
    window = LibraryWindow(service, bridge)
    window.resize(QSize(1100, 760))
    window.show()
    try:
        yield Window(driver, service, window)
    finally:
        window.hide()
        driver.run(service.stop())
        bridge.close()


def test_send_streams_the_answer_and_shows_its_stats(chat_window: Window) -> None:
    panel = chat_window.panel
    pieces: list[str] = []
    panel.streamed.connect(pieces.append)
    chat_window.open_chat("tiny")
    assert panel.problem_label.isHidden() and panel.input.isEnabled()
    assert not panel.send_button.isEnabled()  # nothing typed yet
    panel.temperature_spin.setValue(0)
    panel.max_tokens_spin.setValue(12)

    chat_window.type_and_send("hello there")
    assert panel.busy and panel.stop_button.isEnabled() and not panel.send_button.isEnabled()
    assert panel.input.toPlainText() == ""
    # The model loads on first use: the panel says what it waits for until words arrive.
    assert not panel.status_label.isHidden() and "Waiting for tiny" in panel.status_label.text()
    assert chat_window.wait_answer() == "done"
    assert panel.status_label.isHidden()

    [turn] = panel.turns
    assert turn.prompt == "hello there" and turn.model == "tiny"
    assert len(pieces) > 1 and "".join(pieces) == turn.answer  # streamed, not in one go
    assert not turn.error and not turn.stopped
    assert "tokens/s" in turn.stats and "first token after" in turn.stats
    assert turn.stats.startswith("tiny · 12 tokens")
    text = panel.transcript.toPlainText()
    assert text.index("hello there") < text.index(turn.answer.strip()) < text.index(turn.stats)
    assert not panel.busy and not panel.stop_button.isEnabled()
    runner = chat_window.service.manager.runner("tiny")
    assert runner is not None and runner.state.value == "ready" and runner.inflight == 0

    # The next question carries the conversation so far.
    assert panel.history() == [{"role": "user", "content": "hello there"},
                               {"role": "assistant", "content": turn.answer}]
    chat_window.type_and_send("and again")
    assert chat_window.wait_answer(2) == "done"
    assert len(panel.turns) == 2 and panel.turns[1].answer
    chat_window.inside(panel.clear_button.click)
    assert panel.turns == [] and panel.transcript.toPlainText() == ""


def test_shift_enter_starts_a_new_line_instead_of_sending(chat_window: Window) -> None:
    panel = chat_window.panel
    chat_window.open_chat("tiny")
    QtBot.keyClicks(panel.input, "one")
    chat_window.inside(lambda: QtBot.keyClick(panel.input, Qt.Key.Key_Return,
                                              Qt.KeyboardModifier.ShiftModifier))
    QtBot.keyClicks(panel.input, "two")
    assert panel.input.toPlainText() == "one\ntwo"
    assert panel.turns == [] and not panel.busy


def test_stop_cancels_mid_stream_and_the_runner_stays_usable(chat_window: Window) -> None:
    panel = chat_window.panel
    chat_window.open_chat("tiny")
    panel.max_tokens_spin.setValue(0)  # no limit: it would write until the context is full
    assert panel.max_tokens() is None
    # Stop as soon as the first words are on screen, as a user clicking Stop would.
    pieces: list[str] = []

    def first_piece(text: str) -> None:
        pieces.append(text)
        if len(pieces) == 1:
            panel.stop_button.click()

    panel.streamed.connect(first_piece)
    chat_window.type_and_send("tell me a long story")
    assert chat_window.wait_answer() == "stopped"
    panel.streamed.disconnect(first_piece)

    [turn] = panel.turns
    assert turn.stopped and not turn.error and turn.answer == "".join(pieces)
    assert len(pieces) < 5  # it ended right there, not at the context's end
    assert panel.transcript.toPlainText().endswith("tiny · stopped")
    assert not panel.busy and panel.input.isEnabled()
    service = chat_window.service
    runner = service.manager.runner("tiny")
    assert runner is not None and runner.inflight == 0
    # llama-server saw the connection close and freed its slot.
    chat_window.driver.run(chat_window.slot_freed("tiny"), timeout=30)

    panel.max_tokens_spin.setValue(8)
    chat_window.type_and_send("hello")
    assert chat_window.wait_answer(2) == "done"
    assert panel.turns[1].answer and "8 tokens" in panel.turns[1].stats
    assert service.manager.runner("tiny") is runner and runner.state.value == "ready"


def test_a_model_without_a_chat_template_says_why_and_cannot_send(chat_window: Window) -> None:
    panel = chat_window.panel
    assert chat_window.template_cell("tiny") == (
        "file", "the chat template stored in the model's GGUF file")
    text, tip = chat_window.template_cell("plain")
    assert text == "none" and tip.startswith("cannot chat: its GGUF file has no chat template")

    chat_window.open_chat("plain")
    assert not panel.problem_label.isHidden()
    problem = panel.problem_label.text()
    assert problem.startswith("plain cannot chat: its GGUF file has no chat template")
    assert "architecture (mystery)" in problem and "chat_template" in problem
    assert "none: it cannot chat" in chat_window.window.template_label.text()
    assert not panel.input.isEnabled() and not panel.send_button.isEnabled()
    panel.input.setPlainText("hello")  # even with text, nothing goes out
    chat_window.inside(panel.send)
    assert panel.turns == [] and not panel.send_button.isEnabled()
    states = {info.name: info.state for info in chat_window.service.manager.snapshot()}
    assert states["plain"] == "stopped"

    chat_window.open_chat("tiny")  # another model clears the message
    assert panel.problem_label.isHidden() and panel.input.isEnabled()
    assert panel.send_button.isEnabled()  # the text typed is still there


def test_a_failure_shows_under_the_question_and_the_panel_stays_usable(
        chat_window: Window) -> None:
    panel = chat_window.panel
    chat_window.open_chat("broken")
    chat_window.type_and_send("hello")
    assert chat_window.wait_answer() == "error"
    [turn] = panel.turns
    assert turn.error.startswith("llama-server for model 'broken' failed")
    assert turn.error.splitlines()[0] in panel.transcript.toPlainText()
    assert panel.history() == []  # a failed question is not sent again
    assert not panel.busy and chat_window.window.isVisible()

    chat_window.open_chat("tiny")
    panel.max_tokens_spin.setValue(4)
    chat_window.type_and_send("hello")
    assert chat_window.wait_answer(2) == "done"


def test_screenshot_of_the_panel(chat_window: Window,
                                 screenshot: Callable[[QWidget, str], Path]) -> None:
    panel = chat_window.panel
    chat_window.open_chat("tiny")
    panel.max_tokens_spin.setValue(12)
    chat_window.type_and_send("hello")
    assert chat_window.wait_answer() == "done"
    assert screenshot(panel, "chat-panel").stat().st_size > 0

