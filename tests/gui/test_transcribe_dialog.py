"""The "Transcribe file" dialog against a real Service and speech worker (Whisper tiny.en)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QMimeData, QPointF, QSize, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QGuiApplication
from PySide6.QtWidgets import QApplication, QFileDialog, QWidget
from tests.support.speech import HEARD_WORDS

from llamarunner.config import ConfigStore
from llamarunner.gui.bridge import ServiceBridge
from llamarunner.gui.windows._common import ERROR_COLOR
from llamarunner.gui.windows.library import LibraryWindow
from llamarunner.gui.windows.transcribe import TranscribeDialog, subtitles
from llamarunner.service import Service
from llamarunner.service.transcribe import TranscriptDelta

NO_SOURCES = {"ollama": {"enabled": False}, "lmstudio": {"enabled": False}}


class Transcriber:
    """A started Service, the library window and its Transcribe dialog on the qasync loop."""

    def __init__(self, driver: Any, service: Service, window: LibraryWindow) -> None:
        self.driver = driver
        self.service = service
        self.window = window
        window.select("whisper")
        assert window.transcribe_button.isEnabled()
        self.inside(window.transcribe_button.click)
        dialog = window.transcribe_dialog
        assert dialog is not None and dialog.isVisible() and dialog.model == "whisper"
        self.dialog: TranscribeDialog = dialog
        self.outcomes: list[str] = []
        dialog.finished.connect(self.outcomes.append)

    def inside(self, action: Callable[[], object]) -> None:
        """Run a UI action inside the running loop, as in the app (the bridge needs it)."""

        async def act() -> None:
            action()

        self.driver.run(act())

    def transcribe(self, audio: Path) -> None:
        self.dialog.set_file(audio)
        self.inside(self.dialog.transcribe_button.click)

    def wait(self, count: int = 1) -> str:
        self.driver.until(lambda: len(self.outcomes) >= count, timeout=90,
                          message="the transcription to end")
        return self.outcomes[count - 1]

    def heard(self) -> list[str]:
        text = self.dialog.text.lower()
        return [word for word in HEARD_WORDS if word in text]


@pytest.fixture
def transcriber(driver: Any, tiny_config: Callable[..., Path], tiny_model: Path,
                whisper_model: Path, tmp_path: Path) -> Iterator[Transcriber]:
    config = tiny_config(
        {"tiny": {"path": str(tiny_model), "args": {"ctx-size": 256}},
         "whisper": {"path": str(whisper_model)}},
        model_dirs=[str(tmp_path / "no-models")], sources=NO_SOURCES)
    service = Service(ConfigStore(config), runner_log_dir=tmp_path / "runners")
    assert not driver.run(service.start())
    bridge = ServiceBridge(service, capture_logs=False)
    window = LibraryWindow(service, bridge)
    window.resize(QSize(1100, 700))
    window.show()
    try:
        yield Transcriber(driver, service, window)
    finally:
        if window.transcribe_dialog is not None:
            window.transcribe_dialog.close()
        window.hide()
        driver.run(service.stop())
        bridge.close()


def drop(widget: QWidget, path: Path) -> bool:
    """Drag a file from a file manager onto `widget`; whether the drop was taken."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    where = QPointF(widget.rect().center())
    enter = QDragEnterEvent(where.toPoint(), Qt.DropAction.CopyAction, mime,
                            Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)
    if not enter.isAccepted():
        return False
    dropped = QDropEvent(where, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                         Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, dropped)
    return dropped.isAccepted()


def test_a_dropped_recording_is_transcribed_as_it_is_heard(
        transcriber: Transcriber, speech_wav: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        screenshot: Callable[[QWidget, str], Path]) -> None:
    dialog = transcriber.dialog
    pieces: list[str] = []
    dialog.streamed.connect(pieces.append)
    assert "whisper" in dialog.model_label.text() and "English" in dialog.model_label.text()
    assert dialog.language_combo.isHidden()  # an English-only model knows one language
    assert not dialog.transcribe_button.isEnabled()  # no file yet
    assert not dialog.copy_button.isEnabled() and not dialog.save_button.isEnabled()

    assert drop(dialog, speech_wav)
    assert dialog.file_edit.text() == str(speech_wav)
    transcriber.inside(dialog.transcribe_button.click)
    # The model is not loaded yet: it is loaded first, as for an API request.
    assert dialog.busy and dialog.stop_button.isEnabled()
    assert not dialog.transcribe_button.isEnabled() and not dialog.file_edit.isEnabled()
    assert dialog.status_label.text() == "Loading whisper…"
    assert transcriber.wait() == "done"

    assert len(transcriber.heard()) >= 2, dialog.text
    assert pieces and "".join(pieces).strip() == dialog.text
    assert dialog.transcript is not None and dialog.transcript.text.strip() == dialog.text
    status = dialog.status_label.text()
    assert status.startswith("Done: ") and "of audio transcribed in" in status, status
    assert ERROR_COLOR not in dialog.status_label.styleSheet()
    assert not dialog.busy and not dialog.stop_button.isEnabled()
    assert dialog.copy_button.isEnabled() and dialog.save_button.isEnabled()
    runner = transcriber.service.manager.runner("whisper")
    assert runner is not None and runner.state.value == "ready" and runner.inflight == 0
    transcriber.driver.sleep(0.1)  # pending layout and paint events, for the picture
    assert screenshot(dialog, "transcribe").stat().st_size > 0

    QGuiApplication.clipboard().clear()
    transcriber.inside(dialog.copy_button.click)
    assert QGuiApplication.clipboard().text() == dialog.text

    asked: list[str] = []

    def save_as(_parent: QWidget, _title: str, suggested: str, _filter: str
                ) -> tuple[str, str]:
        asked.append(suggested)
        return str(tmp_path / "subtitles"), "SubRip subtitles (*.srt)"

    monkeypatch.setattr(QFileDialog, "getSaveFileName", save_as)
    transcriber.inside(dialog.save_button.click)
    assert asked == [str(speech_wav.with_suffix(".srt"))]  # next to the recording
    saved = tmp_path / "subtitles.srt"  # the suffix is added when none was typed
    srt = saved.read_text(encoding="utf-8")
    assert srt.startswith("1\n00:00:00,000 --> "), srt
    assert sum(word in srt.lower() for word in HEARD_WORDS) >= 2, srt
    assert dialog.status_label.text() == f"Saved {saved}."


