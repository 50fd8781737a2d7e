"""The worker monitor: which workers the models name, probes before a start and meanwhile."""

from __future__ import annotations

import asyncio
import time

import pytest

from llamarunner.config.schema import ModelConfig
from llamarunner.core.errors import RpcWorkerUnavailableError, RunnerFailedError
from llamarunner.core.events import Event, EventBus, RpcWorkerStateChanged
from llamarunner.rpc.monitor import WorkerMonitor
from llamarunner.rpc.probe import ProbeResult, WorkerState

A, B, C = "10.0.0.5:50052", "10.0.0.6:50052", "10.0.0.7:50052"


def model(name: str, *rpc: str) -> ModelConfig:
    return ModelConfig(name=name, path=f"/models/{name}.gguf", rpc=tuple(rpc))


class Probes:
    """A probe function whose answers the test sets; records every call."""

    def __init__(self, delay: float = 0.0) -> None:
        self.states: dict[str, WorkerState] = {}
        self.calls: list[tuple[str, bool]] = []
        self.delay = delay

    async def __call__(self, address: str, within: float = 3.0, *,
                       handshake: bool = True) -> ProbeResult:
        self.calls.append((address, handshake))
        await asyncio.sleep(self.delay)
        state = self.states.get(address, WorkerState.UP)
        reason = {WorkerState.UP: "RPC protocol 7.0.0",
                  WorkerState.DOWN: "connection refused: nothing listens on port 50052 there",
                  WorkerState.BUSY: "accepts connections",
                  WorkerState.NOT_RPC: "it answered, but not as a llama.cpp RPC worker"}[state]
        return ProbeResult(address, state, reason, "7.0.0" if state is WorkerState.UP else None,
                           time.time())


@pytest.fixture
def events() -> tuple[EventBus, list[Event]]:
    bus = EventBus()
    seen: list[Event] = []
    bus.subscribe(seen.append)
    return bus, seen


def test_it_knows_every_worker_of_every_model(events: tuple[EventBus, list[Event]]) -> None:
    monitor = WorkerMonitor(events[0], probe=Probes())
    monitor.set_models({"x": model("x", A, B), "y": model("y", B), "plain": model("plain")})
    assert [(s.address, s.state, s.models) for s in monitor.statuses()] == [
        (A, WorkerState.UNKNOWN, ("x",)), (B, WorkerState.UNKNOWN, ("x", "y"))]
    monitor.set_models({"y": model("y", B, C)})
    assert [s.address for s in monitor.statuses()] == [B, C]
    assert monitor.status(A) is None


async def test_a_dead_worker_fails_the_start_naming_it(
        events: tuple[EventBus, list[Event]]) -> None:
    bus, seen = events
    probes = Probes(delay=0.2)
    probes.states[B] = WorkerState.DOWN
    monitor = WorkerMonitor(bus, probe=probes)
    monitor.set_models({"x": model("x", A, B)})
    started = time.monotonic()
    with pytest.raises(RpcWorkerUnavailableError) as info:
        await monitor.check(model("x", A, B))
    assert time.monotonic() - started < 0.35  # both probed at once
    error = info.value
    assert isinstance(error, RunnerFailedError)  # the manager's failed-start path
    assert (error.status, error.code) == (503, "rpc_worker_unavailable")
    assert error.workers == [B]
    assert error.message == (
        "model 'x' cannot start: RPC worker 10.0.0.6:50052 is down (connection refused: "
        "nothing listens on port 50052 there). To fix: start `llamarunner worker --host "
        "<its private address> --port <port>` there, or remove it from the model's `rpc` "
        "list")
    assert error.reason == "RPC worker 10.0.0.6:50052 is down"
    assert monitor.status(A).state is WorkerState.UP  # type: ignore[union-attr]
    assert monitor.status(B).state is WorkerState.DOWN  # type: ignore[union-attr]
    assert RpcWorkerStateChanged(
        B, "down", "connection refused: nothing listens on port 50052 there") in seen


