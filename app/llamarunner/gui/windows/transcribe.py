"""The "Transcribe file" dialog: a recording in, its text streaming out, Copy, Save as .srt."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QGuiApplication, QTextCursor
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ...audio.formats import Segment, Transcription, render_srt
from ...audio.languages import LANGUAGES
from ...core.files import atomic_write
from ...runner.manager import RunnerManager
from ...service.transcribe import (
    TranscriptDelta,
    TranscriptDone,
    TranscriptError,
    TranscriptEvent,
)
from ._common import ERROR_COLOR, BridgeLike

log = logging.getLogger(__name__)

# What the file picker offers; the worker decodes whatever its audio library can read.
AUDIO_SUFFIXES: Final = ("wav", "mp3", "m4a", "ogg", "webm", "flac")
AUDIO_FILTER: Final = (f"Audio files ({' '.join(f'*.{s}' for s in AUDIO_SUFFIXES)});;"
                       "All files (*)")
SRT_FILTER: Final = "SubRip subtitles (*.srt);;All files (*)"
_MUTED_COLOR: Final = "#6b6b6b"
_OK_STYLE: Final = ""
_PLACEHOLDER: Final = ("A recording: Choose… one, or drop it here "
                       f"({', '.join(AUDIO_SUFFIXES)})")


class TranscribeService(Protocol):
    """What the dialog uses of the Service."""

    @property
    def manager(self) -> RunnerManager: ...

    def transcribe_stream(
        self, model: str, audio: Path, *, language: str | None = None,
    ) -> AsyncGenerator[TranscriptEvent, None]: ...


def subtitles(deltas: Sequence[TranscriptDelta], *, text: str = "",
              duration: float | None = None, language: str = "") -> Transcription:
    """The transcript as a Transcription for render_srt, one cue per decoded segment.

    A segment whose times the worker did not send starts where the one before it ended
    (0 for the first) and ends where it starts; the last one ends with the audio. With no
    segments at all, the whole `text` becomes one cue over the whole audio.
    """
    segments: list[Segment] = []
    previous_end = 0.0
    for number, delta in enumerate(deltas):
        start = delta.start if delta.start is not None else previous_end
        end = delta.end if delta.end is not None else start
        if delta.end is None and number == len(deltas) - 1 and duration:
            end = max(start, duration)
        segments.append(Segment(number, 0, start, end, delta.text, (), 0.0, 0.0, 0.0, 0.0))
        previous_end = end
    if not segments and text.strip():
        segments.append(Segment(0, 0, 0.0, duration or 0.0, text, (), 0.0, 0.0, 0.0, 0.0))
    whole = text.strip() or "".join(delta.text for delta in deltas).strip()
    length = duration if duration is not None else previous_end
    return Transcription(whole, language, length, "transcribe", tuple(segments))


def _seconds(value: float) -> str:
    return f"{value:.1f} s"


class TranscribeDialog(QDialog):
    """Transcribe one recording with a speech-to-text model, the text appearing as it is
    heard.

    The file goes through Service.transcribe_stream, as an API request would (the model is
    loaded when needed and its TTL applies). Stop, or closing the dialog, cancels the task,
    which closes the connection to the speech worker so it stops at its next segment.
    Non-modal: a nested exec() loop would stall the APIs while it is open.
    """

    finished = Signal(str)  # "done", "error" or "stopped", when a transcription has ended
    streamed = Signal(str)  # each decoded segment's text as it arrives

    def __init__(self, service: TranscribeService, bridge: BridgeLike,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Transcribe a file")
        self.setMinimumSize(560, 380)
        self.resize(680, 480)
        self.setAcceptDrops(True)
        self._service = service
        self._bridge = bridge
        self._model: str | None = None
        self._multilingual = False
        self._task: asyncio.Task[Any] | None = None
        self._running: str | None = None  # the model of the transcription in progress
        self._started = 0.0
        self._ended = True  # whether the last transcription has reported its end
        self.audio: Path | None = None  # the file of the last transcription
        self.deltas: list[TranscriptDelta] = []
        self.transcript: TranscriptDone | None = None  # the end of the last one, if done
        self.error = ""

        self.model_label = QLabel()
        self.model_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.file_edit = QLineEdit()
        self.file_edit.setPlaceholderText(_PLACEHOLDER)
        self.file_edit.setClearButtonEnabled(True)
        self.browse_button = QPushButton("Choose…")
        self.browse_button.setToolTip("Pick a recording to transcribe")
        self.language_label = QLabel("Language:")
        self.language_combo = QComboBox()
        self.language_combo.addItem("Detect it", None)
        for code, name in sorted(LANGUAGES.items(), key=lambda item: item[1]):
            self.language_combo.addItem(name.title(), code)
        self.language_combo.setToolTip("The language spoken; a multilingual model detects it "
                                       "from the first seconds when left to detect it")
        self.transcribe_button = QPushButton("Transcribe")
        self.transcribe_button.setDefault(True)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop transcribing; the text so far stays")

        self.text_view = QPlainTextEdit()
        self.text_view.setReadOnly(True)
        self.text_view.setPlaceholderText("The text appears here as the model hears it.")
        # Drops anywhere in the dialog pick the file, the text view included.
        self.text_view.setAcceptDrops(False)
        self.text_view.viewport().setAcceptDrops(False)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the text to the clipboard")
        self.save_button = QPushButton("Save as .srt…")
        self.save_button.setToolTip("Save the text as subtitles, one cue per segment heard")
        self.close_button = QPushButton("Close")

        grid = QGridLayout()
        grid.addWidget(QLabel("File:"), 0, 0)
        grid.addWidget(self.file_edit, 0, 1)
        grid.addWidget(self.browse_button, 0, 2)
        grid.addWidget(self.language_label, 1, 0)
        grid.addWidget(self.language_combo, 1, 1, 1, 2)
        grid.setColumnStretch(1, 1)
        run = QHBoxLayout()
        run.addWidget(self.transcribe_button)
        run.addWidget(self.stop_button)
        run.addStretch(1)
        bottom = QHBoxLayout()
        bottom.addWidget(self.copy_button)
        bottom.addWidget(self.save_button)
        bottom.addStretch(1)
        bottom.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.model_label)
        layout.addLayout(grid)
        layout.addLayout(run)
        layout.addWidget(self.text_view, 1)
        layout.addWidget(self.status_label)
        layout.addLayout(bottom)

        self.browse_button.clicked.connect(self.choose_file)
        self.file_edit.textChanged.connect(self._update_actions)
        self.file_edit.returnPressed.connect(self.transcribe)
        self.transcribe_button.clicked.connect(self.transcribe)
        self.stop_button.clicked.connect(self.stop)
        self.copy_button.clicked.connect(self.copy_text)
        self.save_button.clicked.connect(self.save_srt)
        self.close_button.clicked.connect(self.reject)
        bridge.runner_state_changed.connect(self._on_runner_state)
        self.set_model(None)

    # ---- state ---------------------------------------------------------------------

    @property
    def model(self) -> str | None:
        return self._model

    @property
    def busy(self) -> bool:
        return self._task is not None

    @property
    def can_transcribe(self) -> bool:
        return self._model is not None and not self.busy and bool(self.file_edit.text().strip())

    @property
    def text(self) -> str:
        """The transcript as shown."""
        return self.text_view.toPlainText()

    def set_model(self, name: str | None, *, multilingual: bool = False) -> None:
        """Transcribe with `name` from the next file on (one in progress keeps its model)."""
        self._model = name
        self._multilingual = multilingual
        if name is None:
            self.model_label.setText("Select a speech-to-text model in the library.")
        else:
            languages = "multilingual" if multilingual else "English"
            self.model_label.setText(
                f"Transcribe with <b>{_escape(name)}</b> <span style='color:{_MUTED_COLOR}'>"
                f"(speech to text, {languages})</span>")
        # Only a multilingual model can be told the language; English-only models know one.
        self.language_label.setVisible(multilingual)
        self.language_combo.setVisible(multilingual)
        if not multilingual:
            self.language_combo.setCurrentIndex(0)
        self._update_actions()

    def set_file(self, path: str | Path) -> None:
        self.file_edit.setText(str(path))

    def language(self) -> str | None:
        """The language code picked, or None to let the model detect it."""
        code = self.language_combo.currentData() if self._multilingual else None
        return code if isinstance(code, str) else None

    def _update_actions(self, *_args: object) -> None:
        self.transcribe_button.setEnabled(self.can_transcribe)
        self.stop_button.setEnabled(self.busy)
        for widget in (self.file_edit, self.browse_button, self.language_combo):
            widget.setEnabled(not self.busy)
        self.copy_button.setEnabled(bool(self.text.strip()))
        self.save_button.setEnabled(self.transcript is not None and not self.busy
                                    and bool(self.transcript.text.strip() or self.deltas))

    # ---- actions -------------------------------------------------------------------

    def choose_file(self) -> None:
        current = self.file_edit.text().strip()
        start = str(Path(current).expanduser().parent) if current else str(Path.home())
        path, _ = QFileDialog.getOpenFileName(self, "Choose a recording", start, AUDIO_FILTER)
        if path:
            self.set_file(path)

    def transcribe(self) -> None:
        """Transcribe the chosen file (a no-op when it cannot start now)."""
        if not self.can_transcribe or self._model is None:
            return
        audio = Path(self.file_edit.text().strip()).expanduser()
        if not audio.is_file():
            self._show_status(f"{audio} is not a file: choose a recording to transcribe.",
                              error=True)
            return
        model = self._running = self._model
        self.audio = audio
        self.deltas = []
        self.transcript = None
        self.error = ""
        self._ended = False
        self.text_view.clear()
        self._started = time.monotonic()
        if self._is_ready(model):
            self._show_status(f"Transcribing {audio.name}…")
        else:
            self._show_status(f"Loading {model}…", muted=True)
        task = self._bridge.run(self._transcribe(model, audio, self.language()),
                                f"transcribe {audio.name}")
        if isinstance(task, asyncio.Task):
            self._task = task
            task.add_done_callback(self._task_ended)
        elif not self._ended:
            # No event loop to run on (the bridge said why and closed the coroutine).
            self._end("error", error="the app is not running its event loop")
        self._update_actions()

    def stop(self) -> None:
        """Stop the transcription (the task's cancellation closes the stream)."""
        if self._task is not None:
            self._task.cancel()

    def copy_text(self) -> None:
        text = self.text.strip()
        if text:
            QGuiApplication.clipboard().setText(text)
            self._show_status("Copied the text to the clipboard.")

    def save_srt(self) -> None:
        """Ask where, then write the transcript as SubRip subtitles (atomically)."""
        done = self.transcript
        if done is None or self.busy:
            return
        suggested = (self.audio.with_suffix(".srt") if self.audio is not None
                     else Path.home() / "transcript.srt")
        chosen, _ = QFileDialog.getSaveFileName(self, "Save as subtitles", str(suggested),
                                                SRT_FILTER)
        if not chosen:
            return
        target = Path(chosen)
        if not target.suffix:
            target = target.with_suffix(".srt")
        language = self.language() or ("" if self._multilingual else "en")
        document = subtitles(self.deltas, text=done.text, duration=done.audio_seconds,
                             language=language)
        try:
            atomic_write(target, render_srt(document).encode("utf-8"))
        except OSError as exc:
            self._show_status(f"Could not save {target}: {exc.strerror or exc}", error=True)
            return
        self._show_status(f"Saved {target}.")

    def done(self, result: int) -> None:
        # Close, Escape and the window's close button all end here: nothing keeps running
        # for a dialog the user has put away.
        self.stop()
        super().done(result)

    # ---- the transcription -----------------------------------------------------------

    async def _transcribe(self, model: str, audio: Path, language: str | None) -> None:
        # The stream always ends with Done or an error; this is for one that did not.
        outcome, error = "error", "the transcription ended without a word from the model"
        try:
            stream = self._service.transcribe_stream(model, audio, language=language)
            async with contextlib.aclosing(stream) as events:
                async for event in events:
                    self._on_event(event)
                    if isinstance(event, TranscriptDone):
                        outcome, error = "done", ""
                    elif isinstance(event, TranscriptError):
                        outcome, error = "error", event.message
        except asyncio.CancelledError:
            outcome = "stopped"
            raise
        except Exception as exc:
            # Never a crash in the dialog: the message goes to the status line instead.
            log.exception("transcribing %s with %s failed", audio, model)
            outcome, error = "error", str(exc) or type(exc).__name__
        finally:
            self._end(outcome, error=error)

    def _on_event(self, event: TranscriptEvent) -> None:
        match event:
            case TranscriptDelta(text):
                self.deltas.append(event)
                self._append(text.lstrip() if len(self.deltas) == 1 else text)
                heard = f": {_seconds(event.end)} of audio so far" if event.end else ""
                self._show_status(f"Transcribing {self._file_name()}{heard}…")
                self.streamed.emit(text)
            case TranscriptDone():
                self.transcript = event
                # The worker's whole text is the reference (a stream may carry no deltas).
                if event.text.strip() and event.text.strip() != self.text.strip():
                    self.text_view.setPlainText(event.text.strip())

    def _task_ended(self, task: asyncio.Task[Any]) -> None:
        # A task cancelled before its first step never runs _transcribe's `finally`.
        if not self._ended:
            self._end("stopped" if task.cancelled() else "error",
                      error="the transcription could not be started")

    def _end(self, outcome: str, *, error: str = "") -> None:
        if self._ended:
            return
        self._ended = True
        self._task = None
        self._running = None
        took = time.monotonic() - self._started
        if outcome == "done" and self.transcript is not None:
            self._show_status(self._summary(self.transcript, took))
        elif outcome == "error":
            self.error = error
            self.transcript = None
            self._show_status(error, error=True)
        else:
            self._show_status("Stopped; the text so far stays.", muted=True)
        self._update_actions()
        self.finished.emit(outcome)

    def _summary(self, done: TranscriptDone, took: float) -> str:
        audio = (f"{_seconds(done.audio_seconds)} of audio"
                 if done.audio_seconds is not None else self._file_name())
        loading = (f" ({_seconds(done.load_seconds)} of it loading {done.model})"
                   if done.load_seconds >= 0.05 else "")
        return f"Done: {audio} transcribed in {_seconds(took)}{loading}."

    def _on_runner_state(self, name: str, state: str, _reason: str) -> None:
        # Loading ends when the worker is ready; until the first words, say what runs now.
        if name == self._running and state == "ready" and not self.deltas:
            self._show_status(f"Transcribing {self._file_name()}…")

    def _is_ready(self, model: str) -> bool:
        try:
            runners = self._service.manager.snapshot()
        except AssertionError:  # the Service is not started
            return False
        return any(info.name == model and info.state == "ready" for info in runners)

    def _file_name(self) -> str:
        return self.audio.name if self.audio is not None else "the file"

    # ---- view --------------------------------------------------------------------------

    def _show_status(self, text: str, *, error: bool = False, muted: bool = False) -> None:
        self.status_label.setStyleSheet(f"color: {ERROR_COLOR};" if error
                                        else f"color: {_MUTED_COLOR};" if muted else _OK_STYLE)
        self.status_label.setText(text)

    def _append(self, text: str) -> None:
        bar = self.text_view.verticalScrollBar()
        follow = bar.value() >= bar.maximum() - 4  # the reader is at the end: stay there
        cursor = self.text_view.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(text)
        if follow:
            bar.setValue(bar.maximum())
        self.copy_button.setEnabled(True)

    # ---- drag and drop -------------------------------------------------------------

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if not self.busy and _dropped_file(event) is not None:
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        path = None if self.busy else _dropped_file(event)
        if path is None:
            event.ignore()
            return
        event.acceptProposedAction()
        self.set_file(path)
        self._show_status(f"{Path(path).name}: press Transcribe.", muted=True)


def _dropped_file(event: QDropEvent | QDragEnterEvent) -> str | None:
    """The first local file a drag carries, or None."""
    mime = event.mimeData()
    if mime is None or not mime.hasUrls():
        return None
    for url in mime.urls():
        if url.isLocalFile():
            return url.toLocalFile()
    return None


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
