"""Desktop entry point: single instance, QApplication on a qasync loop, Service, tray, windows."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Mapping
from typing import Any

import qasync
from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from .. import __version__, paths
from ..config import ConfigError, ConfigStore
from ..integration.autostart import Autostart, AutostartResult
from ..integration.single_instance import SingleInstance
from ..proxy.servers import ListenerError
from ..service import Service
from .bridge import ServiceBridge
from .icons import app_icon
from .tray import APP_TITLE, TRAY_WAIT_SECONDS, TrayIcon
from .window_manager import MonitorProvider, WindowFactory, WindowManager

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_NOT_ANSWERING = 1
EXIT_CONFIG = 2

APP_NAME = "llamarunner"
ORGANIZATION = "LlamaRunner Pro"
INSTANCE_NAME = "llamarunner"


def main_gui(store: ConfigStore) -> int:
    """Run the desktop app until Quit (or SIGINT/SIGTERM); returns the process exit code."""
    # First of all, before any window or port: a second launch only wakes the first one.
    instance = SingleInstance(INSTANCE_NAME, paths.data_dir())
    if not instance.acquire():
        if instance.notify_running("show"):
            log.info("%s is already running; asked it to show its window", APP_TITLE)
            return EXIT_OK
        print(f"llamarunner: another {APP_TITLE} is running (lock {instance.lock_path}) "
              "but does not answer; quit it from its tray icon or end its process",
              file=sys.stderr)
        return EXIT_NOT_ANSWERING
    try:
        app = make_application()
        loop = qasync.QEventLoop(app)
        asyncio.set_event_loop(loop)
        desktop = DesktopApp(store, instance=instance)
        try:
            with loop:  # closes the loop (and its executor) when the app is done
                code: int = loop.run_until_complete(desktop.run())
                return code
        finally:
            asyncio.set_event_loop(None)
    finally:
        instance.release()


def make_application() -> QApplication:
    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(sys.argv[:1])
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationDisplayName(APP_TITLE)
    app.setApplicationVersion(__version__)
    app.setDesktopFileName(APP_NAME)  # Wayland/XDG match the window to llamarunner.desktop
    app.setWindowIcon(app_icon())
    # A tray app lives on with no window open; quitting is Quit's job (or, without a
    # tray, closing the library window: see DesktopApp._no_tray).
    app.setQuitOnLastWindowClosed(False)
    return app


class DesktopApp:
    """One run of the desktop app: start the Service, show the tray, wait for Quit, stop.

    Everything runs as one coroutine on the qasync loop, so shutdown can await the
    Service's stop (every runner reaped) before the loop ends. Collaborators are injectable
    for tests: a ready Service, window factories, QSettings, the tray wait, start at login.
    """

    def __init__(self, store: ConfigStore, *, service: Service | None = None,
                 instance: SingleInstance | None = None,
                 window_factories: Mapping[str, WindowFactory] | None = None,
                 settings: QSettings | None = None,
                 monitor_provider: MonitorProvider | None = None,
                 tray_wait_s: float = TRAY_WAIT_SECONDS, handle_signals: bool = True,
                 autostart: Autostart | None = None) -> None:
        self.service = service or Service(store, runner_log_dir=paths.runner_log_dir())
        self.autostart = autostart if autostart is not None else Autostart()
        self._instance = instance
        self._window_factories = window_factories
        self._settings = settings
        self._monitor_provider = monitor_provider or self._default_monitor
        self._tray_wait_s = tray_wait_s
        self._handle_signals = handle_signals
        self.bridge: ServiceBridge | None = None
        self.windows: WindowManager | None = None
        self.tray: TrayIcon | None = None
        self.no_tray = False
        self._quit: asyncio.Future[int] | None = None
        self._boxes: list[QMessageBox] = []
        self._signals: list[signal.Signals] = []
        self._signal_timer: QTimer | None = None

    # ---- lifecycle -------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._quit = loop.create_future()
        qapp = QApplication.instance()
        if isinstance(qapp, QApplication):
            # Closing a window must never end Qt's loop (and with it qasync's) behind this
            # coroutine's back: only request_quit() ends the app, after the Service stopped.
            qapp.setQuitOnLastWindowClosed(False)
        if self._handle_signals:
            self._install_signal_handlers(loop)
        # Subscribed before start() so the first listener events reach the tray.
        self.bridge = ServiceBridge(self.service)
        try:
            try:
                errors = await self.service.start()
            except ConfigError as exc:
                log.error("cannot start, the configuration is not usable:\n%s", exc)
                await self._show_and_wait(
                    QMessageBox.Icon.Critical,
                    f"{APP_TITLE} cannot start: the configuration "
                    f"{self.service.store.path} is not usable.\n\nFix it and start again.",
                    str(exc),
                )
                return EXIT_CONFIG
            self._build_ui()
            self.reconcile_autostart()
            if errors:
                self._warn_listeners(errors)
            if self._instance is not None:
                await self._instance.serve(self._on_command)
            models = ", ".join(sorted(self.service.models())) or "none yet"
            log.info("ready; models: %s; config: %s", models, self.service.store.path)
            return await self._quit
        finally:
            await self._shutdown()

    def request_quit(self, code: int = EXIT_OK) -> None:
        """Quit soon: the run() coroutine stops the Service and returns `code`."""
        if self._quit is not None and not self._quit.done():
            log.info("quitting")
            self._quit.set_result(code)

    def _build_ui(self) -> None:
        assert self.bridge is not None
        self.windows = WindowManager(self.service, self.bridge, self._monitor_provider,
                                     factories=self._window_factories,
                                     settings=self._settings)
        self.tray = TrayIcon(self.service, self.bridge, self.windows, autostart=self.autostart)
        self.tray.quit_requested.connect(self.request_quit)
        self.bridge.config_applied.connect(lambda _path: self.reconcile_autostart())
        self.tray.show_when_available(self._no_tray, self._tray_wait_s)

    def _no_tray(self) -> None:
        """No tray to live in: the library window is the app, and closing it quits."""
        assert self.windows is not None
        self.no_tray = True
        self.windows.window_closed.connect(
            lambda name: self.request_quit() if name == "library" else None)
        if self.windows.show_library() is None:
            # No library window in this build: quit once the message saying so is gone.
            app = QApplication.instance()
            if isinstance(app, QApplication):
                app.lastWindowClosed.connect(self.request_quit)

    def reconcile_autostart(self) -> None:
        """Make the login entry match desktop.start_at_login (at start, after each reload).

        Only the desktop app does this: headless runs (servers, containers) never touch
        the user's login items. A development run leaves the entry alone (see Autostart).
        """
        outcome = self.autostart.reconcile(self.service.config.desktop.start_at_login)
        if outcome.result is AutostartResult.FAILED and self.tray is not None:
            self.tray.notify(APP_TITLE, f"start at login: {outcome.message}", error=True)

    def _default_monitor(self) -> object | None:
        """The Service's resource monitor (it runs in the core: headless shares it)."""
        return self.service.monitor

    def _on_command(self, command: str) -> None:
        """A command from a second launch (see SingleInstance)."""
        if command == "show" and self.windows is not None:
            self.windows.show_library()
        elif command == "quit":
            self.request_quit()
        else:
            log.warning("ignoring unknown command from another launch: %r", command)

    async def _shutdown(self) -> None:
        """Stop every runner before returning: no llama-server may outlive the app."""
        try:
            if self.tray is not None:
                self.tray.stop_waiting()
                self.tray.hide()
                self.tray.close_about()
            if self._instance is not None:
                await self._instance.close()
            if self.bridge is not None:
                await self.bridge.cancel_pending()
                # Unsubscribed before the Service stops: its "stopping" events must not
                # reach windows that are being closed and deleted below.
                self.bridge.close()
            if self.windows is not None:
                self.windows.close_all()
            for box in list(self._boxes):
                box.close()
            self._boxes.clear()
            if self.tray is not None:
                self.tray.deleteLater()
        finally:
            # Whatever failed above, the runners are stopped.
            await self.service.stop()
            self._remove_signal_handlers()
        log.info("stopped cleanly")

    # ---- signals ---------------------------------------------------------------------

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                # qasync's loop is a selector loop: the signal wakes it through its
                # self-pipe, even while Qt's C++ event loop is waiting.
                loop.add_signal_handler(sig, self.request_quit)
                self._signals.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                # Windows: no add_signal_handler. A Python handler only runs when Python
                # code runs, so a timer keeps the interpreter ticking while Qt waits.
                with contextlib.suppress(ValueError, OSError):
                    signal.signal(sig, lambda *_: loop.call_soon_threadsafe(self.request_quit))
                    if self._signal_timer is None:
                        self._signal_timer = QTimer()
                        self._signal_timer.timeout.connect(lambda: None)
                        self._signal_timer.start(200)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
        self._signals.clear()
        if self._signal_timer is not None:
            self._signal_timer.stop()
            self._signal_timer = None

    # ---- messages --------------------------------------------------------------------

    def _message(self, icon: QMessageBox.Icon, text: str, details: str) -> QMessageBox:
        # Non-modal (open(), not exec()): a nested modal loop would stall the asyncio side,
        # the API listeners included, for as long as the box is up.
        box = QMessageBox(icon, APP_TITLE, text)
        box.setInformativeText(details)
        box.setWindowIcon(app_icon())
        self._boxes.append(box)
        box.finished.connect(lambda _result: self._boxes.remove(box)
                             if box in self._boxes else None)
        box.open()
        return box

    async def _show_and_wait(self, icon: QMessageBox.Icon, text: str, details: str) -> None:
        """Show a message and wait until it is dismissed (or the app is asked to quit)."""
        assert self._quit is not None
        dismissed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        box = self._message(icon, text, details)
        box.finished.connect(
            lambda _result: dismissed.set_result(None) if not dismissed.done() else None)
        waiting: list[asyncio.Future[Any]] = [dismissed, self._quit]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)

    def _warn_listeners(self, errors: list[ListenerError]) -> None:
        for error in errors:
            log.error("%s", error)
        self._message(
            QMessageBox.Icon.Warning,
            f"{APP_TITLE} could not open every API port. It keeps running; change the port "
            "in Settings (or stop the other program) and the API starts at once.",
            "\n\n".join(str(error) for error in errors),
        )
