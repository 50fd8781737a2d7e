"""Shared window helpers: hide-on-close with remembered geometry, error labels, small formats."""

from __future__ import annotations

from collections.abc import Coroutine, Iterable
from typing import Any, Final, Protocol

from PySide6.QtCore import QByteArray, QCoreApplication, QSettings, QSize, Qt, SignalInstance
from PySide6.QtGui import QCloseEvent, QFont, QFontDatabase, QHideEvent
from PySide6.QtWidgets import QLabel, QLayout, QVBoxLayout, QWidget

from ...config import Problem

SETTINGS_ORGANIZATION: Final = "llamarunner"
SETTINGS_APPLICATION: Final = "LlamaRunner Pro"
ERROR_COLOR: Final = "#c62828"
OK_COLOR: Final = "#2e7d32"


class BridgeLike(Protocol):
    """What the windows use of gui.bridge.ServiceBridge: core events as Qt signals, and a
    way to run a coroutine on the qasync loop. A Protocol so tests can pass a stand-in.
    """

    @property
    def runner_state_changed(self) -> SignalInstance: ...  # (model, state, reason)

    @property
    def runner_log_line(self) -> SignalInstance: ...  # (model, line)

    @property
    def listener_changed(self) -> SignalInstance: ...  # (name, address, listening, error)

    @property
    def config_applied(self) -> SignalInstance: ...  # (path)

    @property
    def config_rejected(self) -> SignalInstance: ...  # (path, error)

    @property
    def rpc_worker_changed(self) -> SignalInstance: ...  # (host:port, state, reason)

    @property
    def peer_changed(self) -> SignalInstance: ...  # (peer name, available, reason)

    @property
    def app_log(self) -> SignalInstance: ...  # (level, line)

    @property
    def action_failed(self) -> SignalInstance: ...  # (message)

    def run(self, coro: Coroutine[Any, Any, Any], what: str = ..., /) -> object: ...


def app_settings() -> QSettings:
    """The app's QSettings (window geometry and other view state, never configuration)."""
    return QSettings(SETTINGS_ORGANIZATION, SETTINGS_APPLICATION)


class ToolWindow(QWidget):
    """A top-level window that hides instead of closing and remembers where it was.

    The app lives in the tray, so closing a window must not destroy it (its live state,
    such as log buffers, is kept) nor quit the app.
    """

    def __init__(self, settings_name: str, title: str, default_size: QSize,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # A parented widget is a child control unless told otherwise; these are windows.
        self.setWindowFlag(Qt.WindowType.Window, True)
        self.setWindowTitle(f"{title} — {SETTINGS_APPLICATION}")
        self._settings_key = f"{settings_name}/geometry"
        self.resize(default_size)
        self.restore_geometry()
        app = QCoreApplication.instance()
        if app is not None:
            # Quitting from the tray does not hide visible windows: save them on the way out.
            app.aboutToQuit.connect(self.save_geometry)

    def restore_geometry(self) -> bool:
        saved = app_settings().value(self._settings_key)
        if isinstance(saved, QByteArray | bytes):
            geometry = QByteArray(saved)
            if not geometry.isEmpty():
                return bool(self.restoreGeometry(geometry))
        return False

    def save_geometry(self) -> None:
        app_settings().setValue(self._settings_key, self.saveGeometry())

    def show_and_raise(self) -> None:
        """Bring the window to the front, un-minimising it (what a tray menu entry wants)."""
        if self.isMinimized():
            self.showNormal()
        else:
            self.show()
        self.raise_()
        self.activateWindow()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.save_geometry()
        event.ignore()
        self.hide()

    def hideEvent(self, event: QHideEvent) -> None:
        # Minimising also sends a hide event; only a real hide should write the geometry.
        if not event.spontaneous():
            self.save_geometry()
        super().hideEvent(event)


class ErrorLabel(QLabel):
    """A red, wrapping message under a field; invisible while there is nothing to say."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.setStyleSheet(f"color: {ERROR_COLOR};")
        self.setVisible(False)

    def show_error(self, message: str) -> None:
        self.setText(message)
        self.setVisible(bool(message))

    def clear_error(self) -> None:
        self.show_error("")


class ErrorTarget(Protocol):
    """Anything that can show a problem next to a field (an ErrorLabel, a status cell)."""

    def show_error(self, message: str) -> None: ...

    def clear_error(self) -> None: ...


def with_error(field: QWidget | QLayout, error: ErrorLabel) -> QWidget:
    """The field with its error label right under it, as one form row."""
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(2)
    if isinstance(field, QLayout):
        layout.addLayout(field)
    else:
        layout.addWidget(field)
    layout.addWidget(error)
    return box


class FieldErrors:
    """Routes config problems to the label next to the field they concern.

    Paths are the dotted ones Problem.path carries ("proxies.lmstudio.port",
    "model_dirs[1]"); a target registered as a prefix also takes everything below it.
    Problems no field claims go to the general label, so none is ever hidden.
    """

    def __init__(self, general: ErrorLabel) -> None:
        self.general = general
        self._exact: dict[str, ErrorTarget] = {}
        self._prefixes: dict[str, ErrorTarget] = {}

    def register(self, path: str, label: ErrorTarget, *, prefix: bool = False) -> None:
        (self._prefixes if prefix else self._exact)[path] = label

    def labels(self) -> list[ErrorTarget]:
        return [self.general, *self._exact.values(), *self._prefixes.values()]

    def clear(self) -> None:
        for label in self.labels():
            label.clear_error()

    def target(self, path: str) -> tuple[ErrorTarget, str] | None:
        """The label for `path` and what to call the spot under a prefix target ("" if exact)."""
        if path in self._exact:
            return self._exact[path], ""
        matches = [p for p in self._prefixes if _is_under(path, p)]
        if not matches:
            return None
        prefix = max(matches, key=len)
        return self._prefixes[prefix], _relative(path[len(prefix):])

    def show(self, problems: Iterable[Problem], *, general_prefix: str = "") -> int:
        """Show every problem; returns how many went to a field rather than the general label."""
        self.clear()
        by_label: dict[int, tuple[ErrorTarget, list[str]]] = {}
        routed = 0
        for problem in problems:
            found = self.target(problem.path)
            label: ErrorTarget
            if found is None:
                label, text = self.general, _describe(problem)
            else:
                routed += 1
                # Under a prefix target (a table, a list) say which entry is meant.
                label, where = found
                text = f"{where}: {problem.message}" if where else problem.message
            by_label.setdefault(id(label), (label, []))[1].append(text)
        for label, texts in by_label.values():
            if label is self.general and general_prefix:
                texts = [general_prefix, *texts]
            label.show_error("\n".join(texts))
        return routed


def _is_under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith((prefix + ".", prefix + "["))


def _relative(rest: str) -> str:
    """"[2]" -> "entry 3", ".ctx-size" -> "ctx-size", ".a[0]" -> "a[0]"."""
    if rest.startswith("[") and rest.endswith("]") and rest[1:-1].isdigit():
        return f"entry {int(rest[1:-1]) + 1}"
    return rest.lstrip(".")


def _describe(problem: Problem) -> str:
    where = f"line {problem.line}: " if problem.line is not None else ""
    return f"{where}{problem}"


def monospace_font() -> QFont:
    return QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
