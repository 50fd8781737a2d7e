"""The event bus, the background task keeper, and the no-Qt-outside-gui rule."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
from pathlib import Path

from llamarunner.core.events import EventBus, RunnerStateChanged
from llamarunner.core.tasks import BackgroundTasks

PACKAGE = Path(__file__).parents[3] / "app" / "llamarunner"


def test_bus_delivers_in_order_and_survives_a_failing_subscriber(caplog) -> None:
    bus = EventBus()
    seen: list[str] = []

    def broken(event: object) -> None:
        raise RuntimeError("boom")

    bus.subscribe(lambda e: seen.append("first"))
    bus.subscribe(broken)
    unsubscribe = bus.subscribe(lambda e: seen.append("last"))
    with caplog.at_level(logging.ERROR):
        bus.publish(RunnerStateChanged("m", "ready"))
    assert seen == ["first", "last"]
    assert "event subscriber failed" in caplog.text
    unsubscribe()
    bus.publish(RunnerStateChanged("m", "stopped"))
    assert seen == ["first", "last", "first"]


async def test_background_tasks_are_kept_logged_and_cancelled(caplog) -> None:
    tasks = BackgroundTasks("test")

    async def fail() -> None:
        raise ValueError("bad")

    async def forever() -> None:
        await asyncio.sleep(3600)

    with caplog.at_level(logging.ERROR):
        failing = tasks.spawn(fail(), "fail")
        await asyncio.gather(failing, return_exceptions=True)
        await asyncio.sleep(0)
    assert "background task test:fail failed" in caplog.text
    sleeper = tasks.spawn(forever(), "sleep")
    assert len(tasks) == 1
    await tasks.cancel_all()
    assert sleeper.cancelled() and len(tasks) == 0


def test_nothing_outside_gui_imports_qt() -> None:
    qt_import = re.compile(r"^\s*(from|import)\s+(PySide6|qasync|shiboken6)\b", re.MULTILINE)
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "gui" not in path.relative_to(PACKAGE).parts and qt_import.search(path.read_text())
    ]
    assert offenders == []


def test_headless_modules_load_without_qt() -> None:
    # A fresh interpreter: pytest-qt has already imported PySide6 into this one.
    code = (
        "import sys, llamarunner.cli, llamarunner.headless, llamarunner.core.service; "
        "sys.exit('PySide6' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
