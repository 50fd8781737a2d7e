"""The background task that samples at a fixed interval, keeps history and tells subscribers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .history import MetricsHistory
from .sampler import Sample, Sampler

log = logging.getLogger(__name__)

SampleSubscriber = Callable[[Sample], None]


class ServiceMonitor:
    """Runs `sampler` every `interval` seconds while `run()` is awaited; cancel it to stop.

    Subscribers are called on the loop's thread (the Qt thread under qasync), so a window
    may update itself directly; they must be quick.
    """

    def __init__(
        self, sampler: Sampler, interval: float = 1.0, history: MetricsHistory | None = None
    ) -> None:
        if interval <= 0:
            raise ValueError(f"monitor interval must be positive, got {interval}")
        self.sampler = sampler
        self.interval = interval
        self.history = history if history is not None else MetricsHistory()
        self._subscribers: list[SampleSubscriber] = []
        self._failing: set[int] = set()  # subscribers whose failure is already logged
        self._sampling_failed = False

    @property
    def latest(self) -> Sample | None:
        return self.history.latest

    def subscribe(self, subscriber: SampleSubscriber) -> Callable[[], None]:
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def sample_once(self) -> Sample | None:
        """Take one sample now, record it and tell subscribers; None when sampling failed."""
        try:
            sample = self.sampler.sample()
        except Exception:
            # Once per outage, not once a second: a broken reading must not flood the log.
            if not self._sampling_failed:
                log.exception("taking a resource sample failed; will keep trying")
            self._sampling_failed = True
            return None
        self._sampling_failed = False
        self.history.append(sample)
        self._publish(sample)
        return sample

    def _publish(self, sample: Sample) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(sample)
            except Exception:
                if id(subscriber) not in self._failing:
                    log.exception("monitor subscriber %r failed", subscriber)
                self._failing.add(id(subscriber))
            else:
                self._failing.discard(id(subscriber))

    async def run(self) -> None:
        """Sample until cancelled; GPU libraries are probed in a thread (NVML init is slow)."""
        loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(self.sampler.open_gpus)
            due = loop.time()
            while True:
                self.sample_once()
                due += self.interval
                now = loop.time()
                if due < now:
                    # Fell behind (laptop suspend, a blocked loop): resume the rhythm from
                    # now instead of firing a burst of catch-up samples.
                    due = now + self.interval
                await asyncio.sleep(due - now)
        finally:
            self.sampler.close()
