"""The model library as a Qt table: one row per model, live runner state, sort and filter."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtGui import QColor

from ...library.table import human_size
from ...library.whisper import AUDIO_KIND
from ..windows._common import ERROR_COLOR, OK_COLOR

_ROOT: Final = QModelIndex()
# Numbers sort as numbers (a 7B model after a 270M one) through this role, not their labels.
SORT_ROLE: Final = int(Qt.ItemDataRole.UserRole) + 1
# The model's name, for views that map a selected row back to the Service.
NAME_ROLE: Final = int(Qt.ItemDataRole.UserRole) + 2

COLUMNS: Final = (
    "Name",
    "Type",
    "Source",
    "Architecture",
    "Parameters",
    "Quantization",
    "Context",
    "Size on disk",
    "Capabilities",
    "Template",
    "State",
    "Workers",
)
(COL_NAME, COL_KIND, COL_SOURCE, COL_ARCH, COL_PARAMS, COL_QUANT, COL_CONTEXT, COL_SIZE,
 COL_CAPS, COL_TEMPLATE, COL_STATE, COL_WORKERS) = range(len(COLUMNS))
_NUMERIC_COLUMNS: Final = frozenset({COL_PARAMS, COL_CONTEXT, COL_SIZE})

# What each runner state reads as in the table; the busy ones end in an ellipsis so they
# read as "in progress" (the window also shows a busy bar while any model is loading).
STATE_TEXT: Final = {
    "stopped": "stopped",
    "starting": "loading…",
    "ready": "ready",
    "stopping": "unloading…",
    "failed": "failed",
    # A peer's model: nothing runs here, what counts is whether its peer answers.
    "peer-available": "on peer",
    "peer-unavailable": "peer unavailable",
}
PEER_AVAILABLE: Final = "peer-available"
PEER_UNAVAILABLE: Final = "peer-unavailable"
# A peer's model's source reads "peer NAME" (LibraryEntry sources are single words).
PEER_SOURCE_PREFIX: Final = "peer "
BUSY_STATES: Final = frozenset({"starting", "stopping"})
# What each chat template source means (ChatTemplate.source), as the Template column's tip.
_TEMPLATE_TIPS: Final = {
    "file": "the chat template stored in the model's GGUF file",
    "family": "the app's template for the model's family (its file has none)",
    "setting": "the chat_template set for the model in the config",
}
_UNKNOWN: Final = "—"
# A cell that has no meaning for the row's kind of model (a Whisper model's context length).
_NOT_APPLICABLE: Final = ""
# Source names that read better in the table than the library's own word.
SOURCE_TEXT: Final = {"pulled": "downloaded"}
# What each model kind (LibraryEntry.kind, ModelConfig.kind) reads as in the Type column.
KIND_TEXT: Final = {"llm": "Language model", AUDIO_KIND: "Speech to text"}
# RPC worker states (rpc.probe.WorkerState values) that keep a model from starting.
WORKER_FAILING: Final = frozenset({"down", "not-rpc"})
_WORKERS_TIP: Final = ("the llama.cpp RPC workers the model is split over (its rpc list), "
                       "each as last checked; a model whose worker is down cannot start")
_KIND_TIPS: Final = {
    "llm": "a GGUF file that llama-server runs: chat, completion or embeddings",
    AUDIO_KIND: "a Whisper model the speech worker runs: Transcribe file…, or the "
                "/v1/audio/transcriptions API",
}


@dataclass(frozen=True)
class WorkerCell:
    """One RPC worker of a model as the library shows it (rpc.monitor.WorkerStatus)."""

    address: str
    state: str = "unknown"  # up, busy, down, not-rpc or unknown (not checked yet)
    reason: str = ""
    checked_at: float | None = None

    def describe(self) -> str:
        """"10.0.0.5:50052 down: connection refused (checked 12:04:31)"."""
        text = f"{self.address} {self.state}"
        if self.reason:
            text += f": {self.reason}"
        if self.checked_at is not None:
            text += f" (checked {time.strftime('%H:%M:%S', time.localtime(self.checked_at))})"
        return text


@dataclass(frozen=True)
class LibraryRow:
    """One model as the library shows it; None means "not known" (unreadable header...)."""

    name: str
    source: str
    path: str
    architecture: str | None = None
    parameters: str | None = None
    parameter_count: int | None = None
    quantization: str | None = None
    context_length: int | None = None
    size: int | None = None
    capabilities: tuple[str, ...] = ()
    template: str = ""  # where its chat template comes from: ChatTemplate.describe()
    template_problem: str = ""  # why it cannot chat, for a template of "none"
    state: str = "stopped"
    reason: str = ""
    kind: str = "llm"  # "llm" or "audio" (a speech-to-text model)
    multilingual: bool = False  # audio models: whether it knows more than English
    workers: tuple[WorkerCell, ...] = ()  # RPC workers the model is split over (`rpc`)

    @property
    def is_audio(self) -> bool:
        return self.kind == AUDIO_KIND

    @property
    def kind_text(self) -> str:
        return KIND_TEXT.get(self.kind, self.kind)

    @property
    def languages(self) -> str | None:
        """What a speech model understands: "English" or "Multilingual" (None for others)."""
        if not self.is_audio:
            return None
        return "Multilingual" if self.multilingual else "English"

    def display(self, column: int) -> str:
        if column == COL_NAME:
            return self.name
        if column == COL_KIND:
            languages = self.languages
            return f"{self.kind_text} ({languages})" if languages else self.kind_text
        if column == COL_SOURCE:
            return SOURCE_TEXT.get(self.source, self.source)
        if column == COL_ARCH:
            return self.architecture or _UNKNOWN
        if column == COL_PARAMS:
            return self.parameters or _UNKNOWN
        if column == COL_QUANT:
            return self.quantization or _UNKNOWN
        if column == COL_CONTEXT:
            if self.is_audio:
                return _NOT_APPLICABLE
            return f"{self.context_length:,}" if self.context_length else _UNKNOWN
        if column == COL_SIZE:
            return human_size(self.size) if self.size is not None else _UNKNOWN
        if column == COL_CAPS:
            return ", ".join(self.capabilities) or _UNKNOWN
        if column == COL_TEMPLATE:
            if self.is_audio:
                return _NOT_APPLICABLE
            return self.template or _UNKNOWN
        if column == COL_STATE:
            return STATE_TEXT.get(self.state, self.state)
        if column == COL_WORKERS:
            return ", ".join(f"{cell.address} {cell.state}" for cell in self.workers)
        return ""

    def sort_key(self, column: int) -> str | int:
        # One type per column: Qt compares mixed variants (None vs int) inconsistently.
        if column == COL_PARAMS:
            return self.parameter_count if self.parameter_count is not None else -1
        if column == COL_CONTEXT:
            return self.context_length or -1
        if column == COL_SIZE:
            return self.size if self.size is not None else -1
        return self.display(column).casefold()


class LibraryModel(QAbstractTableModel):
    """Rows of LibraryRow; the window rebuilds them from the Service and patches states."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[LibraryRow] = []
        self._index: dict[str, int] = {}

    # ---- reading -------------------------------------------------------------------

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = _ROOT) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = _ROOT) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and 0 <= section < len(COLUMNS):
            if role == Qt.ItemDataRole.DisplayRole:
                return COLUMNS[section]
            if role == Qt.ItemDataRole.TextAlignmentRole and section in _NUMERIC_COLUMNS:
                return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex,
             role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        row, column = self._rows[index.row()], index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return row.display(column)
        if role == SORT_ROLE:
            return row.sort_key(column)
        if role == NAME_ROLE:
            return row.name
        if role == Qt.ItemDataRole.TextAlignmentRole and column in _NUMERIC_COLUMNS:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(row, column)
        if role == Qt.ItemDataRole.ForegroundRole and column == COL_STATE:
            if row.state == "ready":
                return QColor(OK_COLOR)
            if row.state == "failed":
                return QColor(ERROR_COLOR)
        if role == Qt.ItemDataRole.ForegroundRole and column == COL_WORKERS and row.workers:
            if any(cell.state in WORKER_FAILING for cell in row.workers):
                return QColor(ERROR_COLOR)
            if all(cell.state == "up" for cell in row.workers):
                return QColor(OK_COLOR)
        return None

    @staticmethod
    def _tooltip(row: LibraryRow, column: int) -> str | None:
        if column == COL_NAME:
            return row.path
        if column == COL_KIND:
            return _KIND_TIPS.get(row.kind)
        if column == COL_STATE and row.reason:
            return row.reason
        if column == COL_WORKERS and row.workers:
            return "\n".join([_WORKERS_TIP, *(cell.describe() for cell in row.workers)])
        if column == COL_SOURCE and row.source == "pulled":
            return "downloaded into the app's own store (Get model… or an API pull)"
        if row.is_audio and column in (COL_CONTEXT, COL_TEMPLATE):
            return "a speech-to-text model has no chat template nor context length"
        if column == COL_TEMPLATE:
            if row.template_problem:
                return f"cannot chat: {row.template_problem}"
            return _TEMPLATE_TIPS.get(row.template.partition(" ")[0])
        if column == COL_CONTEXT and row.context_length:
            return "context length the model was trained for; the ctx-size argument sets " \
                   "how much of it llama-server uses"
        return None

    def row_for(self, name: str) -> LibraryRow | None:
        position = self._index.get(name)
        return None if position is None else self._rows[position]

    def names(self) -> list[str]:
        return [row.name for row in self._rows]

    def busy(self) -> bool:
        """Whether any model is loading or unloading."""
        return any(row.state in BUSY_STATES for row in self._rows)

    # ---- writing -------------------------------------------------------------------

    def set_rows(self, rows: Sequence[LibraryRow]) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        self._index = {row.name: i for i, row in enumerate(self._rows)}
        self.endResetModel()

    def set_state(self, name: str, state: str, reason: str = "") -> bool:
        """Patch one row's state in place; False when no row has that name."""
        position = self._index.get(name)
        if position is None:
            return False
        self._rows[position] = dataclasses.replace(self._rows[position], state=state,
                                                   reason=reason)
        cell = self.index(position, COL_STATE)
        self.dataChanged.emit(cell, cell)
        return True


    def set_workers(self, workers: Mapping[str, WorkerCell]) -> None:
        """Patch the Workers cell of every row split over RPC workers (by address)."""
        for position, row in enumerate(self._rows):
            if not row.workers:
                continue
            cells = tuple(workers.get(cell.address, cell) for cell in row.workers)
            if cells != row.workers:
                self._rows[position] = dataclasses.replace(row, workers=cells)
                cell_index = self.index(position, COL_WORKERS)
                self.dataChanged.emit(cell_index, cell_index)


class LibraryFilterModel(QSortFilterProxyModel):
    """Case-insensitive text filter over every column, numeric-aware sorting."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setSortRole(SORT_ROLE)
        self.setFilterKeyColumn(-1)
        self.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        # A state change re-sorts only when sorting by state; cheap at library sizes.
        self.setDynamicSortFilter(True)
