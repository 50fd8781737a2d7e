"""GUI test fixtures: offscreen Qt, a qasync loop over pytest-qt's QApplication, a live Service.

Why a qasync loop here: the Service is asyncio code and the widgets are Qt code, and in
the app both run on one thread through qasync. pytest-qt's qtbot spins Qt's own event
loop, which runs qasync's timers and socket notifiers but without asyncio's "running
loop" set, so any Service coroutine would fail; pytest-asyncio's loop, for its part, never
processes Qt events. So tests that need both are plain (sync) tests that drive one qasync
QEventLoop: while a coroutine runs, QApplication.exec() runs too, so Qt signals, timers
and asyncio tasks (llama-server I/O included) all progress; between two runs nothing
moves, which keeps each step of a test deterministic.
The `qt_driver` fixture wraps that: `run(coro)`, `until(predicate)`, `sleep(s)`. Tests
without the Service can keep using qtbot. Test modules get these helpers through fixtures
only: conftest modules are not importable by name from tests.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

# Before any QApplication exists (pytest-qt creates it lazily in `qapp`): in-process GUI
# tests never need a screen, and offscreen gives the same answers on every machine (no
# system tray, for one) whatever QT_QPA_PLATFORM a developer's desktop exports. The Xvfb
# tests start the app as a subprocess with xcb instead. LLAMARUNNER_TEST_QT_PLATFORM
# picks another platform on purpose (xcb, to watch the in-process tests on a screen).
os.environ["QT_QPA_PLATFORM"] = os.environ.get("LLAMARUNNER_TEST_QT_PLATFORM", "offscreen")

import pytest
import pytestqt.plugin
import qasync
from PySide6.QtCore import QSettings, QStandardPaths
from PySide6.QtWidgets import QApplication, QWidget

import llamarunner.gui  # noqa: F401 - applies the PySide6 6.12 emit() guard (see there)
from llamarunner.config import ConfigStore
from llamarunner.service import Service

T = TypeVar("T")

SCREENSHOT_DIR = Path("/tmp")


class QtDriver:
    """Runs coroutines and waits for conditions on a qasync loop (Qt and asyncio together)."""

    def __init__(self, loop: qasync.QEventLoop) -> None:
        self.loop = loop

    def run(self, coro: Awaitable[T], timeout: float = 60) -> T:
        # Not loop.run_until_complete: after stopping, qasync's version processes Qt events
        # once more with no running asyncio loop, so a background task stepped there (the
        # app's own main coroutine, say) fails with "no running event loop". run_forever
        # ends right when Qt's loop ends; whatever is still queued runs in the next run().
        future = asyncio.ensure_future(asyncio.wait_for(coro, timeout), loop=self.loop)
        future.add_done_callback(lambda _done: self.loop.stop())
        self.loop.run_forever()
        if not future.done():
            raise RuntimeError("the Qt event loop ended before the coroutine finished")
        result: T = future.result()
        return result

    def until(self, predicate: Callable[[], bool], timeout: float = 30,
              message: str = "condition") -> None:
        async def poll() -> None:
            deadline = time.monotonic() + timeout
            while not predicate():
                if time.monotonic() > deadline:
                    raise AssertionError(f"timed out after {timeout}s waiting for {message}")
                await asyncio.sleep(0.02)

        self.run(poll(), timeout + 5)

    def sleep(self, seconds: float) -> None:
        self.run(asyncio.sleep(seconds), seconds + 5)


@pytest.fixture
def qt_driver(qapp: QApplication) -> Iterator[QtDriver]:
    """A fresh qasync loop over the session's QApplication, closed after the test."""
    loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(loop)
    try:
        yield QtDriver(loop)
    finally:
        # Whatever the test left running ends here, before the loop closes: a task
        # destroyed while pending is an error in this suite (warnings are errors).
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        driver = QtDriver(loop)
        if pending:
            driver.run(asyncio.gather(*pending, return_exceptions=True))
        driver.run(loop.shutdown_asyncgens())
        loop.close()
        asyncio.set_event_loop(None)
        for widget in QApplication.topLevelWidgets():
            widget.close()
            widget.deleteLater()
        QApplication.processEvents()


