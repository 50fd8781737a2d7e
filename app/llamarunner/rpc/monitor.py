"""The state of every RPC worker the models name: probed before a start and now and then.

The library shows it, and a model whose worker does not answer fails its request at once
with a 503 naming the worker instead of leaving llama-server to abort while loading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

from ..config.schema import ModelConfig
from ..core.errors import RpcWorkerUnavailableError
from ..core.events import EventBus, RpcWorkerStateChanged
from ..core.tasks import BackgroundTasks
from .probe import PROBE_TIMEOUT_S, ProbeResult, WorkerState, probe_worker

log = logging.getLogger(__name__)

# How often every known worker is probed while the app runs.
RPC_CHECK_INTERVAL_S = 15.0


class Probe(Protocol):
    def __call__(self, address: str, within: float = ..., *,
                 handshake: bool = ...) -> Awaitable[ProbeResult]: ...


@dataclass(frozen=True)
class WorkerStatus:
    """What is known of one worker: the last probe's answer and the models that use it."""

    address: str  # host:port, as the models' `rpc` lists name it
    state: WorkerState = WorkerState.UNKNOWN
    reason: str | None = None
    checked_at: float | None = None  # wall-clock time of the last probe
    models: tuple[str, ...] = ()
    version: str | None = None  # the RPC protocol version it answered with


class WorkerMonitor:
    """Probes the workers of every model with `rpc`; publishes RpcWorkerStateChanged.

    `running` names the models whose llama-server is up (or starting, or stopping): their
    workers are only connected to, not asked for a handshake, since a worker serves one
    client at a time and is busy with ours.
    """

    def __init__(
        self,
        events: EventBus,
        *,
        running: Callable[[], Collection[str]] = frozenset,
        interval: float = RPC_CHECK_INTERVAL_S,
        timeout: float = PROBE_TIMEOUT_S,
        probe: Probe = probe_worker,
    ) -> None:
        self._events = events
        self._running = running
        self._interval = interval
        self._timeout = timeout
        self._probe_fn = probe
        self._statuses: dict[str, WorkerStatus] = {}
        self._tasks = BackgroundTasks("rpc-workers")
        self._inflight: dict[str, asyncio.Task[ProbeResult]] = {}
        self._wake: asyncio.Event | None = None
        self._started = False

    # ---- the model table -----------------------------------------------------------

    def set_models(self, models: Mapping[str, ModelConfig]) -> None:
        """Know the workers of these models; new ones are probed at once when started."""
        users: dict[str, list[str]] = {}
        for name, model in models.items():
            for address in model.rpc:
                users.setdefault(address, []).append(name)
        new = [address for address in users if address not in self._statuses]
        self._statuses = {
            address: _with_models(self._statuses.get(address), address, tuple(names))
            for address, names in users.items()
        }
        if new and self._wake is not None:
            self._wake.set()

    # ---- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Probe every worker now and every `interval` seconds until close()."""
        if self._started:
            return
        self._started = True
        self._wake = asyncio.Event()
        self._tasks.spawn(self._keep_checking(), "check")

    async def close(self) -> None:
        await self._tasks.cancel_all()
        self._inflight.clear()
        self._started = False

    # ---- what the rest of the app reads ----------------------------------------------

    def statuses(self) -> list[WorkerStatus]:
        """Every worker a model names, in the order the models name them."""
        return list(self._statuses.values())

    def status(self, address: str) -> WorkerStatus | None:
        return self._statuses.get(address)

    # ---- probing -------------------------------------------------------------------

    async def refresh(self) -> list[WorkerStatus]:
        """Probe every worker now (concurrently); return what is known afterwards."""
        await asyncio.gather(*(self._shared_probe(address) for address in self._statuses))
        return self.statuses()

    async def check(self, model: ModelConfig) -> None:
        """Probe the model's workers (concurrently) before its llama-server starts.

        Raises RpcWorkerUnavailableError naming each worker that is not up.
        """
        if not model.rpc:
            return
        results = await asyncio.gather(
            *(self._probe_once(address, starting=model.name) for address in model.rpc))
        failures = [(r.address, r.state.value, r.reason) for r in results if not r.up]
        if failures:
            raise RpcWorkerUnavailableError(model.name, failures)

    async def _keep_checking(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            try:
                await self.refresh()
            except Exception:
                # A probe never raises on its own; whatever did must not end the checks.
                log.exception("checking the RPC workers failed; trying again in %gs",
                              self._interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)

    async def _shared_probe(self, address: str) -> ProbeResult:
        """One probe per worker at a time: a second caller waits for the running one."""
        task = self._inflight.get(address)
        if task is None:
            task = self._tasks.spawn(self._probe_once(address), f"probe:{address}")
            self._inflight[address] = task
            task.add_done_callback(lambda _done: self._forget_probe(address, task))
        return await asyncio.shield(task)

    def _forget_probe(self, address: str, task: asyncio.Task[ProbeResult]) -> None:
        if self._inflight.get(address) is task:
            del self._inflight[address]

    async def _probe_once(self, address: str, *, starting: str | None = None) -> ProbeResult:
        status = self._statuses.get(address)
        running = set(self._running())
        holders = [name for name in (status.models if status else ())
                   if name in running and name != starting]
        result = await self._probe_fn(address, self._timeout, handshake=not holders)
        if holders and result.state is WorkerState.BUSY:
            result = ProbeResult(
                address, WorkerState.BUSY,
                f"in use by model '{holders[0]}' of this app; an RPC worker serves one "
                "llama-server at a time", checked_at=result.checked_at)
        self._record(result)
        return result

    def _record(self, result: ProbeResult) -> None:
        before = self._statuses.get(result.address)
        if before is None:
            return  # no model names it any more
        self._statuses[result.address] = WorkerStatus(
            result.address, result.state, result.reason, result.checked_at, before.models,
            result.version)
        if (before.state, before.reason) == (result.state, result.reason):
            return
        if result.state in (WorkerState.DOWN, WorkerState.NOT_RPC):
            log.warning("RPC worker %s is %s: %s", result.address, result.state.value,
                        result.reason)
        else:
            log.info("RPC worker %s is %s: %s", result.address, result.state.value,
                     result.reason)
        self._events.publish(RpcWorkerStateChanged(result.address, result.state.value,
                                                   result.reason))


def _with_models(status: WorkerStatus | None, address: str,
                 models: tuple[str, ...]) -> WorkerStatus:
    if status is None:
        return WorkerStatus(address, models=models)
    return WorkerStatus(status.address, status.state, status.reason, status.checked_at,
                        models, status.version)
