"""The tray icon: state at a glance, a menu built when it opens, and failure notifications."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu, QMessageBox, QSystemTrayIcon, QWidget

from .. import paths
from ..buildinfo import version_text
from ..config import Config
from ..core.logging_setup import LOG_FILE_NAME
from ..integration.autostart import Autostart, change_start_at_login, set_start_at_login
from ..proxy.servers import API_TITLES
from ..service import Service
from .bridge import ServiceBridge
from .icons import IconState, app_icon, state_icon

log = logging.getLogger(__name__)

APP_TITLE = "LlamaRunner Pro"
# At login the app can start before the panel that hosts the tray; wait this long for one
# before falling back to a window (vorta's pattern).
TRAY_WAIT_SECONDS = 8.0
_TRAY_POLL_MS = 250
_NOTIFY_MS = 10_000
# The two APIs, in the order the tooltip lists them.
_API_ORDER = ("ollama", "lmstudio")
_LOADED = frozenset({"ready", "starting"})


class WindowOpener(Protocol):
    """What the tray needs from the window manager."""

    def show_library(self) -> QWidget | None: ...
    def show_settings(self) -> QWidget | None: ...
    def show_logs(self) -> QWidget | None: ...
    def show_meters(self) -> QWidget | None: ...
    def show_doctor(self) -> QWidget | None: ...


def compute_state(runner_states: Iterable[str], *, listener_error: bool,
                  failure_pending: bool) -> IconState:
    """The one state the icon shows; a pure function so its priorities are tested as a table.

    A listener that cannot listen outranks everything (no client can reach the app); a
    load in progress outranks an older failure (the user is retrying); an unacknowledged
    failure outranks models that still serve, so a crash is not hidden by another model.
    """
    states = set(runner_states)
    if listener_error:
        return IconState.ERROR
    if "starting" in states:
        return IconState.LOADING
    if failure_pending:
        return IconState.ERROR
    if "ready" in states:
        return IconState.SERVING
    return IconState.IDLE


class TrayIcon(QSystemTrayIcon):
    """The app's face in the system tray.

    The menu is rebuilt every time it opens (aboutToShow), from the Service as it is then,
    so it never shows stale models or states; left click opens the model library. "Start
    at login" is checked from what is really registered (`autostart`, injectable for
    tests), not from the config key.
    """

    quit_requested = Signal()
    # Every notification, shown or not (no tray, or a tray without balloons): lets a
    # window surface it and tests observe it.
    notified = Signal(str, str)  # title, message

    def __init__(self, service: Service, bridge: ServiceBridge, windows: WindowOpener,
                 parent: QObject | None = None, *, autostart: Autostart | None = None) -> None:
        super().__init__(parent)
        self._service = service
        self._bridge = bridge
        self._windows = windows
        self._autostart = autostart if autostart is not None else Autostart()
        self._about_box: QMessageBox | None = None
        self._tray_poll: QTimer | None = None
        self._state = IconState.IDLE
        # The latest failure (model, message) not yet followed by a successful load.
        self._failure: tuple[str, str] | None = None
        self._previous: dict[str, str] = {}

        self._menu = QMenu()
        # Shows why "Start at login" is greyed out in a development run.
        self._menu.setToolTipsVisible(True)
        self._models_menu = QMenu("Models")
        self._library_action = QAction("Model library…", self)
        self._library_action.triggered.connect(lambda: windows.show_library())
        self._settings_action = QAction("Settings…", self)
        self._settings_action.triggered.connect(lambda: windows.show_settings())
        self._logs_action = QAction("Logs…", self)
        self._logs_action.triggered.connect(lambda: windows.show_logs())
        self._meters_action = QAction("Meters…", self)
        self._meters_action.triggered.connect(lambda: windows.show_meters())
        self._doctor_action = QAction("Check clients…", self)
        self._doctor_action.setToolTip("Check that each client (Copilot, Open WebUI, JetBrains, "
                                       "Continue, the OpenAI SDK) works with this app")
        self._doctor_action.triggered.connect(lambda: windows.show_doctor())
        self._autostart_action = QAction("Start at login", self)
        self._autostart_action.setCheckable(True)
        self._autostart_action.toggled.connect(self.set_autostart)
        self._about_action = QAction(f"About {APP_TITLE}", self)
        self._about_action.triggered.connect(self.show_about)
        self._quit_action = QAction("Quit", self)
        self._quit_action.triggered.connect(self.quit_requested.emit)
        self._menu.aboutToShow.connect(self.build_menu)
        self.setContextMenu(self._menu)
        self.build_menu()

        self.activated.connect(self._on_activated)
        bridge.runner_state_changed.connect(self._on_runner_state)
        bridge.listener_changed.connect(lambda *_: self.refresh())
        bridge.config_applied.connect(lambda _path: self.refresh())
        bridge.action_failed.connect(self._on_action_failed)
        self.refresh()

    # ---- state ---------------------------------------------------------------------

    @property
    def state(self) -> IconState:
        return self._state

    @property
    def menu(self) -> QMenu:
        return self._menu

    @property
    def models_menu(self) -> QMenu:
        return self._models_menu

    @property
    def autostart_action(self) -> QAction:
        """The "Start at login" toggle (see `set_autostart`)."""
        return self._autostart_action

    @property
    def doctor_action(self) -> QAction:
        """The "Check clients…" action: opens the doctor's window and runs a check."""
        return self._doctor_action

    @property
    def about_action(self) -> QAction:
        return self._about_action

    def refresh(self) -> None:
        """Recompute the icon and the tooltip from the Service."""
        states = [info.state for info in self._service.manager.snapshot()]
        listener_error = bool(self._service.listeners.last_errors)
        self._state = compute_state(states, listener_error=listener_error,
                                    failure_pending=self._failure is not None)
        self.setIcon(state_icon(self._state))
        self.setToolTip(self.tooltip_text())

    def status_text(self) -> str:
        snapshot = self._service.manager.snapshot()
        ready = sorted(info.name for info in snapshot if info.state == "ready")
        starting = sorted(info.name for info in snapshot if info.state == "starting")
        if self._service.listeners.last_errors:
            names = ", ".join(API_TITLES.get(n, n) for n in sorted(
                self._service.listeners.last_errors))
            return f"Not listening: {names}"
        if starting:
            return f"Loading {', '.join(starting)}…"
        if self._failure is not None:
            return f"{self._failure[0]}: {self._failure[1]}"
        if ready:
            return f"Serving {', '.join(ready)}"
        return "No model loaded"

    def tooltip_text(self) -> str:
        lines = [f"{APP_TITLE} — {self.status_text()}"]
        addresses = self._service.listeners.addresses()
        errors = self._service.listeners.last_errors
        proxies = self._service.config.proxies
        for name in _API_ORDER:
            title = API_TITLES.get(name, name)
            if name in addresses:
                lines.append(f"{title}: {addresses[name]}")
            elif name in errors:
                lines.append(f"{title}: not listening (see Settings)")
            elif name in proxies and not proxies[name].enabled:
                lines.append(f"{title}: off")
        return "\n".join(lines)

    # ---- the menu --------------------------------------------------------------------

    def build_menu(self) -> None:
        """Fill the menu from the Service as it is now (called each time it opens)."""
        menu = self._menu
        menu.clear()  # deletes the status action only: the others belong to the tray
        status = QAction(self.status_text(), menu)
        status.setEnabled(False)
        menu.addAction(status)
        self._add_downloads(menu)
        self._build_models_menu()
        menu.addMenu(self._models_menu)
        menu.addSeparator()
        self.sync_autostart_action()
        for action in (self._library_action, self._settings_action, self._logs_action,
                       self._meters_action, self._doctor_action, self._autostart_action):
            menu.addAction(action)
        menu.addSeparator()
        menu.addAction(self._about_action)
        menu.addAction(self._quit_action)

    def _add_downloads(self, menu: QMenu) -> None:
        """A greyed line per running pull with its percent, and "Downloads (N)…", which
        opens the library's Downloads tab; nothing while no pull runs."""
        running = [job for job in self._service.model_store.jobs() if not job.done]
        if not running:
            return
        for job in running:
            total = job.total
            done = f"{min(100, job.completed * 100 // total)}%" if total else "starting…"
            line = QAction(f"Downloading {job.display}: {done}", menu)
            line.setEnabled(False)
            menu.addAction(line)
        opener = QAction(f"Downloads ({len(running)})…", menu)
        opener.triggered.connect(self.show_downloads)
        menu.addAction(opener)

    def show_downloads(self) -> None:
        window = self._windows.show_library()
        show = getattr(window, "show_downloads", None)
        if callable(show):
            show()

    def _build_models_menu(self) -> None:
        submenu = self._models_menu
        submenu.clear()
        states = {info.name: info.state for info in self._service.manager.snapshot()}
        names = sorted(self._service.models(), key=str.lower)
        if not names:
            empty = QAction("No models found", submenu)
            empty.setEnabled(False)
            submenu.addAction(empty)
            return
        for name in names:
            state = states.get(name, "stopped")
            label = {"starting": f"{name} (loading…)", "stopping": f"{name} (stopping…)",
                     "failed": f"{name} (failed)"}.get(state, name)
            action = QAction(label, submenu)
            action.setCheckable(True)
            action.setChecked(state in _LOADED)
            action.setData(name)
            action.triggered.connect(lambda _checked=False, model=name: self.toggle_model(model))
            submenu.addAction(action)

    def toggle_model(self, name: str) -> None:
        """Load a model that is not loaded; unload one that is (or is loading)."""
        runner = self._service.manager.runner(name)
        if runner is not None and runner.state.value in _LOADED:
            self._bridge.run(self._service.manager.unload(name), f"unload {name}")
        else:
            self._bridge.run(self._service.manager.load(name), f"load {name}")

    # ---- start at login and About --------------------------------------------------

    def sync_autostart_action(self) -> None:
        """Check "Start at login" from the entry on disk (or in the registry) as it is now.

        In a development run there is no installed app to register: the action stays
        visible but disabled, and its tooltip says why.
        """
        action = self._autostart_action
        status = self._autostart.status()
        # Setting the check mark must not count as the user toggling it.
        blocked = action.blockSignals(True)
        try:
            action.setChecked(status.active)
        finally:
            action.blockSignals(blocked)
        if self._autostart.installed:
            action.setEnabled(True)
            action.setToolTip(status.describe())
        else:
            action.setEnabled(False)
            action.setToolTip(f"Not available: {self._autostart.not_installed_reason}")

    def set_autostart(self, enabled: bool) -> None:
        """Turn start at login on or off: the OS entry and desktop.start_at_login together.

        A refusal or failure is notified like any failed action, and the check mark goes
        back to what is really registered.
        """
        saved: list[Config] = []

        def save(value: bool) -> None:
            # Only the key changes, in the file as it is now (hand edits stay); a file
            # that does not parse refuses the save, and the notification says why.
            base, data = self._service.config.to_dict(), self._service.config.to_dict()
            set_start_at_login(data, value)
            saved.append(self._service.store.save(data, base=base))

        outcome = change_start_at_login(self._autostart, enabled, save)
        self.sync_autostart_action()
        if not outcome.ok:
            self._on_action_failed(
                f"cannot turn start at login {'on' if enabled else 'off'}: {outcome.message}")
            return
        if saved:
            # What the Settings window does after a save: the running app takes the new
            # config (and the desktop app's reconcile finds the entry already right).
            self._bridge.run(self._service.apply_config(saved[-1]), "apply the settings")

    def about_text(self) -> str:
        return (f"{APP_TITLE}\n\n{version_text()}\n\n"
                f"Config file: {self._service.store.path}\n"
                f"Log file: {paths.log_dir() / LOG_FILE_NAME}")

    def show_about(self) -> QMessageBox:
        """The About box: app version, the llama-server in use, config and log files.

        Built like QMessageBox.about() but shown with open(), not exec(): a nested modal
        loop would stall the asyncio side (the API listeners) for as long as it is up.
        """
        box = self._about_box
        if box is None:
            box = QMessageBox(QMessageBox.Icon.NoIcon, f"About {APP_TITLE}", "")
            box.setTextFormat(Qt.TextFormat.PlainText)  # paths are not markup
            box.setIconPixmap(app_icon().pixmap(64, 64))
            box.setWindowIcon(app_icon())
            box.setStandardButtons(QMessageBox.StandardButton.Ok)
            self._about_box = box
        box.setText(self.about_text())
        box.open()
        box.raise_()
        box.activateWindow()
        return box

    def close_about(self) -> None:
        if self._about_box is not None:
            self._about_box.close()
            self._about_box.deleteLater()
            self._about_box = None

    # ---- reactions -------------------------------------------------------------------

    def _on_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        # macOS opens the menu on any click and reports Trigger too: opening the library
        # there as well would put a window over the menu the user just asked for.
        if sys.platform == "darwin":
            return
        if reason in (QSystemTrayIcon.ActivationReason.Trigger,
                      QSystemTrayIcon.ActivationReason.DoubleClick):
            self._windows.show_library()

    def _on_runner_state(self, model: str, state: str, reason: str) -> None:
        previous = self._previous.get(model)
        self._previous[model] = state
        if state == "failed":
            crashed = previous == "ready"
            what = "stopped unexpectedly" if crashed else "failed to load"
            self._failure = (model, what)
            self.notify(f"{model} {what}", reason or "see Logs for details", error=True)
        elif state == "ready" or (state == "starting" and self._failure
                                  and self._failure[0] == model):
            self._failure = None
        self.refresh()

    def _on_action_failed(self, message: str) -> None:
        self.notify(APP_TITLE, message, error=True)
        self.refresh()

    def notify(self, title: str, message: str, *, error: bool = False) -> None:
        """A desktop notification from the tray, when there is a visible tray to send it."""
        log.log(logging.WARNING if error else logging.INFO, "%s: %s", title, message)
        self.notified.emit(title, message)
        if self.isVisible() and self.supportsMessages():
            icon = (QSystemTrayIcon.MessageIcon.Critical if error
                    else QSystemTrayIcon.MessageIcon.Information)
            self.showMessage(title, message, icon, _NOTIFY_MS)

    # ---- appearing -------------------------------------------------------------------

    def show_when_available(self, on_unavailable: Callable[[], None],
                            wait_s: float = TRAY_WAIT_SECONDS) -> None:
        """Show the icon once a system tray exists; call `on_unavailable` if none appears.

        GNOME without the AppIndicator extension, and `offscreen`, have no tray at all; at
        login the panel may simply not be up yet, so it is polled for `wait_s` seconds.
        """
        if QSystemTrayIcon.isSystemTrayAvailable():
            self._appear()
            return
        log.info("no system tray yet; waiting up to %.0fs for one", wait_s)
        deadline = time.monotonic() + wait_s
        timer = QTimer(self)
        timer.setInterval(_TRAY_POLL_MS)
        self._tray_poll = timer

        def check() -> None:
            if QSystemTrayIcon.isSystemTrayAvailable():
                self.stop_waiting()
                self._appear()
            elif time.monotonic() >= deadline:
                self.stop_waiting()
                log.warning("no system tray available; showing the model library window "
                            "instead (the app quits when it is closed)")
                on_unavailable()

        timer.timeout.connect(check)
        timer.start()

    def stop_waiting(self) -> None:
        """Stop polling for a tray (the app is quitting, or one appeared).

        Explicit rather than left to deleteLater: a deferred delete posted while the app
        shuts down may never be processed, and a poll firing after that would call back
        into windows that are already gone.
        """
        timer, self._tray_poll = self._tray_poll, None
        if timer is not None:
            timer.stop()
            timer.deleteLater()

    def _appear(self) -> None:
        self.show()
        log.info("tray icon shown")
