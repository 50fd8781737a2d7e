"""The event bus, the background task keeper, and the no-Qt-outside-gui rule."""

from __future__ import annotations

import ast
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


def test_the_app_never_loads_the_speech_engine() -> None:
    # The worker runs it; the app only checks that it is installed.
    code = (
        "import sys, llamarunner.cli, llamarunner.headless, llamarunner.service, "
        "llamarunner.audio.worker, llamarunner.audio.launch as launch; "
        "launch.engine_missing_reason(); "
        "sys.exit(bool({'faster_whisper', 'ctranslate2', 'av', 'numpy'} & set(sys.modules)))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_headless_modules_load_without_qt() -> None:
    # A fresh interpreter: pytest-qt has already imported PySide6 into this one.
    code = (
        "import sys, llamarunner.cli, llamarunner.headless, llamarunner.service; "
        "sys.exit('PySide6' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# The house, bottom to top: a package may import only from the floors below its own.
LAYERS: list[set[str]] = [
    {"core", "paths", "__init__"},
    {"config", "runtime"},
    {"library", "integration", "demo", "audio"},
    {"store"},
    {"runner"},
    {"peers", "rpc"},
    {"proxy", "monitor"},
    {"service"},
    {"doctor", "buildinfo"},
    {"headless", "gui"},
    {"store_cli"},
    {"cli"},
    {"__main__"},
]


def _imported_packages(path: Path) -> set[str]:
    """Top-level llamarunner packages a module imports (relative or absolute imports)."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = list(parts[:-1])[: len(parts) - node.level]
            target = [*base, *(node.module.split(".") if node.module else [])]
            names = [target[0]] if target else [alias.name for alias in node.names]
        elif node.module and node.module.startswith("llamarunner."):
            names = [node.module.split(".")[1]]
        else:
            continue
        found.update(names)
    return found


def test_every_import_points_down() -> None:
    floor = {name: index for index, layer in enumerate(LAYERS) for name in layer}
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = path.relative_to(PACKAGE).with_suffix("").parts[0]
        assert own in floor, f"{own} is on no floor of LAYERS"
        for target in _imported_packages(path) - {own}:
            if target in floor and floor[target] >= floor[own]:
                upward.append(f"{path.relative_to(PACKAGE)} imports {target}")
    assert upward == []
