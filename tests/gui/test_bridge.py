"""ServiceBridge: each core event becomes its Qt signal; logs cross threads; run() reports."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from PySide6.QtCore import QObject, QThread, Slot

from llamarunner.core.errors import ModelNotFoundError
from llamarunner.core.events import (
    ConfigApplied,
    ConfigRejected,
    Event,
    EventBus,
    ListenerStateChanged,
    RunnerLogLine,
    RunnerStateChanged,
)
from llamarunner.gui.bridge import ServiceBridge

if TYPE_CHECKING:
    from tests.gui.conftest import QtDriver


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


@pytest.fixture
def bridge(qapp: Any, bus: EventBus) -> Any:
    bridge = ServiceBridge(SimpleNamespace(events=bus))
    yield bridge
    bridge.close()


@pytest.mark.parametrize(("event", "signal", "args"), [
    (RunnerStateChanged("tiny", "ready"), "runner_state_changed", ["tiny", "ready", ""]),
    (RunnerStateChanged("tiny", "failed", "exited with code 1"), "runner_state_changed",
     ["tiny", "failed", "exited with code 1"]),
    (RunnerLogLine("tiny", "main: server is listening"), "runner_log_line",
     ["tiny", "main: server is listening"]),
    (ListenerStateChanged("ollama", "http://127.0.0.1:11434", True), "listener_changed",
     ["ollama", "http://127.0.0.1:11434", True, ""]),
    (ListenerStateChanged("lmstudio", "127.0.0.1:1234", False, "port 1234 is already in use"),
     "listener_changed", ["lmstudio", "127.0.0.1:1234", False, "port 1234 is already in use"]),
    (ConfigApplied("/c/config.json"), "config_applied", ["/c/config.json"]),
    (ConfigRejected("/c/config.json", "models.x.path: missing"), "config_rejected",
     ["/c/config.json", "models.x.path: missing"]),
])
def test_each_event_is_re_emitted_as_its_signal(qtbot: Any, bus: EventBus, bridge: Any,
                                                event: Event, signal: str,
                                                args: list[Any]) -> None:
    with qtbot.waitSignal(getattr(bridge, signal), timeout=1000) as blocker:
        bus.publish(event)
    assert blocker.args == args


class LogReceiver(QObject):
    """Records app_log emissions and whether they arrived on the GUI thread."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[str, str, bool]] = []

    @Slot(str, str)
    def on_log(self, level: str, line: str) -> None:
        on_gui_thread = QThread.currentThread() is self.thread()
        self.records.append((level, line, on_gui_thread))


def test_app_log_carries_records_from_any_thread_to_the_gui_thread(qtbot: Any,
                                                                   bridge: Any) -> None:
    receiver = LogReceiver()
    bridge.app_log.connect(receiver.on_log)
    logger = logging.getLogger("llamarunner.test.bridge")
    logger.warning("from the gui thread")
    worker = threading.Thread(target=lambda: logger.error("from a worker %d", 7))
    worker.start()
    worker.join()
    qtbot.waitUntil(lambda: len(receiver.records) == 2, timeout=2000)
    (level1, line1, gui1), (level2, line2, gui2) = receiver.records
    assert (level1, level2) == ("WARNING", "ERROR")
    assert line1.endswith("llamarunner.test.bridge: from the gui thread")
    assert "ERROR" in line2 and line2.endswith("from a worker 7")
    assert gui1 and gui2, "app_log must be delivered on the GUI thread"


def test_a_slot_that_logs_does_not_recurse(qtbot: Any, bridge: Any) -> None:
    seen: list[str] = []

    def noisy(level: str, line: str) -> None:
        seen.append(line)
        logging.getLogger("llamarunner.test.bridge").warning("echo of %s", line)

    bridge.app_log.connect(noisy)
    logging.getLogger("llamarunner.test.bridge").warning("first")
    assert len(seen) == 1 and seen[0].endswith("first")


def test_close_stops_signals_and_removes_the_log_handler(qtbot: Any, bus: EventBus) -> None:
    bridge = ServiceBridge(SimpleNamespace(events=bus))
    handlers_before = len(logging.getLogger().handlers)
    bridge.close()
    assert len(logging.getLogger().handlers) == handlers_before - 1
    with qtbot.assertNotEmitted(bridge.runner_state_changed, wait=50):
        bus.publish(RunnerStateChanged("tiny", "ready"))
    with qtbot.assertNotEmitted(bridge.app_log, wait=50):
        logging.getLogger("llamarunner.test.bridge").warning("after close")


