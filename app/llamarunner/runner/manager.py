"""Decides which llama-server runs: single-flight starts, FIFO queue, LRU eviction, idle TTL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import aiohttp

from .. import paths
from ..config.schema import ArgValue, ModelConfig, SchedulerConfig
from ..core.errors import (
    AudioModelCannotChatError,
    LlamaRunnerError,
    ModelNotFoundError,
    NotAudioModelError,
    QueueFullError,
    RunnerFailedError,
    ServiceStoppingError,
)
from ..core.events import EventBus
from ..core.tasks import BackgroundTasks
from ..library.whisper import AUDIO_KIND
from .model_runner import ModelRunner
from .policy import Candidate, choose_eviction
from .registry import ChildRegistry
from .results import LoadResult, UnloadResult
from .state import OCCUPYING_STATES, RunnerState

log = logging.getLogger(__name__)


@dataclass
class _Waiter:
    model: str
    future: asyncio.Future[ModelRunner]
    overrides: dict[str, ArgValue] | None = None

    def accepts(self, runner: ModelRunner) -> bool:
        """Whether the running process has the load settings this request asked for."""
        return self.overrides is None or self.overrides == runner.active_overrides


@dataclass(frozen=True)
class RunnerInfo:
    """A read-only view of one runner for APIs, CLI and GUI."""

    name: str
    state: str
    pid: int | None
    port: int | None
    inflight: int
    loaded_at: float | None
    expires_at: float | None  # wall-clock time of the idle unload; None = never/not loaded
    last_error: str | None
    model_path: str
    args: Mapping[str, ArgValue]  # what the running process was started with


class LeasedModel(Protocol):
    """What routes may ask of the runner behind a lease (a peer's model has no process)."""

    @property
    def name(self) -> str: ...

    def effective_args(self) -> dict[str, ArgValue]: ...

    def describe_argv(self) -> Sequence[str]: ...


class RemoteCall(Protocol):
    """How a request for a model another server runs is sent (peers/client.py)."""

    async def post(self, http: aiohttp.ClientSession, path: str, body: bytes,
                   content_type: str = ...) -> Any: ...


class Lease:
    """Permission to send requests to a ready runner; release it when the response ends."""

    # Set on leases for a model a peer serves; None for our own runners.
    remote: RemoteCall | None = None
    runner: LeasedModel

    def __init__(self, manager: RunnerManager, runner: ModelRunner, load_wait: float) -> None:
        self._manager = manager
        self.runner = self._runner = runner
        self.load_wait = load_wait  # seconds this request waited for a load (0 when warm)
        self._released = False

    @property
    def base_url(self) -> str:
        return self._runner.base_url

    @property
    def headers(self) -> Mapping[str, str]:
        """Headers every request to the runner needs (its llama-server's key); read-only."""
        return self._runner.auth_headers

    @property
    def first_token_timeout(self) -> float:
        """Seconds to wait for llama-server's first response byte (math.inf = forever)."""
        return self._manager.scheduler.first_token_timeout

    def release(self, keep_alive: float | None = None) -> None:
        """End the request; `keep_alive` (seconds, inf = forever) replaces the model's TTL."""
        if not self._released:
            self._released = True
            self._manager._release(self._runner, keep_alive)

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


BinaryResolver = Callable[[ModelConfig], Path]
# The lease for a model another server runs (a peer), or None when no peer has it.
RemoteLeases = Callable[[str, float], Lease | None]
# Checks before a model's process is spawned (its RPC workers answer, rpc/monitor.py);
# raises a RunnerFailedError that fails the waiting requests with nothing spawned.
Preflight = Callable[[ModelConfig], Awaitable[None]]


class RunnerManager:
    """The one writer of every ModelRunner's state.

    All decisions happen in `_pump`, a synchronous pass over the FIFO of waiting requests
    run after anything changes; slow work (start, stop) runs in named background tasks
    that call `_pump` again when they finish. Being synchronous, a pass cannot interleave
    with another, so no locks are needed on the single event loop thread.
    """

    def __init__(
        self,
        *,
        events: EventBus,
        http: aiohttp.ClientSession,
        scheduler: SchedulerConfig,
        resolve_binary: BinaryResolver,
        ttl_for: Callable[[str], float],
        log_dir: Path | None = None,
        registry: ChildRegistry | None = None,
        remote_lease: RemoteLeases | None = None,
        preflight: Preflight | None = None,
    ) -> None:
        self._events = events
        self._preflight: Preflight = preflight or _nothing_to_check
        self._remote_lease: RemoteLeases = remote_lease or _no_remote
        self._http = http
        self._scheduler = scheduler
        self._resolve_binary = resolve_binary
        self._ttl_for = ttl_for
        self._log_dir = log_dir
        self._runners: dict[str, ModelRunner] = {}
        self._retired: set[str] = set()  # removed from config; stopping, then forgotten
        self._waiters: deque[_Waiter] = deque()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._expires_at: dict[str, float] = {}
        self._starts = BackgroundTasks("runner-start")
        self._stops = BackgroundTasks("runner-stop")
        self._changed = asyncio.Event()
        self._closing = False
        self._registry = registry or ChildRegistry(paths.data_dir() / "runners.json")
        # Before anything new is spawned: children a crashed earlier run left behind
        # (macOS and Windows have no parent-death signal to take them down with it).
        self._registry.clean_stale()

    # ---- configuration -------------------------------------------------------------

    @property
    def scheduler(self) -> SchedulerConfig:
        return self._scheduler

    def set_scheduler(self, scheduler: SchedulerConfig) -> None:
        self._scheduler = scheduler
        self._pump()

    def set_models(
        self, models: Mapping[str, ModelConfig], restart: frozenset[str] = frozenset()
    ) -> None:
        """Adopt a new model table: add, retire, and restart runners whose command changed.

        A runner that must go is drained first: its running requests finish.
        """
        for name, model in models.items():
            runner = self._runners.get(name)
            if runner is None or name in self._retired:
                if runner is not None:
                    # Re-added while its old process is still stopping: keep the runner.
                    self._retired.discard(name)
                    runner.model = model
                    continue
                self._runners[name] = ModelRunner(
                    model,
                    events=self._events,
                    http=self._http,
                    log_dir=self._log_dir,
                    on_unexpected_exit=self._on_unexpected_exit,
                    registry=self._registry,
                )
                continue
            command_changed = (
                (model.path, model.runtime, dict(model.args), model.rpc)
                != (runner.model.path, runner.model.runtime, dict(runner.model.args),
                    runner.model.rpc)
            )
            runner.model = model
            if (command_changed or name in restart) and runner.state in OCCUPYING_STATES:
                self._drain(runner)
            elif runner.state is RunnerState.READY and runner.inflight == 0:
                self._schedule_idle_unload(runner)  # the TTL may have changed
        for name in list(self._runners):
            if name not in models and name not in self._retired:
                runner = self._runners[name]
                if runner.state in OCCUPYING_STATES:
                    self._retired.add(name)
                    self._drain(runner)
                else:
                    del self._runners[name]
                self._fail_waiters(name, ModelNotFoundError(name))
        self._pump()

    # ---- requests ----------------------------------------------------------------

    def has_model(self, name: str) -> bool:
        return name in self._runners and name not in self._retired

    async def acquire(
        self, name: str, overrides: Mapping[str, ArgValue] | None = None, *,
        kind: str | None = "llm",
    ) -> Lease:
        """Wait until `name` is ready (starting it if needed) and hold it for one request.

        `overrides` are load-time args (Ollama's num_ctx…); when the running process was
        started with other ones it is restarted once its running requests finish. `kind`
        is the kind of model the request is for ("llm" text, "audio" speech; None: any):
        a request for the other kind is refused before anything loads.
        """
        if self._closing:
            raise ServiceStoppingError()
        if not self.has_model(name):
            remote = self._remote_lease(name, self._scheduler.first_token_timeout)
            if remote is None:
                raise ModelNotFoundError(name)
            if kind == AUDIO_KIND:
                raise NotAudioModelError(name)
            return remote
        runner = self._runners[name]
        if kind is not None and runner.model.kind != kind:
            if kind == AUDIO_KIND:
                raise NotAudioModelError(name)
            raise AudioModelCannotChatError(name)
        wanted = dict(overrides) if overrides is not None else None
        if (runner.state is RunnerState.READY and not runner.draining
                and (wanted is None or wanted == runner.active_overrides)):
            # The hot path: a warm model is granted at once, with no queue entry.
            self._grant(runner)
            return Lease(self, runner, 0.0)
        waiter = _Waiter(name, asyncio.get_running_loop().create_future(), wanted)
        if len(self._waiters) >= self._scheduler.max_queue:
            raise QueueFullError(self._scheduler.max_queue)
        self._waiters.append(waiter)
        started = time.monotonic()
        self._pump()
        try:
            granted = await waiter.future
        except asyncio.CancelledError:
            # The client went away while queued or while its model loaded.
            fut = waiter.future
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._release(fut.result())
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            self._pump()
            raise
        return Lease(self, granted, time.monotonic() - started)

    def _grant(self, runner: ModelRunner) -> None:
        runner.inflight += 1
        runner.last_used = time.monotonic()
        self._cancel_idle_unload(runner)

    def _release(self, runner: ModelRunner, keep_alive: float | None = None) -> None:
        runner.inflight -= 1
        runner.last_used = time.monotonic()
        runner.keep_alive = keep_alive
        if runner.inflight == 0 and runner.state is RunnerState.READY:
            if runner.draining:
                self._begin_stop(runner, "drained")
            else:
                self._schedule_idle_unload(runner)
        self._pump()

    # ---- explicit load / unload ------------------------------------------------------

    async def load(
        self, name: str, *, keep_alive: float | None = None,
        overrides: Mapping[str, ArgValue] | None = None,
    ) -> LoadResult:
        """Make sure the model is loaded; a failure to start is returned, not raised."""
        if not self.has_model(name):
            if self._remote_lease(name, 0.0) is not None:
                return LoadResult.ALREADY_LOADED  # a peer's model: the peer loads it
            raise ModelNotFoundError(name)
        was_ready = self._runners[name].state is RunnerState.READY
        try:
            lease = await self.acquire(name, overrides, kind=None)
        except RunnerFailedError:
            return LoadResult.FAILED
        lease.release(keep_alive)
        return LoadResult.ALREADY_LOADED if was_ready else LoadResult.LOADED

    async def unload(self, name: str) -> UnloadResult:
        """Stop a model once its running requests have finished."""
        target = self._runners.get(name)
        if target is None or target.state not in OCCUPYING_STATES:
            return UnloadResult.NOT_LOADED
        self._drain(target)
        await self._wait_until(lambda: target.state not in OCCUPYING_STATES)
        return UnloadResult.UNLOADED

    async def _wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            event = self._changed
            await event.wait()

    def _notify(self) -> None:
        # Swap in a fresh event so every current waiter wakes exactly once per change.
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    # ---- the scheduling pass -------------------------------------------------------

    def _pump(self) -> None:
        if self._closing:
            return
        for loaded in list(self._runners.values()):
            if loaded.state is RunnerState.READY and loaded.draining and loaded.inflight == 0:
                self._begin_stop(loaded, "drained")
        wanted: set[str] = set()
        blocked_on_capacity = False
        for waiter in list(self._waiters):
            if waiter.future.done():
                self._waiters.remove(waiter)
                continue
            runner = self._runners.get(waiter.model)
            if runner is None or waiter.model in self._retired:
                self._waiters.remove(waiter)
                waiter.future.set_exception(ModelNotFoundError(waiter.model))
                continue
            if runner.state is RunnerState.READY and not runner.draining:
                if waiter.accepts(runner):
                    self._waiters.remove(waiter)
                    self._grant(runner)
                    waiter.future.set_result(runner)
                    continue
                # Other load settings asked for: restart once running requests end.
                assert waiter.overrides is not None
                runner.next_overrides = waiter.overrides
                self._drain(runner)
            wanted.add(runner.name)
            if runner.state not in (RunnerState.STOPPED, RunnerState.FAILED):
                continue  # starting, stopping or draining: a later pass will serve it
            if blocked_on_capacity:
                continue  # loads happen in queue order; don't let later ones jump ahead
            if self._free_slots() > 0:
                # The first request in line decides the load settings; None means defaults.
                runner.next_overrides = waiter.overrides or {}
                self._begin_start(runner)
                continue
            blocked_on_capacity = True
            if not self._slot_being_freed():
                self._evict_one(wanted)

    def _occupied(self) -> list[ModelRunner]:
        return [r for r in self._runners.values() if r.state in OCCUPYING_STATES]

    def _free_slots(self) -> int:
        return self._scheduler.max_loaded_models - len(self._occupied())

    def _slot_being_freed(self) -> bool:
        return any(
            r.state is RunnerState.STOPPING or r.draining for r in self._occupied()
        )

    def _evict_one(self, wanted: set[str]) -> None:
        candidates = [
            Candidate(r.name, r.inflight, r.last_used, r.name in wanted)
            for r in self._occupied()
            if r.state is RunnerState.READY
        ]
        eviction = choose_eviction(candidates)
        if eviction is None:
            return  # everything loaded is wanted or still starting; wait for a change
        victim = self._runners[eviction.name]
        log.info("evicting %s to make room (%s)", victim.name,
                 "draining" if eviction.drain else "idle")
        self._drain(victim)

    def _drain(self, runner: ModelRunner) -> None:
        """Take no new requests for this runner and stop it once the running ones end."""
        if runner.state is RunnerState.STARTING:
            runner.draining = True  # stopped as soon as it is ready (a failed start just ends)
            return
        if runner.state is not RunnerState.READY:
            return
        runner.draining = True
        if runner.inflight == 0:
            self._begin_stop(runner, "drained")

    # ---- starting and stopping -----------------------------------------------------

    def _begin_start(self, runner: ModelRunner) -> None:
        try:
            binary = self._resolve_binary(runner.model)
        except LlamaRunnerError as exc:
            self._fail_waiters(runner.name, exc)
            return
        runner.draining = False
        runner.set_state(RunnerState.STARTING)
        self._notify()
        runner.start_task = self._starts.spawn(
            self._run_start(runner, binary), f"start:{runner.name}"
        )

    async def _run_start(self, runner: ModelRunner, binary: Path) -> None:
        try:
            await self._preflight(runner.model)
        except RunnerFailedError as exc:
            # Nothing was spawned, so nothing is reaped (the runner's previous process,
            # long gone, is left alone). FAILED, like any failed start: the next request
            # checks again.
            runner.start_task = None
            self._start_failed(runner, exc)
            return
        except asyncio.CancelledError:
            runner.start_task = None
            raise
        try:
            await runner.start(binary, self._scheduler.load_timeout)
        except RunnerFailedError as exc:
            runner.last_error = exc
            await runner.stop(grace=0)  # reap whatever is left of the tree
            self._start_failed(runner, exc)
            return
        except asyncio.CancelledError:
            await runner.stop(grace=0)
            raise
        finally:
            runner.start_task = None
        runner.last_error = None
        runner.last_used = time.monotonic()
        runner.set_state(RunnerState.READY)
        self._notify()
        self._pump()
        if runner.state is RunnerState.READY and runner.inflight == 0 and not runner.draining:
            self._schedule_idle_unload(runner)

    def _start_failed(self, runner: ModelRunner, exc: RunnerFailedError) -> None:
        runner.last_error = exc
        runner.set_state(RunnerState.FAILED, exc.reason)
        self._fail_waiters(runner.name, exc)
        self._forget_if_retired(runner)
        self._notify()
        self._pump()

    def _begin_stop(self, runner: ModelRunner, reason: str) -> None:
        self._cancel_idle_unload(runner)
        runner.set_state(RunnerState.STOPPING, reason)
        self._notify()
        self._stops.spawn(self._run_stop(runner), f"stop:{runner.name}")

    async def _run_stop(self, runner: ModelRunner) -> None:
        try:
            await runner.stop(self._scheduler.stop_grace)
        finally:
            runner.draining = False
            runner.set_state(RunnerState.STOPPED)
            self._forget_if_retired(runner)
            self._notify()
            self._pump()

    def _forget_if_retired(self, runner: ModelRunner) -> None:
        if runner.name in self._retired and runner.state not in OCCUPYING_STATES:
            self._retired.discard(runner.name)
            if self._runners.get(runner.name) is runner:
                del self._runners[runner.name]

    def _on_unexpected_exit(self, runner: ModelRunner) -> None:
        self._cancel_idle_unload(runner)
        runner.draining = False
        self._forget_if_retired(runner)
        self._notify()
        self._pump()

    def _fail_waiters(self, name: str, exc: BaseException) -> None:
        for waiter in list(self._waiters):
            if waiter.model == name:
                self._waiters.remove(waiter)
                if not waiter.future.done():
                    waiter.future.set_exception(exc)

    # ---- idle unload (TTL) ---------------------------------------------------------

    def _schedule_idle_unload(self, runner: ModelRunner) -> None:
        self._cancel_idle_unload(runner)
        ttl = runner.keep_alive if runner.keep_alive is not None else self._ttl_for(runner.name)
        if math.isinf(ttl):
            return
        if ttl <= 0:
            self._idle_expired(runner)
            return
        loop = asyncio.get_running_loop()
        self._timers[runner.name] = loop.call_later(ttl, self._idle_expired, runner)
        self._expires_at[runner.name] = time.time() + ttl

    def _cancel_idle_unload(self, runner: ModelRunner) -> None:
        timer = self._timers.pop(runner.name, None)
        if timer is not None:
            timer.cancel()
        self._expires_at.pop(runner.name, None)

    def _idle_expired(self, runner: ModelRunner) -> None:
        self._timers.pop(runner.name, None)
        self._expires_at.pop(runner.name, None)
        if self._closing or runner.state is not RunnerState.READY or runner.inflight:
            return
        if any(w.model == runner.name for w in self._waiters):
            return
        self._begin_stop(runner, "idle")

    # ---- views and shutdown --------------------------------------------------------

    def runner(self, name: str) -> ModelRunner | None:
        return self._runners.get(name)

    def snapshot(self) -> list[RunnerInfo]:
        infos = []
        for runner in self._runners.values():
            infos.append(
                RunnerInfo(
                    name=runner.name,
                    state=runner.state.value,
                    pid=runner.pid if runner.state in OCCUPYING_STATES else None,
                    port=runner.port if runner.state in OCCUPYING_STATES else None,
                    inflight=runner.inflight,
                    loaded_at=runner.loaded_at,
                    expires_at=self._expires_at.get(runner.name),
                    last_error=runner.last_error.message if runner.last_error else None,
                    model_path=runner.model.path,
                    args=runner.effective_args(),
                )
            )
        return infos

    def queued_by_model(self) -> dict[str, int]:
        """How many requests wait for each model (a start, a slot, other load options)."""
        counts: dict[str, int] = {}
        for waiter in self._waiters:
            counts[waiter.model] = counts.get(waiter.model, 0) + 1
        return counts

    async def shutdown(self) -> None:
        """Refuse new work, fail queued requests, stop every runner and reap it."""
        self._closing = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(ServiceStoppingError())
        self._waiters.clear()
        await self._starts.cancel_all()  # a cancelled start reaps its own process
        await self._stops.wait_all()  # stops already under way are allowed to finish
        stops = []
        for runner in self._runners.values():
            if runner.state in (RunnerState.READY, RunnerState.STARTING):
                runner.set_state(RunnerState.STOPPING, "shutdown")
                stops.append(self._stop_for_shutdown(runner))
            elif runner.state is RunnerState.FAILED:
                stops.append(self._stop_for_shutdown(runner))
        await asyncio.gather(*stops, return_exceptions=True)

    async def _stop_for_shutdown(self, runner: ModelRunner) -> None:
        try:
            await runner.stop(self._scheduler.stop_grace)
        finally:
            if runner.state is not RunnerState.STOPPED:
                runner.set_state(RunnerState.STOPPED, "shutdown")


async def _nothing_to_check(model: ModelConfig) -> None:
    del model


def _no_remote(name: str, first_token_timeout: float) -> Lease | None:
    del name, first_token_timeout
    return None
