"""Service events and app log records re-emitted as Qt signals; Service calls run from slots."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Coroutine
from typing import Any, Protocol

from PySide6.QtCore import QObject, Signal

from ..core.errors import LlamaRunnerError
from ..core.events import (
    ConfigApplied,
    ConfigRejected,
    Event,
    EventBus,
    ListenerStateChanged,
    PeerStateChanged,
    RpcWorkerStateChanged,
    RunnerLogLine,
    RunnerStateChanged,
)
from ..core.logging_setup import FORMAT

log = logging.getLogger(__name__)


class EventSource(Protocol):
    """What the bridge needs from the Service: only its event bus."""

    @property
    def events(self) -> EventBus: ...


class ServiceBridge(QObject):
    """The only link from the core to widgets: one signal per event type, plus actions.

    The EventBus calls subscribers on the loop thread, which under qasync is the Qt GUI
    thread, so events become direct signal emissions. Log records can come from any thread
    (asyncio.to_thread workers); emitting from there is safe because the bridge lives in
    the GUI thread and Qt queues cross-thread emissions to the receivers' thread.

    Signal arguments are plain str/bool: a missing reason or error is "" (Qt signals have
    no None for str).
    """

    runner_state_changed = Signal(str, str, str)  # model, state, reason
    runner_log_line = Signal(str, str)  # model, line
    listener_changed = Signal(str, str, bool, str)  # name, address, listening, error
    config_applied = Signal(str)  # config path
    config_rejected = Signal(str, str)  # config path, error
    rpc_worker_changed = Signal(str, str, str)  # host:port, state, reason
    peer_changed = Signal(str, bool, str)  # peer name, available, reason
    app_log = Signal(str, str)  # level name, formatted line
    busy_changed = Signal(bool)  # True while an action started with run() is pending
    action_failed = Signal(str)  # a user-readable message for a failed run() action

    def __init__(self, service: EventSource, parent: QObject | None = None, *,
                 loop: asyncio.AbstractEventLoop | None = None,
                 capture_logs: bool = True, log_level: int = logging.NOTSET) -> None:
        super().__init__(parent)
        self._service = service
        # The loop actions run on: the one given, else the one running now (the app builds
        # the bridge inside its main coroutine). Kept so a slot invoked while no loop is
        # "running" (a test calling QAction.trigger() between loop runs) still schedules.
        if loop is None:
            with contextlib.suppress(RuntimeError):
                loop = asyncio.get_running_loop()
        self._loop = loop
        self._unsubscribe = service.events.subscribe(self._on_event)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handler: _SignalLogHandler | None = None
        if capture_logs:
            self._handler = _SignalLogHandler(self, log_level)
            logging.getLogger().addHandler(self._handler)

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    # ---- events -> signals ---------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        match event:
            case RunnerStateChanged(model, state, reason):
                self.runner_state_changed.emit(model, state, reason or "")
            case RunnerLogLine(model, line):
                self.runner_log_line.emit(model, line)
            case ListenerStateChanged(name, address, listening, error):
                self.listener_changed.emit(name, address, listening, error or "")
            case ConfigApplied(path):
                self.config_applied.emit(path)
            case ConfigRejected(path, error):
                self.config_rejected.emit(path, error)
            case RpcWorkerStateChanged(address, state, reason):
                self.rpc_worker_changed.emit(address, state, reason or "")
            case PeerStateChanged(name, available, reason):
                self.peer_changed.emit(name, available, reason or "")

    # ---- actions -------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, Any], what: str | None = None
            ) -> asyncio.Task[Any] | None:
        """Schedule a Service coroutine from a slot; a failure becomes `action_failed`.

        `what` names the action for the failure message ("load tiny" gives "cannot load
        tiny: <error>"; without it the message is the error alone). Returns the task (kept
        referenced here until it ends), or None when there is no event loop.
        """
        loop = self._loop
        with contextlib.suppress(RuntimeError):
            loop = asyncio.get_running_loop()
        if loop is None or loop.is_closed():
            # No qasync loop (a bare pytest-qt test, or after the app's loop ended): close
            # the coroutine so it does not warn "never awaited", and say why nothing ran.
            coro.close()
            self.action_failed.emit(_failure(what, "the app is not running its event loop"))
            return None
        name = what or getattr(coro, "__qualname__", "action")
        task = loop.create_task(coro, name=f"gui:{name}")
        was_busy = self.busy
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._finished(done, what))
        if not was_busy:
            self.busy_changed.emit(True)
        return task

    def _finished(self, task: asyncio.Task[Any], what: str | None) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                if isinstance(exc, LlamaRunnerError):
                    message = exc.message  # written for users already
                else:
                    log.error("%s failed", task.get_name(), exc_info=exc)
                    message = str(exc) or type(exc).__name__
                self.action_failed.emit(_failure(what, message))
        if not self.busy:
            self.busy_changed.emit(False)

    async def cancel_pending(self) -> None:
        """Cancel actions still running (at quit) and wait until they have ended."""
        tasks = [task for task in self._tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        """Stop listening to the Service and to the root logger."""
        self._unsubscribe()
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
            self._handler.detach()
            self._handler = None


def _failure(what: str | None, message: str) -> str:
    return f"cannot {what}: {message}" if what else message


class _SignalLogHandler(logging.Handler):
    """Root-logger handler that forwards records to the bridge's `app_log` signal."""

    def __init__(self, bridge: ServiceBridge, level: int) -> None:
        super().__init__(level)
        self.setFormatter(logging.Formatter(FORMAT))
        self._bridge: ServiceBridge | None = bridge
        # A slot connected to app_log that logs would call back into emit() on the same
        # thread (direct connection) and recurse without end; drop such nested records.
        self._local = threading.local()

    def detach(self) -> None:
        self._bridge = None

    def emit(self, record: logging.LogRecord) -> None:
        bridge = self._bridge
        if bridge is None or getattr(self._local, "active", False):
            return
        self._local.active = True
        try:
            bridge.app_log.emit(record.levelname, self.format(record))
        except RuntimeError:
            # The C++ side of the bridge is already gone (interpreter shutdown).
            self._bridge = None
        except Exception:
            self.handleError(record)
        finally:
            self._local.active = False
