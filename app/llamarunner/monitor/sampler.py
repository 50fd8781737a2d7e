"""One cheap, synchronous reading of system CPU/RAM, each runner's process and the GPUs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import psutil

from .gpu import GpuReader, GpuSample, default_gpu_readers, gpu_status

# Runner states in which a llama-server process exists (runner.state.OCCUPYING_STATES).
_LIVE_STATES = frozenset({"starting", "ready", "stopping"})


@dataclass(frozen=True)
class RunnerUsage:
    """One runner's process. cpu_percent is of one core (top's convention: may exceed 100)."""

    pid: int
    rss: int | None
    cpu_percent: float | None  # None on the first sighting: psutil needs two readings


@dataclass(frozen=True)
class Sample:
    """Everything measured at one moment. None anywhere means "could not be read"."""

    time: float  # wall clock (time.time())
    cpu_percent: float  # whole system, 0-100
    ram_used: int  # total - available: what applications really hold, on every OS
    ram_total: int
    runners: dict[str, RunnerUsage] = field(default_factory=dict)
    gpus: list[GpuSample] = field(default_factory=list)
    gpu_status: str = ""


PidsProvider = Callable[[], Mapping[str, int]]


class _RunnerView(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def state(self) -> str: ...

    @property
    def pid(self) -> int | None: ...


class _Snapshots(Protocol):
    def snapshot(self) -> Iterable[_RunnerView]: ...


def pids_from_manager(manager: _Snapshots) -> Callable[[], dict[str, int]]:
    """A pids provider over RunnerManager.snapshot(): runners whose process exists."""

    def pids() -> dict[str, int]:
        return {
            info.name: info.pid
            for info in manager.snapshot()
            if info.state in _LIVE_STATES and info.pid is not None
        }

    return pids


def _busy_and_total(times: Any) -> tuple[float, float]:
    values: dict[str, float] = times._asdict()
    # Linux counts guest time inside user time as well; psutil drops it the same way.
    total = sum(values.values()) - values.get("guest", 0.0) - values.get("guest_nice", 0.0)
    # Linux does not count iowait as idle, but a CPU waiting for I/O is doing nothing.
    idle = values.get("idle", 0.0) + values.get("iowait", 0.0)
    return total - idle, total


def busy_percent(before: tuple[float, float], after: tuple[float, float]) -> float | None:
    """CPU busy share between two (busy, total) readings; None when no time has passed."""
    total = after[1] - before[1]
    if total <= 0:
        return None
    return max(0.0, min(100.0, (after[0] - before[0]) / total * 100.0))


class Sampler:
    """Takes samples. Not thread-safe beyond what `open_gpus` and `close` need.

    System CPU is computed from our own cpu_times() deltas rather than
    psutil.cpu_percent(interval=None), whose "since the last call" state is shared with any
    other caller on the same thread and would be reset by them.
    """

    def __init__(
        self, pids_provider: PidsProvider, gpu_readers: list[GpuReader] | None = None
    ) -> None:
        self._pids_provider = pids_provider
        self._readers = list(gpu_readers) if gpu_readers is not None else default_gpu_readers()
        self._gpus_open = False
        # NVML init may run in a worker thread while the loop thread wants to close.
        self._gpu_lock = threading.Lock()
        self._processes: dict[int, psutil.Process] = {}
        self._cpu_last = _busy_and_total(psutil.cpu_times())
        self._cpu_percent = 0.0

    @property
    def gpu_readers(self) -> list[GpuReader]:
        return list(self._readers)

    @property
    def gpu_status(self) -> str:
        return gpu_status(self._readers)

    def open_gpus(self) -> None:
        """Probe the GPU readers now; may take a second (NVML init), so call it off-loop."""
        with self._gpu_lock:
            if not self._gpus_open:
                for reader in self._readers:
                    reader.open()
                self._gpus_open = True

    def close(self) -> None:
        """Release the GPU libraries; a later sample probes them again."""
        with self._gpu_lock:
            for reader in self._readers:
                reader.close()
            self._gpus_open = False
        self._processes.clear()

    def current_pids(self) -> dict[str, int]:
        return dict(self._pids_provider())

    def sample(self, pids: Mapping[str, int] | None = None) -> Sample:
        """Measure now. `pids` defaults to asking the provider."""
        if pids is None:
            pids = self.current_pids()
        self.open_gpus()
        memory = psutil.virtual_memory()
        with self._gpu_lock:
            gpus = [gpu for reader in self._readers if reader.available for gpu in reader.read()]
            status = gpu_status(self._readers)
        return Sample(
            time=time.time(),
            cpu_percent=self._system_cpu(),
            ram_used=int(memory.total - memory.available),
            ram_total=int(memory.total),
            runners=self._runners(pids),
            gpus=gpus,
            gpu_status=status,
        )

    def _system_cpu(self) -> float:
        now = _busy_and_total(psutil.cpu_times())
        percent = busy_percent(self._cpu_last, now)
        if percent is not None:
            # Two calls within one clock tick carry no information: keep the last value.
            self._cpu_last, self._cpu_percent = now, percent
        return self._cpu_percent

    def _runners(self, pids: Mapping[str, int]) -> dict[str, RunnerUsage]:
        usage: dict[str, RunnerUsage] = {}
        seen: set[int] = set()
        for name, pid in pids.items():
            known = pid in self._processes
            try:
                process = self._processes[pid] if known else psutil.Process(pid)
            except psutil.Error:
                continue  # died between the snapshot and now: simply absent
            rss: int | None
            cpu: float | None
            try:
                # Cached Process objects: cpu_percent measures since the previous call on
                # the same object, and oneshot() reads /proc/<pid>/stat once for all three.
                with process.oneshot():
                    if process.status() == psutil.STATUS_ZOMBIE:
                        continue  # exited, not yet reaped: it holds no memory any more
                    rss = int(process.memory_info().rss)
                    cpu = float(process.cpu_percent(interval=None))
            except psutil.NoSuchProcess:
                continue
            except psutil.AccessDenied:
                rss = cpu = None  # exists, but this user may not look: unknown, not 0
            seen.add(pid)
            self._processes[pid] = process
            usage[name] = RunnerUsage(pid, rss, cpu if known else None)
        for pid in set(self._processes) - seen:
            del self._processes[pid]
        return usage
