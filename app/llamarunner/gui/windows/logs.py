"""The logs window: the app's log and one live tab per runner, batched so a fast llama-server
cannot freeze the UI.
"""

from __future__ import annotations

import collections
import re
from pathlib import Path
from typing import Final

from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ...core.files import atomic_write
from ...service import Service
from ..models.log_model import (
    DEBUG,
    DEFAULT_MAX_LINES,
    ERROR,
    INFO,
    WARNING,
    LogEntry,
    LogFilterModel,
    LogModel,
    level_from_name,
    llama_line_level,
)
from ._common import ERROR_COLOR, BridgeLike, ToolWindow, monospace_font

APP_TAB: Final = "App"
# Lines are collected and shown at most this often: one model update per tick instead of
# one per line, which is what keeps a llama-server printing thousands of lines a second
# from starving the event loop (and with it the proxies, which share the thread).
FLUSH_INTERVAL_MS: Final = 100
PREFILL_LINES: Final = 500
_LEVEL_CHOICES: Final = (("DEBUG", DEBUG), ("INFO", INFO), ("WARNING", WARNING),
                         ("ERROR", ERROR))


class LogPane(QWidget):
    """One log: a capped model, its filter, and the controls that act on it.

    New lines wait in `pending` until the window's flush tick; while paused they keep
    waiting there (the newest `max_lines` of them) and the pane says how many came in.
    """

    def __init__(self, title: str, *, max_lines: int = DEFAULT_MAX_LINES,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.model = LogModel(max_lines, self)
        self.proxy = LogFilterModel(self)
        self.proxy.setSourceModel(self.model)
        self._pending: collections.deque[LogEntry] = collections.deque(maxlen=max_lines)
        self._pending_count = 0  # lines received while paused, dropped ones included

        self.view = QListView()
        self.view.setModel(self.proxy)
        # Every row one line high: lets the view skip measuring thousands of rows.
        self.view.setUniformItemSizes(True)
        self.view.setFont(monospace_font())
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.view.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)

        self.level_combo = QComboBox()
        for label, level in _LEVEL_CHOICES:
            self.level_combo.addItem(label, level)
        self.level_combo.setToolTip("Show lines at this level and above")
        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("Search (matches are highlighted)")
        self.search_edit.setClearButtonEnabled(True)
        self.only_matching = QCheckBox("Only matching")
        self.pause_button = QPushButton("Pause")
        self.pause_button.setCheckable(True)
        self.pause_button.setToolTip("Stop scrolling; new lines are kept and shown on resume")
        self.pending_label = QLabel()
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the selected lines, or every shown line")
        self.save_button = QPushButton("Save…")
        self.clear_button = QPushButton("Clear")
        self.message_label = QLabel()
        self.message_label.setWordWrap(True)
        self.message_label.setVisible(False)

        bar = QHBoxLayout()
        bar.addWidget(QLabel("Level:"))
        bar.addWidget(self.level_combo)
        bar.addWidget(self.search_edit, 1)
        bar.addWidget(self.only_matching)
        bar.addWidget(self.pause_button)
        bar.addWidget(self.pending_label)
        bar.addWidget(self.copy_button)
        bar.addWidget(self.save_button)
        bar.addWidget(self.clear_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(bar)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.message_label)

        self.level_combo.currentIndexChanged.connect(self._on_level)
        self.search_edit.textChanged.connect(self.proxy.set_search)
        self.only_matching.toggled.connect(self.proxy.set_only_matching)
        self.pause_button.toggled.connect(self._on_pause)
        self.copy_button.clicked.connect(self.copy)
        self.save_button.clicked.connect(self.save)
        self.clear_button.clicked.connect(self.clear)

    @property
    def paused(self) -> bool:
        return self.pause_button.isChecked()

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def last_pending(self) -> LogEntry | None:
        return self._pending[-1] if self._pending else None

    def add(self, entry: LogEntry) -> None:
        """Queue a line; it shows at the next flush (cheap: called once per line)."""
        self._pending.append(entry)
        if self.paused:
            self._pending_count += 1

    def flush(self) -> None:
        """Move the queued lines into the view in one batch, unless paused."""
        if self.paused:
            self.pending_label.setText(f"{self._pending_count:,} new lines")
            return
        if not self._pending:
            return
        bar = self.view.verticalScrollBar()
        # Follow the tail only when the user was at it; someone reading older lines keeps
        # their place.
        follow = bar.value() >= bar.maximum() - 4
        batch = list(self._pending)
        self._pending.clear()
        self.model.append(batch)
        if follow:
            self.view.scrollToBottom()

    def _on_pause(self, paused: bool) -> None:
        self.pause_button.setText("Resume" if paused else "Pause")
        if paused:
            self._pending_count = len(self._pending)
            self.pending_label.setText(f"{self._pending_count:,} new lines")
        else:
            self._pending_count = 0
            self.pending_label.clear()
            self.flush()

    def _on_level(self, _index: int) -> None:
        level = self.level_combo.currentData()
        self.proxy.set_min_level(int(level) if level is not None else DEBUG)

    def set_min_level(self, name: str) -> None:
        self.level_combo.setCurrentIndex(self.level_combo.findText(name))

    def selected_or_shown_lines(self) -> list[str]:
        rows = sorted(index.row() for index in self.view.selectionModel().selectedIndexes())
        if rows:
            return [str(self.proxy.index(row, 0).data()) for row in rows]
        return self.proxy.visible_lines()

    def copy(self) -> None:
        lines = self.selected_or_shown_lines()
        QGuiApplication.clipboard().setText("\n".join(lines) + ("\n" if lines else ""))
        self._say(f"Copied {len(lines):,} lines.")

    def save(self) -> None:
        """Write the lines shown (filters applied: what you see is what you save)."""
        default = Path.home() / f"{_file_stem(self.title)}.log"
        path, _filter = QFileDialog.getSaveFileName(
            self, f"Save the {self.title} log", str(default),
            "Log files (*.log *.txt);;All files (*)")
        if not path:
            return
        lines = self.proxy.visible_lines()
        try:
            atomic_write(Path(path), "".join(line + "\n" for line in lines).encode("utf-8"))
        except OSError as exc:
            self._say(f"Could not save {path}: {exc.strerror or exc}", error=True)
            return
        self._say(f"Saved {len(lines):,} lines to {path}.")

    def clear(self) -> None:
        self._pending.clear()
        self._pending_count = 0
        self.model.clear()
        if self.paused:
            self.pending_label.setText("0 new lines")

    def _say(self, text: str, *, error: bool = False) -> None:
        self.message_label.setStyleSheet(f"color: {ERROR_COLOR};" if error else "")
        self.message_label.setText(text)
        self.message_label.setVisible(True)


