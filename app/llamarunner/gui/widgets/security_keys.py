"""The named API keys table: masked keys, model scopes and limits, edited in place."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from typing import Any, Final

from PySide6.QtCore import (
    QAbstractItemModel,
    QModelIndex,
    QPersistentModelIndex,
    QRegularExpression,
    Qt,
    Signal,
)
from PySide6.QtGui import QBrush, QColor, QPalette, QRegularExpressionValidator
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLineEdit,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from ...config import ApiKeyConfig
from ..windows._common import ERROR_COLOR, ErrorLabel, monospace_font

(NAME, KEY, MODELS, REQUESTS, TOKENS) = range(5)
HEADERS: Final = ("Name", "Key", "Models", "Requests/min", "Tokens/min")
# The config key each column is written to, for routing validation problems to cells.
FIELDS: Final = ("name", "key", "models", "requests_per_minute", "tokens_per_minute")
# The full key lives in this role of the key cell; the text there is only the masked form.
KEY_ROLE: Final = Qt.ItemDataRole.UserRole
NAME_WIDTH: Final = 150
# 24 random bytes: 32 URL-safe characters, well over the 16 the config asks for.
NEW_KEY_BYTES: Final = 24
# A masked key shows this many characters at each end, and only for keys long enough
# that those 8 characters leave most of the key unknown.
_MASK_SHOWN: Final = 4
_MASK_MIN_LENGTH: Final = 12
_TIPS: Final = (
    "The key's name, shown in the access log and in metrics (letters, digits and ._@-)",
    "Double-click to type a new key (16 or more characters, no spaces); Copy key copies it",
    "Models this key may use, separated by commas; empty: every model",
    "Requests this key may make per minute; empty: no limit",
    "Tokens this key may have generated per minute; empty: no limit",
)


def generate_key() -> str:
    """A new random key, as Add key puts in the table."""
    return secrets.token_urlsafe(NEW_KEY_BYTES)


def mask_key(key: str) -> str:
    """`alic…cdef`: enough to tell keys apart, never enough to use one."""
    if len(key) >= _MASK_MIN_LENGTH:
        return f"{key[:_MASK_SHOWN]}…{key[-_MASK_SHOWN:]}"
    return "•" * len(key)


def split_models(text: str) -> list[str]:
    """"llama3.2, qwen2.5-coder" -> the names, blanks dropped."""
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_limit(text: str) -> int | str | None:
    """A limit cell's value for the config: None when empty, a number when it is one; any
    other text is passed on as it is, so that validation names it (as it would in the file).
    """
    text = text.strip()
    if not text:
        return None
    return int(text) if text.isdigit() else text


class _HintDelegate(QStyledItemDelegate):
    """Shows a grey hint in empty cells ("all models", "no limit"); with `digits`, the
    editor takes only digits.
    """

    def __init__(self, hint: str, parent: QWidget, *, digits: bool = False) -> None:
        super().__init__(parent)
        self._hint = hint
        self._digits = digits

    def initStyleOption(self, option: QStyleOptionViewItem,
                        index: QModelIndex | QPersistentModelIndex) -> None:
        super().initStyleOption(option, index)
        if not option.text:
            option.text = self._hint
            option.features |= QStyleOptionViewItem.ViewItemFeature.HasDisplay
            option.palette.setColor(QPalette.ColorRole.Text,
                                    option.palette.color(QPalette.ColorRole.PlaceholderText))

    def createEditor(self, parent: QWidget, option: QStyleOptionViewItem,
                     index: QModelIndex | QPersistentModelIndex) -> QWidget:
        editor = super().createEditor(parent, option, index)
        if isinstance(editor, QLineEdit):
            editor.setPlaceholderText(self._hint)
            if self._digits:
                editor.setValidator(QRegularExpressionValidator(QRegularExpression("[0-9]*"),
                                                                editor))
        return editor


class _SecretDelegate(QStyledItemDelegate):
    """Edits a key without ever putting it in a widget: the editor starts empty and hides
    what is typed; leaving it empty keeps the key there was.
    """

    def createEditor(self, parent: QWidget, option: QStyleOptionViewItem,
                     index: QModelIndex | QPersistentModelIndex) -> QWidget:
        editor = QLineEdit(parent)
        editor.setEchoMode(QLineEdit.EchoMode.Password)
        editor.setPlaceholderText("type a new key; empty keeps this one")
        return editor

    def setEditorData(self, editor: QWidget,
                      index: QModelIndex | QPersistentModelIndex) -> None:
        pass

    def setModelData(self, editor: QWidget, model: QAbstractItemModel,
                     index: QModelIndex | QPersistentModelIndex) -> None:
        text = editor.text() if isinstance(editor, QLineEdit) else ""
        if text:
            model.setData(index, text, KEY_ROLE)
            model.setData(index, mask_key(text), Qt.ItemDataRole.EditRole)


class ApiKeysTable(QTableWidget):
    """One row per named key (`security.api_keys`); the key column shows masked keys and
    holds the full ones in KEY_ROLE. `edited` is emitted for every change made by hand.
    """

    edited = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, len(HEADERS), parent)
        self.setHorizontalHeaderLabels(list(HEADERS))
        header = self.horizontalHeader()
        for column in (KEY, REQUESTS, TOKENS):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(MODELS, QHeaderView.ResizeMode.Stretch)
        # Names are typed here: room for a usual one from the start, resizable by hand.
        header.setSectionResizeMode(NAME, QHeaderView.ResizeMode.Interactive)
        header.resizeSection(NAME, NAME_WIDTH)
        for column, tip in enumerate(_TIPS):
            heading = self.horizontalHeaderItem(column)
            if heading is not None:
                heading.setToolTip(tip)
        self.verticalHeader().setVisible(False)
        # One line of text per row: more keys in sight than the style's roomy default.
        self.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 10)
        self.setWordWrap(False)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setItemDelegateForColumn(KEY, _SecretDelegate(self))
        self.setItemDelegateForColumn(MODELS, _HintDelegate("all models", self))
        self.setItemDelegateForColumn(REQUESTS, _HintDelegate("no limit", self, digits=True))
        self.setItemDelegateForColumn(TOKENS, _HintDelegate("no limit", self, digits=True))
        self._filling = False
        self.itemChanged.connect(self._on_item_changed)

    # ---- rows ------------------------------------------------------------------------

    def set_keys(self, keys: Iterable[ApiKeyConfig]) -> None:
        """Show these keys (as loaded: no `edited`)."""
        self.setRowCount(0)
        for key in keys:
            self.append_key(key.name, key.key, key.models, key.requests_per_minute,
                            key.tokens_per_minute)

    def append_key(self, name: str, key: str, models: Sequence[str] = (),
                   requests: int | None = None, tokens: int | None = None) -> int:
        """Add a row (no `edited`: callers that act for the user say so); returns it."""
        self._filling = True
        try:
            row = self.rowCount()
            self.insertRow(row)
            secret = QTableWidgetItem(mask_key(key))
            secret.setData(KEY_ROLE, key)
            texts = {NAME: name, MODELS: ", ".join(models),
                     REQUESTS: "" if requests is None else str(requests),
                     TOKENS: "" if tokens is None else str(tokens)}
            for column in range(self.columnCount()):
                item = secret if column == KEY else QTableWidgetItem(texts[column])
                item.setToolTip(_TIPS[column])
                if column == KEY:
                    item.setFont(monospace_font())
                self.setItem(row, column, item)
        finally:
            self._filling = False
        return row

    def add_generated(self) -> int:
        """A new row with a generated key and a free name (`key-2`), selected."""
        taken = {self.name(row) for row in range(self.rowCount())}
        number = self.rowCount() + 1
        while f"key-{number}" in taken:
            number += 1
        row = self.append_key(f"key-{number}", generate_key())
        self.selectRow(row)
        self.scrollToBottom()
        self.edited.emit()
        return row

    def remove(self, row: int) -> None:
        self.removeRow(row)
        self.edited.emit()

    def selected_row(self) -> int:
        """The row Copy key and Revoke act on; -1 when none is selected."""
        rows = {index.row() for index in self.selectedIndexes()}
        if len(rows) == 1:
            return rows.pop()
        return self.currentRow() if not rows and self.currentRow() >= 0 else -1

    def name(self, row: int) -> str:
        item = self.item(row, NAME)
        return item.text().strip() if item is not None else ""

    def key(self, row: int) -> str:
        item = self.item(row, KEY)
        value = item.data(KEY_ROLE) if item is not None else None
        return value if isinstance(value, str) else ""

    def set_key(self, row: int, key: str) -> None:
        """Replace a row's key, as typing one in its cell does."""
        item = self.item(row, KEY)
        if item is not None:
            item.setData(KEY_ROLE, key)
            item.setText(mask_key(key))

    def text(self, row: int, column: int) -> str:
        item = self.item(row, column)
        return item.text() if item is not None else ""

    def entries(self) -> list[dict[str, Any]]:
        """The rows as `security.api_keys` entries, shaped like the file's (optional keys
        left out when empty), so an untouched table compares equal to what was loaded.
        """
        entries: list[dict[str, Any]] = []
        for row in range(self.rowCount()):
            entry: dict[str, Any] = {"name": self.name(row), "key": self.key(row)}
            models = split_models(self.text(row, MODELS))
            if models:
                entry["models"] = models
            for column in (REQUESTS, TOKENS):
                limit = parse_limit(self.text(row, column))
                if limit is not None:
                    entry[FIELDS[column]] = limit
            entries.append(entry)
        return entries

    # ---- problems --------------------------------------------------------------------

    def mark(self, row: int, column: int, message: str) -> None:
        """Paint a cell as wrong, with the message as its tooltip ("" clears it)."""
        item = self.item(row, column)
        if item is None:
            return
        self._filling = True
        try:
            if message:
                color = QColor(ERROR_COLOR)
                color.setAlpha(48)
                item.setBackground(QBrush(color))
                item.setToolTip(message)
            else:
                item.setBackground(QBrush())
                item.setToolTip(_TIPS[column])
        finally:
            self._filling = False

    def _on_item_changed(self, _item: QTableWidgetItem) -> None:
        if not self._filling:
            self.edited.emit()