@pytest.fixture
def tiny_config(write_config: Callable[..., Path], llama_server_bin: Path,
                tiny_model: Path) -> Callable[..., Path]:
    """Write a config with the tiny model and both APIs on ephemeral ports."""

    def factory(models: dict[str, Any] | None = None, **extra: Any) -> Path:
        return write_config(
            models if models is not None
            else {"tiny": {"path": str(tiny_model), "args": {"ctx-size": 256}}},
            runtime=llama_server_bin,
            proxies={"ollama": {"enabled": True, "host": "127.0.0.1", "port": 0},
                     "lmstudio": {"enabled": True, "host": "127.0.0.1", "port": 0}},
            **extra,
        )

    return factory


@pytest.fixture
def gui_service(qt_driver: QtDriver, tiny_config: Callable[..., Path]
                ) -> Iterator[Callable[..., Service]]:
    """Start a real Service (real llama-server, tiny model) on the qasync loop; stopped after.

    Call it with a `models` table to serve other models.
    """
    started: list[Service] = []

    def start(models: dict[str, Any] | None = None) -> Service:
        config = tiny_config(models)
        service = Service(ConfigStore(config), runner_log_dir=config.parent / "runners")
        started.append(service)
        errors = qt_driver.run(service.start())
        assert not errors, errors
        return service

    yield start
    for service in started:
        qt_driver.run(service.stop())


@pytest.fixture
def gui_settings(tmp_path: Path) -> QSettings:
    """Window geometry goes to a file of the test's own, not the user's settings."""
    return QSettings(str(tmp_path / "gui-settings.ini"), QSettings.Format.IniFormat)


class RecordingWindows:
    """A WindowOpener that records which windows were asked for."""

    def __init__(self) -> None:
        self.shown: list[str] = []

    def show_library(self) -> QWidget | None:
        self.shown.append("library")
        return None

    def show_settings(self) -> QWidget | None:
        self.shown.append("settings")
        return None

    def show_logs(self) -> QWidget | None:
        self.shown.append("logs")
        return None

    def show_meters(self) -> QWidget | None:
        self.shown.append("meters")
        return None

    def show_doctor(self) -> QWidget | None:
        self.shown.append("doctor")
        return None


@pytest.fixture
def recording_windows() -> RecordingWindows:
    return RecordingWindows()


@pytest.fixture
def screenshot() -> Callable[[QWidget, str], Path]:
    """Save a widget's picture as /tmp/llamarunner-<name>.png (to look at, and to attach)."""

    def save(widget: QWidget, name: str) -> Path:
        path = SCREENSHOT_DIR / f"llamarunner-{name}.png"
        assert widget.grab().save(str(path)), f"cannot save {path}"
        return path

    return save


# Loops stay referenced for the whole session: a qasync loop collected on another thread
# leaves Qt timers behind ("Timers cannot be stopped from another thread").
_KEPT_LOOPS: list[object] = []


@pytest.fixture
def driver(qt_driver: QtDriver, monkeypatch: pytest.MonkeyPatch) -> Iterator[QtDriver]:
    """qt_driver, plus: pytest-qt's own processEvents calls between setup, call and
    teardown run with this loop as asyncio's running loop. Otherwise a Service task whose
    timer is due there (the config watcher, say) fails with "no running event loop".
    """
    loop = qt_driver.loop
    _KEPT_LOOPS.append(loop)

    def process_events() -> None:
        app = QApplication.instance()
        if app is None:
            return
        if loop.is_closed() or asyncio._get_running_loop() is not None:
            app.processEvents()
            return
        asyncio.events._set_running_loop(loop)
        try:
            app.processEvents()
        finally:
            asyncio.events._set_running_loop(None)

    monkeypatch.setattr(pytestqt.plugin, "_process_events", process_events)
    yield qt_driver


@pytest.fixture(autouse=True)
def private_settings(tmp_path: Path) -> Iterator[None]:
    """Window geometry goes to the test's folder, never the user's real settings."""
    for fmt in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
        QSettings.setPath(fmt, QSettings.Scope.UserScope, str(tmp_path / "qsettings"))
    yield
    default = QStandardPaths.writableLocation(
        QStandardPaths.StandardLocation.GenericConfigLocation)
    for fmt in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
        QSettings.setPath(fmt, QSettings.Scope.UserScope, default)
