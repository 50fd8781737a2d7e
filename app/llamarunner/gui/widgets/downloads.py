"""The downloads panel: one row per pull with progress, speed and ETA; cancel, retry, resume."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Final

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from ...core.errors import LlamaRunnerError
from ...library.table import human_size
from ...service import Service
from ...store.download import JobState, PullJob, PullRecord
from ...store.names import parse_name
from ..windows._common import OK_COLOR, BridgeLike, ErrorLabel

log = logging.getLogger(__name__)

# The store publishes no events on the bus: the panel reads the jobs' counters this often.
POLL_MS: Final = 250
# Speed is measured over this many seconds, so one slow chunk does not swing the ETA.
RATE_WINDOW: Final = 5.0

# What a row can be in, as the buttons see it.
RUNNING, DONE, FAILED, CANCELLED, INTERRUPTED = (
    "running", "done", "failed", "cancelled", "interrupted")


class RateMeter:
    """Bytes per second over the last `window` seconds of (time, completed) samples."""

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self._window = window
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, now: float, completed: int) -> None:
        if self._samples and completed < self._samples[-1][1]:
            self._samples.clear()  # a retry started the layer over
        self._samples.append((now, completed))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self._window:
            self._samples.popleft()

    def rate(self) -> float | None:
        """None until two samples a moment apart exist (no speed to show yet)."""
        if len(self._samples) < 2:
            return None
        (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 - t0 >= 0.2 else None


def eta_text(seconds: float) -> str:
    """"12 s left", "4 min left", "1 h left", "1 h 5 min left"."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s left"
    minutes = round(whole / 60)
    if minutes < 60:
        return f"{minutes} min left"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest} min left" if rest else f"{hours} h left"


def progress_text(completed: int, total: int, rate: float | None) -> str:
    """"120 MB of 1.2 GB · 4.1 MB/s · 4 min left" (parts left out while unknown)."""
    if total <= 0:
        return "looking up the files…"
    parts = [f"{human_size(completed)} of {human_size(total)}"]
    if rate is not None and completed < total:
        if rate > 0:
            parts.append(f"{human_size(round(rate))}/s")
            parts.append(eta_text((total - completed) / rate))
        else:
            parts.append("stalled")
    return " · ".join(parts)