async def test_every_failing_worker_is_named(events: tuple[EventBus, list[Event]]) -> None:
    probes = Probes()
    probes.states.update({A: WorkerState.NOT_RPC, B: WorkerState.DOWN})
    monitor = WorkerMonitor(events[0], probe=probes)
    with pytest.raises(RpcWorkerUnavailableError) as info:
        await monitor.check(model("x", A, B, C))
    assert info.value.workers == [A, B]
    assert f"RPC workers {A} is not-rpc" in info.value.message
    assert f"{B} is down" in info.value.message


async def test_all_up_lets_the_start_go_on(events: tuple[EventBus, list[Event]]) -> None:
    probes = Probes()
    monitor = WorkerMonitor(events[0], probe=probes)
    await monitor.check(model("x", A, B))
    await monitor.check(model("plain"))
    assert probes.calls == [(A, True), (B, True)]


async def test_a_worker_another_running_model_holds_is_busy_by_name(
        events: tuple[EventBus, list[Event]]) -> None:
    probes = Probes()
    probes.states[A] = WorkerState.BUSY
    running = {"x"}
    monitor = WorkerMonitor(events[0], probe=probes, running=lambda: running)
    monitor.set_models({"x": model("x", A), "y": model("y", A)})
    with pytest.raises(RpcWorkerUnavailableError) as info:
        await monitor.check(model("y", A))
    # Not asked for a handshake: it serves x's llama-server and would answer nobody else.
    assert probes.calls == [(A, False)]
    assert "in use by model 'x' of this app" in info.value.message
    assert "wait until the other llama-server lets go of it" in info.value.message
    # The model being started (STARTING: "running") does not hold its own worker.
    probes.states[A] = WorkerState.UP
    await monitor.check(model("x", A))
    assert probes.calls[-1] == (A, True)


async def test_changes_are_published_once(events: tuple[EventBus, list[Event]]) -> None:
    bus, seen = events
    probes = Probes()
    monitor = WorkerMonitor(bus, probe=probes)
    monitor.set_models({"x": model("x", A)})
    await monitor.refresh()
    await monitor.refresh()
    probes.states[A] = WorkerState.DOWN
    await monitor.refresh()
    changes = [e for e in seen if isinstance(e, RpcWorkerStateChanged)]
    assert [(e.address, e.state) for e in changes] == [(A, "up"), (A, "down")]
    status = monitor.status(A)
    assert status is not None and status.checked_at is not None
    assert status.models == ("x",) and status.version is None


async def test_concurrent_refreshes_share_one_probe(
        events: tuple[EventBus, list[Event]]) -> None:
    probes = Probes(delay=0.1)
    monitor = WorkerMonitor(events[0], probe=probes)
    monitor.set_models({"x": model("x", A, B)})
    await asyncio.gather(monitor.refresh(), monitor.refresh())
    assert sorted(probes.calls) == [(A, True), (B, True)]
    await monitor.close()


async def test_it_keeps_checking_and_probes_new_workers_at_once(
        events: tuple[EventBus, list[Event]]) -> None:
    probes = Probes()
    monitor = WorkerMonitor(events[0], probe=probes, interval=3600)
    monitor.set_models({"x": model("x", A)})
    monitor.start()
    try:
        for _ in range(100):
            if probes.calls:
                break
            await asyncio.sleep(0.01)
        assert probes.calls == [(A, True)]
        monitor.set_models({"x": model("x", A), "y": model("y", B)})  # wakes it up
        for _ in range(100):
            if (B, True) in probes.calls:
                break
            await asyncio.sleep(0.01)
        assert (B, True) in probes.calls
    finally:
        await monitor.close()
    calls = len(probes.calls)
    await asyncio.sleep(0.05)
    assert len(probes.calls) == calls  # closed: no more probes


async def test_periodic_checks(events: tuple[EventBus, list[Event]]) -> None:
    probes = Probes()
    monitor = WorkerMonitor(events[0], probe=probes, interval=0.02)
    monitor.set_models({"x": model("x", A)})
    monitor.start()
    await asyncio.sleep(0.2)
    await monitor.close()
    assert len(probes.calls) >= 3
