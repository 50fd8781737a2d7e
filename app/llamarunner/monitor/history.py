"""A fixed-size ring of recent samples (10 minutes at one per second) and series taken from it."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from .sampler import Sample

Point = tuple[float, float | None]  # (wall-clock time, value or None when unknown)


class MetricsHistory:
    """The newest `capacity` samples, oldest first; appending past capacity drops the oldest."""

    def __init__(self, capacity: int = 600) -> None:
        if capacity < 1:
            raise ValueError(f"history capacity must be at least 1, got {capacity}")
        self._samples: deque[Sample] = deque(maxlen=capacity)

    @property
    def capacity(self) -> int:
        maxlen = self._samples.maxlen
        assert maxlen is not None
        return maxlen

    def __len__(self) -> int:
        return len(self._samples)

    @property
    def latest(self) -> Sample | None:
        return self._samples[-1] if self._samples else None

    def append(self, sample: Sample) -> None:
        self._samples.append(sample)

    def clear(self) -> None:
        self._samples.clear()

    def samples(self, since: float | None = None) -> list[Sample]:
        """A copy, oldest first; with `since`, only samples taken at or after that time."""
        if since is None:
            return list(self._samples)
        return [sample for sample in self._samples if sample.time >= since]

    def series(
        self, getter: Callable[[Sample], float | None], since: float | None = None
    ) -> list[Point]:
        """(time, value) pairs for one quantity; the getter returns None for "unknown"."""
        points: list[Point] = []
        for sample in self.samples(since):
            value = getter(sample)
            points.append((sample.time, None if value is None else float(value)))
        return points