def percent(completed: int, total: int) -> int:
    return 0 if total <= 0 else min(100, completed * 100 // total)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class DownloadRow(QFrame):
    """One pull: its name, state, progress bar and the buttons that apply to it."""

    def __init__(self, full_name: str, insecure: bool, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.full_name = full_name
        self.insecure = insecure
        try:
            self.display = parse_name(full_name).display
        except LlamaRunnerError:
            self.display = full_name
        self.job: PullJob | None = None
        self.state = INTERRUPTED
        self._meter = RateMeter()

        self.name_label = QLabel(f"<b>{self.display}</b>")
        self.name_label.setTextFormat(Qt.TextFormat.RichText)
        self.status_label = QLabel()
        self.bar = QProgressBar()
        self.bar.setRange(0, 100)
        self.bar.setTextVisible(False)  # the percent is on the status line
        self.detail_label = QLabel()
        self.error = ErrorLabel()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the download; what is downloaded stays for Resume")
        self.retry_button = QPushButton("Retry")
        self.retry_button.setToolTip("Download again, from where the last try stopped")
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue the download from the part already here")

        head = QHBoxLayout()
        head.addWidget(self.name_label, 1)
        head.addWidget(self.status_label)
        line = QHBoxLayout()
        line.addWidget(self.bar, 1)
        for button in (self.cancel_button, self.retry_button, self.resume_button):
            line.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 6)
        layout.addLayout(head)
        layout.addLayout(line)
        layout.addWidget(self.detail_label)
        layout.addWidget(self.error)

    def attach(self, job: PullJob) -> None:
        self.job = job
        self.insecure = job.insecure
        self._meter = RateMeter()
        self.error.clear_error()
        self.update_view(time.monotonic())

    def update_view(self, now: float) -> str:
        """Show the job as it is now; returns the row's state."""
        job = self.job
        if job is None:
            self._show(INTERRUPTED, "interrupted", None,
                       "stopped before it finished (the app quit?); the part downloaded "
                       "so far is kept")
            return self.state
        completed, total = job.completed, job.total
        if job.state is JobState.RUNNING:
            self._meter.add(now, completed)
            self._show(RUNNING, f"{percent(completed, total)}%" if total else "starting…",
                       percent(completed, total) if total else None,
                       progress_text(completed, total, self._meter.rate()))
        elif job.state is JobState.SUCCEEDED:
            self._show(DONE, "done", 100,
                       f"{human_size(total)} downloaded; the model is in the library"
                       if total else "the model is in the library")
        elif job.state is JobState.CANCELLED:
            self._show(CANCELLED, "cancelled", percent(completed, total),
                       (f"{human_size(completed)} of {human_size(total)} kept for Resume"
                        if total else "nothing was downloaded yet"))
        else:
            self._show(FAILED, "failed", percent(completed, total),
                       f"{human_size(completed)} of {human_size(total)}" if total else "")
            self.error.show_error(job.error.message if job.error else "the download failed")
        return self.state

    def _show(self, state: str, status: str, value: int | None, detail: str) -> None:
        self.state = state
        self.status_label.setText(status)
        self.status_label.setStyleSheet(f"color: {OK_COLOR};" if state == DONE else "")
        if value is None:
            self.bar.setRange(0, 0)  # busy: nothing to measure yet
        else:
            self.bar.setRange(0, 100)
            self.bar.setValue(value)
        self.detail_label.setText(detail)
        self.cancel_button.setVisible(state == RUNNING)
        self.retry_button.setVisible(state == FAILED)
        self.resume_button.setVisible(state in (CANCELLED, INTERRUPTED))
        if state != FAILED:
            self.error.clear_error()


class DownloadsPanel(QWidget):
    """Every pull of this run (from the dialog, the APIs or the CLI) and the ones an earlier
    run left unfinished, newest first."""

    finished = Signal(str)  # the model's display name, once its pull succeeded
    active_changed = Signal(int)  # how many pulls are running

    def __init__(self, service: Service, bridge: BridgeLike,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._service = service
        self._bridge = bridge
        self._rows: dict[str, DownloadRow] = {}
        self._records_asked = False
        self._active = 0

        self.summary_label = QLabel()
        self.clear_button = QPushButton("Clear finished")
        self.clear_button.setToolTip("Remove the downloads that are done from this list")
        self.clear_button.clicked.connect(self.clear_finished)
        self.empty_label = QLabel("No downloads. Use “Get model…” to download a model from "
                                  "an Ollama registry or Hugging Face.")
        self.empty_label.setWordWrap(True)
        self._list = QWidget()
        self._list_layout = QVBoxLayout(self._list)
        self._list_layout.setContentsMargins(0, 0, 0, 0)
        self._list_layout.addWidget(self.empty_label)
        self._list_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(self._list)
        head = QHBoxLayout()
        head.addWidget(self.summary_label, 1)
        head.addWidget(self.clear_button)
        layout = QVBoxLayout(self)
        layout.addLayout(head)
        layout.addWidget(scroll, 1)

        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self.sync)
        self._timer.start()
        self.sync()

    # ---- reading -------------------------------------------------------------------

    def rows(self) -> list[DownloadRow]:
        """The rows, top to bottom."""
        return sorted(self._rows.values(), key=self._list_layout.indexOf)

    def row(self, name: str) -> DownloadRow | None:
        """The row of a model name in any spelling the store accepts."""
        try:
            key = parse_name(name).full.casefold()
        except LlamaRunnerError:
            return None
        return self._rows.get(key)

    @property
    def active(self) -> int:
        return self._active

    def set_polling(self, on: bool) -> None:
        """Read the jobs only while someone can see them (the window is shown)."""
        if on:
            self._timer.start()
            self.sync()
        else:
            self._timer.stop()

    # ---- updating ------------------------------------------------------------------

    def sync(self) -> None:
        """Pick up new pulls and show every row as it is now."""
        if not self._records_asked and _loop_running():
            # Once, on the first tick with a running loop (a window built outside one, as
            # in tests, would have its coroutine refused).
            self._records_asked = True
            self._bridge.run(self.load_interrupted(), "list unfinished downloads")
        for job in self._service.model_store.jobs():
            row = self._row_for(job.name.full, job.insecure)
            if row.job is not job and (row.job is None or job.started >= row.job.started):
                row.attach(job)
        now = time.monotonic()
        active = 0
        for row in self._rows.values():
            before = row.state
            after = row.update_view(now)
            if after == RUNNING:
                active += 1
            elif after == DONE and before == RUNNING:
                self.finished.emit(row.display)
        self.empty_label.setVisible(not self._rows)
        done = sum(1 for row in self._rows.values() if row.state == DONE)
        self.clear_button.setEnabled(done > 0)
        self.summary_label.setText(
            f"{active} downloading" if active else
            (f"{len(self._rows)} downloads" if self._rows else ""))
        if active != self._active:
            self._active = active
            self.active_changed.emit(active)

    async def load_interrupted(self) -> None:
        """Rows for the pulls an earlier run (or a failure) left resumable."""
        try:
            records: list[PullRecord] = await self._service.model_store.interrupted()
        except OSError as exc:
            log.warning("cannot list unfinished downloads: %s", exc)
            return
        for record in records:
            self._row_for(record.name, record.insecure)
        self.sync()

    def _row_for(self, full_name: str, insecure: bool) -> DownloadRow:
        key = full_name.casefold()
        row = self._rows.get(key)
        if row is None:
            row = DownloadRow(full_name, insecure, self._list)
            row.cancel_button.clicked.connect(lambda: self.cancel(key))
            row.retry_button.clicked.connect(lambda: self.resume(key))
            row.resume_button.clicked.connect(lambda: self.resume(key))
            self._rows[key] = row
            self._list_layout.insertWidget(0, row)  # newest first
            row.update_view(time.monotonic())
        return row

    # ---- actions -------------------------------------------------------------------

    def cancel(self, key: str) -> None:
        row = self._rows.get(key)
        if row is not None and row.job is not None:
            row.job.cancel()
            # The task ends on the loop's next turn; the next tick shows it cancelled.

    def resume(self, key: str) -> None:
        """Pull the row's name again: the partial files make it continue where it stopped."""
        row = self._rows.get(key)
        if row is None:
            return
        try:
            job = self._service.model_store.pull(row.full_name, insecure=row.insecure,
                                                 cancel_when_unwatched=False)
        except LlamaRunnerError as exc:
            row.error.show_error(exc.message)
            return
        row.attach(job)
        self.sync()

    def clear_finished(self) -> None:
        for key, row in list(self._rows.items()):
            if row.state == DONE:
                del self._rows[key]
                self._list_layout.removeWidget(row)
                row.deleteLater()
        self.sync()