def test_a_file_that_is_not_audio_shows_the_error(transcriber: Transcriber,
                                                  speech_wav: Path, tmp_path: Path) -> None:
    dialog = transcriber.dialog
    notes = tmp_path / "notes.txt"
    notes.write_text("not a recording\n" * 50)
    transcriber.transcribe(notes)
    assert transcriber.wait() == "error"
    assert dialog.error and dialog.status_label.text() == dialog.error
    assert ERROR_COLOR in dialog.status_label.styleSheet()
    assert dialog.transcript is None and not dialog.save_button.isEnabled()
    assert not dialog.busy and dialog.transcribe_button.isEnabled()

    # The dialog, and the model, stay usable.
    transcriber.transcribe(speech_wav)
    assert transcriber.wait(2) == "done"
    assert len(transcriber.heard()) >= 2, dialog.text
    assert ERROR_COLOR not in dialog.status_label.styleSheet()


def test_a_missing_file_is_refused_before_anything_runs(
        transcriber: Transcriber, tmp_path: Path, speech_wav: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    dialog = transcriber.dialog
    offered: list[str] = []

    def choose(_parent: QWidget, _title: str, _start: str, filters: str) -> tuple[str, str]:
        offered.append(filters)
        return str(tmp_path / "gone.wav"), ""

    monkeypatch.setattr(QFileDialog, "getOpenFileName", choose)
    transcriber.inside(dialog.browse_button.click)
    assert "*.wav" in offered[0] and "*.flac" in offered[0] and "*.m4a" in offered[0]
    assert dialog.file_edit.text() == str(tmp_path / "gone.wav")
    transcriber.inside(dialog.transcribe_button.click)
    assert not dialog.busy and transcriber.outcomes == []
    assert "is not a file" in dialog.status_label.text()
    assert ERROR_COLOR in dialog.status_label.styleSheet()
    runner = transcriber.service.manager.runner("whisper")
    assert runner is None or runner.state.value == "stopped"  # nothing was loaded for it


def test_stop_and_closing_the_dialog_cancel_the_transcription(
        transcriber: Transcriber, speech_wav: Path) -> None:
    dialog = transcriber.dialog
    # Stop while the model loads.
    transcriber.transcribe(speech_wav)
    assert dialog.busy
    transcriber.inside(dialog.stop_button.click)
    assert transcriber.wait() == "stopped"
    assert not dialog.busy and dialog.status_label.text().startswith("Stopped")

    # Closing the dialog mid-way cancels too: nothing runs on for a dialog put away.
    transcriber.transcribe(speech_wav)
    assert dialog.busy
    transcriber.inside(dialog.close)
    assert transcriber.wait(2) == "stopped"
    assert not dialog.isVisible() and not dialog.busy

    runner = transcriber.service.manager.runner("whisper")
    transcriber.driver.until(lambda: runner is None or runner.inflight == 0, timeout=30,
                             message="the cancelled request to let go of the worker")
    # Opened again, it works as before.
    transcriber.inside(transcriber.window.transcribe_button.click)
    assert transcriber.window.transcribe_dialog is dialog and dialog.isVisible()
    transcriber.transcribe(speech_wav)
    assert transcriber.wait(3) == "done"
    assert len(transcriber.heard()) >= 2, dialog.text


# ---- subtitles from the stream (pure) ------------------------------------------------


def test_subtitles_use_the_segment_times_the_worker_sends() -> None:
    deltas = [TranscriptDelta("Hello world.", 0.0, 1.5),
              TranscriptDelta(" The quick brown fox.", 1.5, 4.25)]
    document = subtitles(deltas, text="Hello world. The quick brown fox.", duration=4.5,
                         language="en")
    assert [(s.id, s.start, s.end, s.text) for s in document.segments] == [
        (0, 0.0, 1.5, "Hello world."), (1, 1.5, 4.25, " The quick brown fox.")]
    assert (document.text, document.language, document.duration, document.task) == (
        "Hello world. The quick brown fox.", "en", 4.5, "transcribe")


def test_subtitles_without_times_follow_on_and_end_with_the_audio() -> None:
    deltas = [TranscriptDelta("One.", None, None), TranscriptDelta(" Two.", None, None)]
    document = subtitles(deltas, text="One. Two.", duration=6.0)
    assert [(s.start, s.end) for s in document.segments] == [(0.0, 0.0), (0.0, 6.0)]
    assert document.language == ""
    # No segments at all: the whole text is one cue over the whole recording.
    [whole] = subtitles([], text="Just this.", duration=3.0).segments
    assert (whole.start, whole.end, whole.text) == (0.0, 3.0, "Just this.")
    assert subtitles([], text="  ").segments == ()
