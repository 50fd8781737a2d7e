"""Log lines as a capped Qt list model, with a level/search filter that highlights matches."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple, cast

from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtGui import QColor

_ROOT: Final = QModelIndex()
LEVEL_ROLE: Final = int(Qt.ItemDataRole.UserRole) + 1

# The numbers of Python's logging module, so app log levels map one to one.
DEBUG: Final = 10
INFO: Final = 20
WARNING: Final = 30
ERROR: Final = 40
LEVEL_NAMES: Final = {DEBUG: "DEBUG", INFO: "INFO", WARNING: "WARNING", ERROR: "ERROR"}
_BY_NAME: Final = {
    "DEBUG": DEBUG, "INFO": INFO, "WARNING": WARNING, "WARN": WARNING,
    "ERROR": ERROR, "CRITICAL": ERROR, "FATAL": ERROR,
}
# llama.cpp's common log prints "<timestamp> <letter> <message>" (e.g.
# "0.00.005.475 W srv  llama_server: ..."), or the letter alone without timestamps.
_LLAMA_LEVEL: Final = re.compile(r"^\s*(?:\d+(?:\.\d+)+\s+)?([DIWE])\s")
_LLAMA_LETTERS: Final = {"D": DEBUG, "I": INFO, "W": WARNING, "E": ERROR}

DEFAULT_MAX_LINES: Final = 5000
_WARNING_COLOR: Final = "#b26a00"
_ERROR_COLOR: Final = "#c62828"
_DEBUG_COLOR: Final = "#757575"
_MATCH_BACKGROUND: Final = "#fff3a0"
_MATCH_FOREGROUND: Final = "#000000"


class LogEntry(NamedTuple):
    level: int
    text: str


def level_from_name(name: str) -> int:
    """INFO for names we do not know: an odd level should still show by default."""
    return _BY_NAME.get(name.strip().upper(), INFO)


def llama_line_level(line: str) -> int:
    """The level of a llama-server output line from its level letter; INFO when it has none
    (model loader tables and other plain prints are informational).
    """
    match = _LLAMA_LEVEL.match(line)
    return _LLAMA_LETTERS[match[1]] if match else INFO


class LogModel(QAbstractListModel):
    """The last `max_lines` lines of one log; older lines are dropped as new ones come in.

    Lines arrive in batches (see LogsWindow): one insert and at most one removal per batch
    keep the views cheap however fast a llama-server writes.
    """

    def __init__(self, max_lines: int = DEFAULT_MAX_LINES, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.max_lines = max(1, max_lines)
        self._entries: list[LogEntry] = []

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = _ROOT) -> int:
        return 0 if parent.isValid() else len(self._entries)

    def data(self, index: QModelIndex | QPersistentModelIndex,
             role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._entries):
            return None
        entry = self._entries[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return entry.text
        if role == LEVEL_ROLE:
            return entry.level
        if role == Qt.ItemDataRole.ForegroundRole:
            if entry.level >= ERROR:
                return QColor(_ERROR_COLOR)
            if entry.level >= WARNING:
                return QColor(_WARNING_COLOR)
            if entry.level <= DEBUG:
                return QColor(_DEBUG_COLOR)
        return None

    def entry(self, row: int) -> LogEntry:
        return self._entries[row]

    def entries(self) -> list[LogEntry]:
        return list(self._entries)

    def append(self, batch: Sequence[LogEntry]) -> None:
        if not batch:
            return
        if len(batch) >= self.max_lines:
            # The batch alone fills the buffer: nothing old survives, a reset is cheapest.
            self.beginResetModel()
            self._entries = list(batch[-self.max_lines:])
            self.endResetModel()
            return
        overflow = len(self._entries) + len(batch) - self.max_lines
        if overflow > 0:
            self.beginRemoveRows(_ROOT, 0, overflow - 1)
            del self._entries[:overflow]
            self.endRemoveRows()
        first = len(self._entries)
        self.beginInsertRows(_ROOT, first, first + len(batch) - 1)
        self._entries.extend(batch)
        self.endInsertRows()

    def clear(self) -> None:
        self.beginResetModel()
        self._entries = []
        self.endResetModel()


class LogFilterModel(QSortFilterProxyModel):
    """Shows lines at or above a level; highlights lines containing the search text, or
    (with only_matching) shows only those.
    """

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._min_level = DEBUG
        self._search = ""
        self._only_matching = False

    @property
    def min_level(self) -> int:
        return self._min_level

    @property
    def search(self) -> str:
        return self._search

    @property
    def only_matching(self) -> bool:
        return self._only_matching

    def set_min_level(self, level: int) -> None:
        self._refilter(lambda: setattr(self, "_min_level", level))

    def set_search(self, text: str) -> None:
        folded = text.casefold()
        if folded == self._search:
            return
        if self._only_matching:
            self._refilter(lambda: setattr(self, "_search", folded))
        else:
            # Only the highlight changes: repaint, no need to filter again.
            self._search = folded
            if self.rowCount():
                self.dataChanged.emit(self.index(0, 0), self.index(self.rowCount() - 1, 0),
                                      [Qt.ItemDataRole.BackgroundRole])

    def set_only_matching(self, only: bool) -> None:
        self._refilter(lambda: setattr(self, "_only_matching", only))

    def matches(self, text: str) -> bool:
        return bool(self._search) and self._search in text.casefold()

    def _refilter(self, change: Callable[[], None]) -> None:
        self.beginFilterChange()
        change()
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def filterAcceptsRow(self, source_row: int,
                         source_parent: QModelIndex | QPersistentModelIndex) -> bool:
        entry = cast(LogModel, self.sourceModel()).entry(source_row)
        if entry.level < self._min_level:
            return False
        return not (self._only_matching and self._search) or self.matches(entry.text)

    def data(self, index: QModelIndex | QPersistentModelIndex,
             role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role in (Qt.ItemDataRole.BackgroundRole, Qt.ItemDataRole.ForegroundRole) \
                and self._search and not self._only_matching:
            text = super().data(index, Qt.ItemDataRole.DisplayRole)
            if isinstance(text, str) and self.matches(text):
                return QColor(_MATCH_BACKGROUND if role == Qt.ItemDataRole.BackgroundRole
                              else _MATCH_FOREGROUND)
        return super().data(index, role)

    def visible_lines(self) -> list[str]:
        return [str(self.index(row, 0).data()) for row in range(self.rowCount())]