class KeyProblems:
    """Gathers the table's validation problems in the label under it (one line each, with
    the key path) and paints the cells they concern.
    """

    def __init__(self, table: ApiKeysTable, label: ErrorLabel) -> None:
        self.table = table
        self.label = label
        self._shown: dict[tuple[int, int], str] = {}

    def target(self, path: str, row: int = -1, column: int = -1) -> _KeyProblem:
        """Where FieldErrors sends the problems of `path` (a cell when row and column are
        given, the table as a whole otherwise).
        """
        return _KeyProblem(self, path, row, column)

    def set(self, row: int, column: int, text: str) -> None:
        if not text and row < 0:
            # Clearing the table as a whole also drops what was said about rows removed
            # since (their targets are gone) and unpaints every cell.
            self._shown.clear()
            for each_row in range(self.table.rowCount()):
                for each_column in range(self.table.columnCount()):
                    self.table.mark(each_row, each_column, "")
        elif text:
            self._shown[(row, column)] = text
        else:
            self._shown.pop((row, column), None)
        if row >= 0 and column >= 0:
            self.table.mark(row, column, text)
        self.label.show_error("\n".join(line for _where, line in sorted(self._shown.items())))


class _KeyProblem:
    """One registered spot of the keys table; an ErrorTarget for FieldErrors."""

    def __init__(self, problems: KeyProblems, path: str, row: int, column: int) -> None:
        self._problems = problems
        self._path = path
        self._row = row
        self._column = column

    def show_error(self, message: str) -> None:
        self._problems.set(self._row, self._column, f"{self._path}: {message}" if message
                           else "")

    def clear_error(self) -> None:
        self.show_error("")