def _file_stem(title: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", title).strip("_") or "log"


class LogsWindow(ToolWindow):
    """An "App" tab fed by the bridge's app_log, and a tab per runner, created when the
    runner first writes (prefilled with what it wrote before the window saw it).
    """

    def __init__(self, service: Service, bridge: BridgeLike, parent: QWidget | None = None,
                 *, max_lines: int = DEFAULT_MAX_LINES,
                 flush_interval_ms: int = FLUSH_INTERVAL_MS) -> None:
        super().__init__("logs", "Logs", QSize(1100, 640), parent)
        self._service = service
        self._max_lines = max_lines
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.app_pane = LogPane(APP_TAB, max_lines=max_lines)
        self.tabs.addTab(self.app_pane, APP_TAB)
        self._runner_panes: dict[str, LogPane] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.tabs)

        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.setInterval(flush_interval_ms)
        self._flush_timer.timeout.connect(self.flush)

        bridge.app_log.connect(self.add_app_line)
        bridge.runner_log_line.connect(self.add_runner_line)
        for name in self._runners_with_output():
            self._create_runner_pane(name)
        self._schedule_flush()

    # ---- feeding -------------------------------------------------------------------

    def add_app_line(self, level: str, line: str) -> None:
        number = level_from_name(level)
        # A traceback is one record of many lines; a row shows one line.
        for part in line.splitlines() or [""]:
            self.app_pane.add(LogEntry(number, part))
        self._schedule_flush()

    def add_runner_line(self, model: str, line: str) -> None:
        pane = self._runner_panes.get(model)
        if pane is None:
            pane = self._create_runner_pane(model)
            last = pane.last_pending()
            if last is not None and last.text == line:
                # The runner's buffer already had this line when the prefill copied it.
                self._schedule_flush()
                return
        pane.add(LogEntry(llama_line_level(line), line))
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_timer.isActive():
            self._flush_timer.start()

    def flush(self) -> None:
        for pane in self.panes():
            pane.flush()

    # ---- tabs ----------------------------------------------------------------------

    def panes(self) -> list[LogPane]:
        return [self.app_pane, *self._runner_panes.values()]

    def pane(self, name: str) -> LogPane | None:
        """The App pane (name "App") or a runner's pane."""
        return self.app_pane if name == APP_TAB else self._runner_panes.get(name)

    def show_runner(self, name: str) -> None:
        """Bring a runner's tab forward (the tray's "show log" for one model)."""
        pane = self._runner_panes.get(name) or self._create_runner_pane(name)
        self.tabs.setCurrentWidget(pane)

    def _create_runner_pane(self, name: str) -> LogPane:
        pane = LogPane(name, max_lines=self._max_lines)
        self._runner_panes[name] = pane
        self.tabs.addTab(pane, name)
        for line in self._tail(name):
            pane.add(LogEntry(llama_line_level(line), line))
        return pane

    def _tail(self, name: str) -> list[str]:
        try:
            runner = self._service.manager.runner(name)
        except AssertionError:
            return []  # the Service has not started: no runner has written anything
        return runner.tail(PREFILL_LINES) if runner is not None else []

    def _runners_with_output(self) -> list[str]:
        try:
            infos = self._service.manager.snapshot()
        except AssertionError:
            return []
        return [info.name for info in infos if self._tail(info.name)]