def test_run_without_a_loop_reports_instead_of_leaking_the_coroutine(qtbot: Any,
                                                                      bridge: Any) -> None:
    async def action() -> None:
        raise AssertionError("must never run")

    # A coroutine that is never awaited would warn; warnings are errors in this suite.
    with qtbot.waitSignal(bridge.action_failed, timeout=1000) as blocker:
        assert bridge.run(action(), "load tiny") is None
    assert blocker.args == ["cannot load tiny: the app is not running its event loop"]


def test_run_schedules_on_the_qasync_loop_and_reports_busy_and_failures(
        qt_driver: QtDriver, bus: EventBus) -> None:
    bridge = ServiceBridge(SimpleNamespace(events=bus), capture_logs=False)
    busy: list[bool] = []
    failures: list[str] = []
    bridge.busy_changed.connect(busy.append)
    bridge.action_failed.connect(failures.append)
    results: list[str] = []

    async def ok(name: str) -> None:
        await asyncio.sleep(0.05)
        results.append(name)

    async def missing() -> None:
        raise ModelNotFoundError("nope")

    async def broken() -> None:
        raise OSError("disk full")

    async def scenario() -> None:
        first, second = bridge.run(ok("a")), bridge.run(ok("b"), "load b")
        assert first is not None and second is not None and bridge.busy
        await asyncio.gather(first, second)
        await asyncio.sleep(0)  # done callbacks run on the next loop pass
        for coro, what in ((missing(), "load nope"), (broken(), "save config")):
            task = bridge.run(coro, what)
            assert task is not None
            await asyncio.gather(task, return_exceptions=True)
            await asyncio.sleep(0)

    qt_driver.run(scenario())
    bridge.close()
    assert results == ["a", "b"]
    # One busy period per burst of actions, not one per action.
    assert busy == [True, False, True, False, True, False]
    assert failures == ["cannot load nope: model 'nope' not found",
                        "cannot save config: disk full"]


def test_run_without_a_description_reports_the_error_alone(qt_driver: QtDriver,
                                                           bus: EventBus) -> None:
    # Built outside the loop but given it (the app's bridge keeps the loop it was built
    # on): a slot triggered while no loop is "running" (here, by the test) still schedules.
    bridge = ServiceBridge(SimpleNamespace(events=bus), loop=qt_driver.loop,
                           capture_logs=False)
    failures: list[str] = []
    bridge.action_failed.connect(failures.append)

    async def missing() -> None:
        raise ModelNotFoundError("nope")

    task = bridge.run(missing())
    assert task is not None and task.get_name() == "gui:" + missing.__qualname__
    qt_driver.run(asyncio.gather(task, return_exceptions=True))
    qt_driver.run(asyncio.sleep(0))
    bridge.close()
    assert failures == ["model 'nope' not found"]


def test_cancel_pending_ends_running_actions(qt_driver: QtDriver, bus: EventBus) -> None:
    bridge = ServiceBridge(SimpleNamespace(events=bus), capture_logs=False)
    failures: list[str] = []
    bridge.action_failed.connect(failures.append)

    async def scenario() -> asyncio.Task[Any]:
        task = bridge.run(asyncio.sleep(3600), "wait forever")
        assert task is not None
        await asyncio.sleep(0.01)
        await bridge.cancel_pending()
        await asyncio.sleep(0)
        return task

    task = qt_driver.run(scenario())
    bridge.close()
    assert task.cancelled() and not bridge.busy
    assert failures == []  # a cancel at quit is not a failure to tell the user about


# Run in a child: without the guard the interpreter aborts, which must fail one test and
# not take the whole run down with it.
FLOOD = """
import os, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from types import SimpleNamespace
from PySide6.QtCore import QCoreApplication
from llamarunner.core.events import EventBus, RunnerLogLine
from llamarunner.gui.bridge import ServiceBridge
app = QCoreApplication([])
bus = EventBus()
bridge = ServiceBridge(SimpleNamespace(events=bus), capture_logs=False)
lines = []
bridge.runner_log_line.connect(lambda model, line: lines.append(line))
for i in range(100_000):
    bus.publish(RunnerLogLine("tiny", f"slot line {i}"))
assert len(lines) == 100_000
print("ok", sys.getrefcount(True) > 1_000_000)
"""


def test_a_flood_of_log_lines_does_not_crash_the_interpreter() -> None:
    # PySide6 6.12.0's emit() drops a reference to True per call; on Python 3.11 that
    # aborted the app after a few thousand llama-server log lines (llamarunner.gui guards).
    result = subprocess.run([sys.executable, "-c", FLOOD], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[0] == "ok"
