"""Creates the app's windows on first use, brings them to front, and remembers their geometry."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from PySide6.QtCore import QByteArray, QEvent, QObject, QSettings, Qt, QTimer, Signal
from PySide6.QtWidgets import QMessageBox, QWidget

from ..service import Service
from .bridge import ServiceBridge
from .icons import app_icon

log = logging.getLogger(__name__)

# Builds one top-level window (no parent: each has its own taskbar entry).
WindowFactory = Callable[[], QWidget]
# Returns the resource monitor for the meters window, or None when there is none.
MonitorProvider = Callable[[], object | None]

SETTINGS_ORGANIZATION = "llamarunner"
SETTINGS_APPLICATION = "LlamaRunner Pro"

# window name -> (module under llamarunner.gui.windows, class, title for messages)
_WINDOWS: dict[str, tuple[str, str, str]] = {
    "library": ("library", "LibraryWindow", "Model library"),
    "settings": ("settings", "SettingsWindow", "Settings"),
    "logs": ("logs", "LogsWindow", "Logs"),
    "meters": ("meters", "MetersWindow", "Meters"),
    "doctor": ("doctor", "DoctorWindow", "Check clients"),
}


class WindowUnavailableError(Exception):
    """A window cannot be built in this install; the message says why, for a dialog."""


def app_settings() -> QSettings:
    return QSettings(SETTINGS_ORGANIZATION, SETTINGS_APPLICATION)


class WindowManager(QObject):
    """Owns the library, settings, logs, meters and "Check clients" windows.

    Windows are built on first `show_*()` so the tray starts fast and a window module that
    is broken or missing only costs its own menu entry (a dialog says so) instead of the
    app. Closing a window only hides it (Qt's default for a window without
    WA_DeleteOnClose), so reopening is instant and keeps its state; its geometry is saved
    whenever it hides and restored when it is first built.

    `factories` replaces the real window classes by name (tests, or a build without one).
    """

    window_closed = Signal(str)  # window name, after the user closed (hid) it

    def __init__(self, service: Service, bridge: ServiceBridge,
                 monitor_provider: MonitorProvider | None = None, *,
                 factories: Mapping[str, WindowFactory] | None = None,
                 settings: QSettings | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._service = service
        self._bridge = bridge
        self._monitor_provider = monitor_provider
        self._factories = dict(factories or {})
        self._settings = settings if settings is not None else app_settings()
        self._windows: dict[str, QWidget] = {}
        self._names: dict[QObject, str] = {}
        self._message_boxes: list[QMessageBox] = []

    # ---- public API ----------------------------------------------------------------

    def show_library(self) -> QWidget | None:
        return self.show("library")

    def show_settings(self) -> QWidget | None:
        return self.show("settings")

    def show_logs(self) -> QWidget | None:
        return self.show("logs")

    def show_meters(self) -> QWidget | None:
        return self.show("meters")

    def show_doctor(self) -> QWidget | None:
        """Show the "Check clients" window and start a check (each time it is asked for)."""
        window = self.show("doctor")
        start = getattr(window, "run_checks", None)
        if callable(start):
            start()
        return window

    def window(self, name: str) -> QWidget | None:
        """The window if it was built already (it may be hidden)."""
        return self._windows.get(name)

    def show(self, name: str) -> QWidget | None:
        """Build the window if needed, show it and bring it to the front."""
        window = self._windows.get(name)
        if window is None:
            try:
                window = self._build(name)
            except WindowUnavailableError as exc:
                self._inform(_WINDOWS.get(name, ("", "", name))[2], str(exc))
                return None
        if window.isMinimized():
            window.showNormal()
        else:
            window.show()
        window.raise_()
        window.activateWindow()
        return window

    def save_geometry(self) -> None:
        for name, window in self._windows.items():
            self._settings.setValue(f"{name}/geometry", window.saveGeometry())
        self._settings.sync()

    def close_all(self) -> None:
        """Save geometry and get rid of every window (at quit)."""
        self.save_geometry()
        for window in self._windows.values():
            window.removeEventFilter(self)
            window.close()
            window.deleteLater()
        self._windows.clear()
        self._names.clear()
        for box in list(self._message_boxes):  # closing one removes it from the list
            box.close()
        self._message_boxes.clear()

    # ---- building ------------------------------------------------------------------

    def _build(self, name: str) -> QWidget:
        factory = self._factories.get(name) or self._default_factory(name)
        window = factory()
        window.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, False)
        if window.windowIcon().isNull():
            window.setWindowIcon(app_icon())
        geometry = self._settings.value(f"{name}/geometry")
        if isinstance(geometry, QByteArray | bytes) and geometry:
            window.restoreGeometry(QByteArray(geometry))
        window.installEventFilter(self)
        self._windows[name] = window
        self._names[window] = name
        return window

    def _default_factory(self, name: str) -> WindowFactory:
        if name not in _WINDOWS:
            raise WindowUnavailableError(f"there is no window called '{name}'")
        module_name, class_name, title = _WINDOWS[name]
        qualified = f"{__package__}.windows.{module_name}"
        try:
            # Imported on demand: the window modules are optional at this layer and
            # importing them all would slow the tray's start.
            module = importlib.import_module(qualified)
        except ModuleNotFoundError as exc:
            if exc.name is not None and qualified.startswith(exc.name):
                raise WindowUnavailableError(
                    f"The {title} window is not part of this build yet "
                    f"({qualified} is missing)."
                ) from exc
            raise
        cls: Any = getattr(module, class_name)
        if name == "meters":
            monitor = self._monitor_provider() if self._monitor_provider else None
            if monitor is None:
                raise WindowUnavailableError(
                    "Meters are not available: no resource monitor is running."
                )
            return lambda: cls(monitor)
        return lambda: cls(self._service, self._bridge)

    def _inform(self, title: str, message: str) -> None:
        # A non-modal box: a modal exec() would nest a second event loop under qasync,
        # which stalls every asyncio task (the proxies included) until it is dismissed.
        box = QMessageBox(QMessageBox.Icon.Information, title or "LlamaRunner Pro", message)
        box.setWindowIcon(app_icon())
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
        box.finished.connect(lambda _result: self._forget_box(box))
        self._message_boxes.append(box)
        box.open()
        log.warning("%s", message)

    def _forget_box(self, box: QMessageBox) -> None:
        if box in self._message_boxes:
            self._message_boxes.remove(box)

    # ---- geometry and close ----------------------------------------------------------

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        name = self._names.get(watched)
        if name is not None:
            if event.type() == QEvent.Type.Hide and isinstance(watched, QWidget):
                self._settings.setValue(f"{name}/geometry", watched.saveGeometry())
            elif event.type() == QEvent.Type.Close and isinstance(watched, QWidget):
                # The window's own closeEvent runs after this filter and may refuse (unsaved
                # edits); look once the event is done whether it really went away.
                QTimer.singleShot(0, lambda: self._after_close(name, watched))
        return super().eventFilter(watched, event)

    def _after_close(self, name: str, window: QWidget) -> None:
        if self._windows.get(name) is window and not window.isVisible():
            self.window_closed.emit(name)
