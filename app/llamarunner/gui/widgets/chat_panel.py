"""The "Try it" panel: chat with one model through the Service, the answer streaming in."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Final, Protocol

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QFont, QKeyEvent, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from ...library.chat_template import ChatTemplate
from ...service.chat import ChatError, ChatEvent, ChatSummary, ReasoningDelta, TextDelta
from ..windows._common import ERROR_COLOR, BridgeLike, ErrorLabel

log = logging.getLogger(__name__)

# The spin boxes' lowest value reads as "not set": the model's own default is used.
_TEMPERATURE_DEFAULT: Final = -0.1
DEFAULT_MAX_TOKENS: Final = 1024
_MUTED_COLOR: Final = "#6b6b6b"
_USER_COLOR: Final = "#1565c0"
_PLACEHOLDER: Final = "Message (Enter sends, Shift+Enter starts a new line)"


class ChatService(Protocol):
    """What the panel uses of the Service."""

    def chat_template_for(self, name: str) -> ChatTemplate: ...

    def chat_stream(
        self, model: str, messages: list[dict[str, str]], *, system: str | None = None,
        temperature: float | None = None, max_tokens: int | None = None,
    ) -> AsyncGenerator[ChatEvent, None]: ...


@dataclass
class ChatTurn:
    """One question and its answer as the panel shows them."""

    model: str
    prompt: str
    answer: str = ""
    reasoning: str = ""
    stats: str = ""
    error: str = ""
    stopped: bool = False
    done: bool = False

    @property
    def in_history(self) -> bool:
        """Whether later questions send this turn along (a failed one is left out)."""
        return self.done and not self.error and bool(self.answer)


class PromptEdit(QPlainTextEdit):
    """The message box: Enter sends, Shift+Enter (or Ctrl+Enter) adds a line break."""

    submitted = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        newline = Qt.KeyboardModifier.ShiftModifier | Qt.KeyboardModifier.ControlModifier
        if (event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
                and not event.modifiers() & newline):
            event.accept()
            self.submitted.emit()
            return
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            # QPlainTextEdit ignores Ctrl+Enter; a line break is what the user means.
            self.insertPlainText("\n")
            event.accept()
            return
        super().keyPressEvent(event)


class ChatPanel(QWidget):
    """Talk to the model selected in the library; Send, Stop, settings, stats per answer.

    Each question goes through Service.chat_stream, as an API request would (the model is
    loaded when needed and its TTL applies). Stop cancels the running task, which closes
    the connection to llama-server so it stops generating.
    """

    finished = Signal(str)  # "done", "error" or "stopped", when an answer has ended
    streamed = Signal(str)  # each piece of answer text as it arrives

    def __init__(self, service: ChatService, bridge: BridgeLike,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._service = service
        self._bridge = bridge
        self._model: str | None = None
        self._can_chat = False
        self._task: asyncio.Task[Any] | None = None
        self._stream_kind: str | None = None  # what the transcript's last block holds
        self.turns: list[ChatTurn] = []

        self.model_label = QLabel()
        self.model_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.clear_button = QPushButton("New chat")
        self.clear_button.setToolTip("Forget this conversation and start again")
        self.problem_label = ErrorLabel()
        # Until the first word arrives: a cold model takes a moment to load.
        self.status_label = QLabel()
        self.status_label.setStyleSheet(f"color: {_MUTED_COLOR}")
        self.status_label.hide()

        self.transcript = QTextBrowser()
        self.transcript.setOpenLinks(False)
        self.transcript.setPlaceholderText("Answers appear here as the model writes them.")

        self.system_edit = QLineEdit()
        self.system_edit.setPlaceholderText("System prompt (optional)")
        self.system_edit.setClearButtonEnabled(True)
        self.temperature_spin = QDoubleSpinBox()
        self.temperature_spin.setRange(_TEMPERATURE_DEFAULT, 2.0)
        self.temperature_spin.setSingleStep(0.1)
        self.temperature_spin.setDecimals(1)
        self.temperature_spin.setSpecialValueText("default")
        self.temperature_spin.setValue(_TEMPERATURE_DEFAULT)
        self.temperature_spin.setToolTip(
            "Randomness of the answer: 0 always picks the likeliest words, higher values "
            "vary more; \"default\" uses the model's own setting")
        self.max_tokens_spin = QSpinBox()
        self.max_tokens_spin.setRange(0, 1_000_000)
        self.max_tokens_spin.setSingleStep(128)
        self.max_tokens_spin.setSpecialValueText("no limit")
        self.max_tokens_spin.setValue(DEFAULT_MAX_TOKENS)
        self.max_tokens_spin.setToolTip("The longest answer, in tokens; \"no limit\" lets the "
                                        "model write until it stops or its context is full")

        self.input = PromptEdit()
        self.input.setPlaceholderText(_PLACEHOLDER)
        self.input.setTabChangesFocus(True)
        self.input.setFixedHeight(self.input.fontMetrics().lineSpacing() * 4 + 12)
        self.send_button = QPushButton("Send")
        self.send_button.setDefault(True)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop the answer; what was written so far stays")

        top = QHBoxLayout()
        top.addWidget(self.model_label, 1)
        top.addWidget(self.clear_button)
        settings = QHBoxLayout()
        settings.addWidget(self.system_edit, 1)
        settings.addWidget(QLabel("Temperature:"))
        settings.addWidget(self.temperature_spin)
        settings.addWidget(QLabel("Max tokens:"))
        settings.addWidget(self.max_tokens_spin)
        buttons = QVBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        entry = QHBoxLayout()
        entry.addWidget(self.input, 1)
        entry.addLayout(buttons)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.problem_label)
        layout.addWidget(self.transcript, 1)
        layout.addWidget(self.status_label)
        layout.addLayout(settings)
        layout.addLayout(entry)

        self.send_button.clicked.connect(self.send)
        self.input.submitted.connect(self.send)
        self.input.textChanged.connect(self._update_actions)
        self.stop_button.clicked.connect(self.stop)
        self.clear_button.clicked.connect(self.clear)
        self.set_model(None)

    # ---- state ---------------------------------------------------------------------

    @property
    def model(self) -> str | None:
        return self._model

    @property
    def busy(self) -> bool:
        return self._task is not None

    @property
    def can_send(self) -> bool:
        return (self._model is not None and self._can_chat and not self.busy
                and bool(self.input.toPlainText().strip()))

    def set_model(self, name: str | None) -> None:
        """Chat with `name` from the next question on (None: nothing selected).

        The conversation so far stays, so a question can be put to another model; a model
        without a chat template shows why and cannot be sent to.
        """
        self._model = name
        if name is None:
            self._can_chat = False
            self.model_label.setText("Select a model in the list to chat with it.")
            self.problem_label.clear_error()
        else:
            template = self._service.chat_template_for(name)
            self._can_chat = template.can_chat
            self.model_label.setText(f"Chat with <b>{_escape(name)}</b> "
                                     f"<span style='color:{_MUTED_COLOR}'>(chat template: "
                                     f"{_escape(template.describe())})</span>")
            if template.can_chat:
                self.problem_label.clear_error()
            else:
                self.problem_label.show_error(
                    f"{name} cannot chat: {template.problem or 'it has no chat template'}. "
                    "Set \"chat_template\" for it under models in the config file.")
        self.input.setEnabled(self._can_chat)
        self.input.setPlaceholderText(_PLACEHOLDER if self._can_chat or name is None
                                      else "This model cannot chat")
        self._update_actions()

    def _update_actions(self) -> None:
        self.send_button.setEnabled(self.can_send)
        self.stop_button.setEnabled(self.busy)
        self.clear_button.setEnabled(not self.busy and bool(self.turns))
        for widget in (self.system_edit, self.temperature_spin, self.max_tokens_spin):
            widget.setEnabled(not self.busy)

    def temperature(self) -> float | None:
        value = self.temperature_spin.value()
        return None if value <= self.temperature_spin.minimum() else round(value, 2)

    def max_tokens(self) -> int | None:
        value = self.max_tokens_spin.value()
        return None if value <= 0 else value

    def history(self) -> list[dict[str, str]]:
        """The earlier questions and answers, as chat messages."""
        messages = []
        for turn in self.turns:
            if turn.in_history:
                messages += [{"role": "user", "content": turn.prompt},
                             {"role": "assistant", "content": turn.answer}]
        return messages

    # ---- actions -------------------------------------------------------------------

    def send(self) -> None:
        """Ask the question in the message box (a no-op when it cannot be sent now)."""
        if not self.can_send or self._model is None:
            return
        prompt = self.input.toPlainText().strip()
        turn = ChatTurn(self._model, prompt)
        messages = [*self.history(), {"role": "user", "content": prompt}]
        self.turns.append(turn)
        self.input.clear()
        self._write_question(turn)
        self._show_status(f"Waiting for {turn.model} (a model that is not loaded yet is "
                          "loaded first)…")
        coro = self._generate(turn, messages, self.system_edit.text().strip() or None,
                              self.temperature(), self.max_tokens())
        task = self._bridge.run(coro, f"chat with {turn.model}")
        if isinstance(task, asyncio.Task):
            self._task = task
            task.add_done_callback(lambda done: self._task_ended(turn, done))
        elif not turn.done:
            # No event loop to run on (the bridge said why and closed the coroutine).
            self._end(turn, "error", error="the app is not running its event loop")
        self._update_actions()

    def stop(self) -> None:
        """Stop the answer being written (the task's cancellation closes the stream)."""
        if self._task is not None:
            self._task.cancel()

    def clear(self) -> None:
        """Start a new conversation."""
        if self.busy:
            return
        self.turns.clear()
        self.transcript.clear()
        self._stream_kind = None
        self._update_actions()

    async def _generate(self, turn: ChatTurn, messages: list[dict[str, str]],
                        system: str | None, temperature: float | None,
                        max_tokens: int | None) -> None:
        # The stream always ends with a summary or an error; this is for one that did not.
        outcome, error = "error", "the answer ended without a word from the model"
        try:
            stream = self._service.chat_stream(turn.model, messages, system=system,
                                               temperature=temperature,
                                               max_tokens=max_tokens)
            async with contextlib.aclosing(stream) as events:
                async for event in events:
                    self._on_event(turn, event)
                    if isinstance(event, ChatSummary):
                        outcome, error = "done", ""
                    elif isinstance(event, ChatError):
                        outcome, error = "error", event.message
        except asyncio.CancelledError:
            outcome = "stopped"
            raise
        except Exception as exc:
            # Never a crash in the window: the message goes under the question instead.
            log.exception("chat with %s failed", turn.model)
            outcome, error = "error", str(exc) or type(exc).__name__
        finally:
            self._end(turn, outcome, error=error)

    def _show_status(self, text: str | None) -> None:
        self.status_label.setText(text or "")
        self.status_label.setVisible(bool(text))

    def _on_event(self, turn: ChatTurn, event: ChatEvent) -> None:
        self._show_status(None)
        match event:
            case TextDelta(text):
                turn.answer += text
                self._write_stream("answer", text)
                self.streamed.emit(text)
            case ReasoningDelta(text):
                turn.reasoning += text
                self._write_stream("reasoning", text)
            case ChatSummary():
                turn.stats = f"{event.model} · {event.describe()}"

    def _task_ended(self, turn: ChatTurn, task: asyncio.Task[Any]) -> None:
        # A task cancelled before its first step never runs _generate's `finally`.
        if not turn.done:
            self._end(turn, "stopped" if task.cancelled() else "error",
                      error="the answer could not be started")

    def _end(self, turn: ChatTurn, outcome: str, *, error: str = "") -> None:
        if turn.done:
            return
        turn.done = True
        self._show_status(None)
        turn.stopped = outcome == "stopped"
        turn.error = error if outcome == "error" else ""
        if outcome == "error":
            self._write_block(turn.error, self._format(ERROR_COLOR))
        elif turn.stopped:
            self._write_block(f"{turn.model} · stopped", self._format(_MUTED_COLOR, small=True))
        elif turn.stats:
            self._write_block(turn.stats, self._format(_MUTED_COLOR, small=True))
        self._stream_kind = None
        self._task = None
        self._update_actions()
        self.finished.emit(outcome)

    # ---- transcript ----------------------------------------------------------------

    def _format(self, color: str | None = None, *, bold: bool = False, italic: bool = False,
                small: bool = False) -> QTextCharFormat:
        fmt = QTextCharFormat()
        if color:
            fmt.setForeground(QColor(color))
        if bold:
            fmt.setFontWeight(QFont.Weight.Bold)
        fmt.setFontItalic(italic)
        if small:
            size = self.transcript.font().pointSizeF()
            if size > 0:
                fmt.setFontPointSize(size * 0.9)
        return fmt

    def _write_question(self, turn: ChatTurn) -> None:
        self._write_block("You", self._format(_USER_COLOR, bold=True),
                          spaced=bool(self.turns[:-1]))
        self._write_block(turn.prompt, self._format())
        self._write_block(turn.model, self._format(bold=True), spaced=True)
        self._stream_kind = None

    def _write_stream(self, kind: str, text: str) -> None:
        """Add streamed text; reasoning and answer each get their own paragraph."""
        if kind != self._stream_kind:
            self._stream_kind = kind
            fmt = (self._format(_MUTED_COLOR, italic=True) if kind == "reasoning"
                   else self._format())
            # Answers often open with a space or line break the transcript does not need.
            self._write_block(text.lstrip(), fmt)
            return
        self._append(text, None)

    def _write_block(self, text: str, fmt: QTextCharFormat, *, spaced: bool = False) -> None:
        cursor = self.transcript.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        if not self.transcript.document().isEmpty():
            cursor.insertBlock()
            if spaced:
                cursor.insertBlock()
        self._insert(cursor, text, fmt)

    def _append(self, text: str, fmt: QTextCharFormat | None) -> None:
        cursor = self.transcript.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        self._insert(cursor, text, fmt or cursor.charFormat())

    def _insert(self, cursor: QTextCursor, text: str, fmt: QTextCharFormat) -> None:
        bar = self.transcript.verticalScrollBar()
        follow = bar.value() >= bar.maximum() - 4  # the reader is at the end: stay there
        cursor.insertText(text, fmt)
        if follow:
            bar.setValue(bar.maximum())


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
