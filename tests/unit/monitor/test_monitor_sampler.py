"""Sampler on real processes, the pids provider over the manager, and the monitor task."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import psutil
import pytest

from llamarunner.monitor import (
    GpuSample,
    MetricsHistory,
    Sample,
    Sampler,
    ServiceMonitor,
    pids_from_manager,
)
from llamarunner.monitor.sampler import busy_percent


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen(["sleep", "30"])
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def test_system_readings_are_sane() -> None:
    sample = Sampler(dict, gpu_readers=[]).sample()
    assert 0.0 <= sample.cpu_percent <= 100.0
    assert 0 < sample.ram_used <= sample.ram_total
    assert abs(sample.time - time.time()) < 5
    assert sample.runners == {} and sample.gpus == []


def test_runner_usage_of_a_real_child(sleeper: subprocess.Popen[bytes]) -> None:
    sampler = Sampler(lambda: {"tiny": sleeper.pid}, gpu_readers=[])
    first = sampler.sample().runners["tiny"]
    assert first.pid == sleeper.pid
    assert first.rss is not None and first.rss > 0
    assert first.cpu_percent is None  # one reading cannot give a rate: unknown, not 0
    second = sampler.sample().runners["tiny"]
    assert second.cpu_percent is not None and second.cpu_percent >= 0.0

    sleeper.kill()
    _wait_for_zombie(sleeper.pid)  # SIGKILL is delivered asynchronously
    assert "tiny" not in sampler.sample().runners  # a zombie holds no memory: absent
    sleeper.wait()
    assert sampler.sample().runners == {}


def _wait_for_zombie(pid: int) -> None:
    deadline = time.monotonic() + 5
    while psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the killed child did not exit"
        time.sleep(0.01)


def test_busy_child_shows_cpu() -> None:
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        sampler = Sampler(lambda: {"busy": child.pid}, gpu_readers=[])
        sampler.sample()
        time.sleep(0.5)
        usage = sampler.sample().runners["busy"]
        assert usage.cpu_percent is not None and usage.cpu_percent > 10.0
    finally:
        child.kill()
        child.wait()


def test_unknown_pid_is_absent_and_pid_changes_follow_the_runner(
    sleeper: subprocess.Popen[bytes],
) -> None:
    pids = {"gone": 2**22 + 12345, "tiny": sleeper.pid}  # above Linux's pid_max
    sampler = Sampler(lambda: pids, gpu_readers=[])
    assert set(sampler.sample().runners) == {"tiny"}
    other = subprocess.Popen(["sleep", "30"])
    try:
        pids["tiny"] = other.pid  # the runner was restarted
        usage = sampler.sample().runners["tiny"]
        assert usage.pid == other.pid and usage.cpu_percent is None  # a new process
    finally:
        other.kill()
        other.wait()


def test_explicit_pids_skip_the_provider() -> None:
    def refuse() -> Mapping[str, int]:
        raise AssertionError("provider must not be called")

    assert Sampler(refuse, gpu_readers=[]).sample(pids={}).runners == {}


@pytest.mark.parametrize(
    ("before", "after", "percent"),
    [
        ((0.0, 0.0), (50.0, 100.0), 50.0),
        ((10.0, 100.0), (10.0, 200.0), 0.0),
        ((0.0, 0.0), (100.0, 100.0), 100.0),
        ((5.0, 100.0), (5.0, 100.0), None),  # no time passed: no information
        ((0.0, 0.0), (120.0, 100.0), 100.0),  # counters out of step: clamped
    ],
)
def test_busy_percent(before: tuple[float, float], after: tuple[float, float],
                      percent: float | None) -> None:
    assert busy_percent(before, after) == percent


@dataclass(frozen=True)
class Info:
    name: str
    state: str
    pid: int | None


class FakeManager:
    def __init__(self, infos: list[Info]) -> None:
        self.infos = infos

    def snapshot(self) -> list[Info]:
        return self.infos


def test_pids_from_manager_keeps_runners_with_a_process() -> None:
    manager = FakeManager([
        Info("a", "ready", 101), Info("b", "starting", 102), Info("c", "stopping", 103),
        Info("d", "stopped", None), Info("e", "failed", None), Info("f", "ready", None),
    ])
    provider = pids_from_manager(manager)
    assert provider() == {"a": 101, "b": 102, "c": 103}
    manager.infos = []
    assert provider() == {}  # asked afresh every time


# ---- the monitor task ---------------------------------------------------------------


class FakeGpuReader:
    vendor = "FAKE"

    def __init__(self) -> None:
        self.opened = self.closed = 0

    @property
    def available(self) -> bool:
        return self.opened > self.closed

    @property
    def status(self) -> str:
        return "FAKE: 1 GPU"

    def open(self) -> None:
        if not self.available:
            self.opened += 1

    def read(self) -> list[GpuSample]:
        return [GpuSample(0, "Fake GPU", 50.0, None, None, self.vendor)]

    def close(self) -> None:
        if self.available:
            self.closed += 1


async def test_monitor_samples_at_its_interval_and_cancels_cleanly() -> None:
    reader = FakeGpuReader()
    monitor = ServiceMonitor(Sampler(dict, gpu_readers=[reader]), interval=0.05,
                             history=MetricsHistory(capacity=100))
    seen: list[Sample] = []
    enough = asyncio.Event()

    def collect(sample: Sample) -> None:
        seen.append(sample)
        if len(seen) >= 4:
            enough.set()

    unsubscribe = monitor.subscribe(collect)
    assert monitor.latest is None
    started = time.monotonic()
    task = asyncio.create_task(monitor.run(), name="test:monitor")
    await asyncio.wait_for(enough.wait(), timeout=5)
    elapsed = time.monotonic() - started
    unsubscribe()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert len(seen) >= 4 and elapsed >= 0.14  # four samples need three intervals
    assert monitor.history.samples()[: len(seen)] == seen
    assert monitor.latest is monitor.history.samples()[-1]
    assert seen[0].gpus[0].name == "Fake GPU"
    times = [s.time for s in seen]
    assert times == sorted(times)
    assert (reader.opened, reader.closed) == (1, 1)  # GPU library released on cancel
    count = len(monitor.history)
    await asyncio.sleep(0.12)
    assert len(monitor.history) == count  # really stopped


async def test_failures_are_logged_once_and_do_not_stop_sampling(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = {"on": True}

    def pids() -> dict[str, int]:
        if broken["on"]:
            raise RuntimeError("snapshot exploded")
        return {}

    monitor = ServiceMonitor(Sampler(pids, gpu_readers=[]), interval=0.05)
    good: list[Sample] = []

    def bad_subscriber(sample: Sample) -> None:
        raise ValueError("window gone")

    monitor.subscribe(bad_subscriber)
    monitor.subscribe(good.append)
    with caplog.at_level(logging.ERROR, logger="llamarunner.monitor"):
        assert monitor.sample_once() is None
        assert monitor.sample_once() is None
        broken["on"] = False
        monitor.sample_once()
        monitor.sample_once()
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "taking a resource sample failed; will keep trying",
        f"monitor subscriber {bad_subscriber!r} failed",
    ]
    assert len(good) == 2 and len(monitor.history) == 2


def test_monitor_rejects_a_silly_interval() -> None:
    with pytest.raises(ValueError, match="positive"):
        ServiceMonitor(Sampler(dict, gpu_readers=[]), interval=0)
