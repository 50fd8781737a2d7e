"""Download speed and time left, from (time, bytes) samples of a pull's progress.

Pure arithmetic, shared by LM Studio's download status and `llamarunner pull`. The speed
is measured over a recent window, not since the start: a resumed pull reports the bytes it
already had at once, and an average since the start would count them as speed.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Final

__all__ = ["SPEED_WINDOW", "TransferMeter", "eta_seconds", "format_duration", "iso_millis",
           "rate"]

# Seconds of samples the speed is measured over.
SPEED_WINDOW: Final = 10.0


def rate(samples: list[tuple[float, int]] | tuple[tuple[float, int], ...], now: float,
         window: float = SPEED_WINDOW) -> float | None:
    """Bytes per second over the samples of the last `window` seconds (by their time).

    None until two samples in the window lie apart in time; 0.0 when nothing arrived.
    A count that went down (a restart dropped bytes) measures from the drop on.
    """
    recent = [(t, n) for t, n in samples if now - t <= window]
    start = 0
    for index in range(1, len(recent)):
        if recent[index][1] < recent[index - 1][1]:
            start = index
    recent = recent[start:]
    if len(recent) < 2:
        return None
    (t0, n0), (t1, n1) = recent[0], recent[-1]
    if t1 <= t0:
        return None
    return max(0, n1 - n0) / (t1 - t0)


def eta_seconds(total: int, done: int, speed: float | None) -> float | None:
    """Seconds left at `speed`; 0 when done; None when unknown (no total, no speed)."""
    if total <= 0:
        return None
    left = total - done
    if left <= 0:
        return 0.0
    if speed is None or speed <= 0 or not math.isfinite(speed):
        return None
    return left / speed


def format_duration(seconds: float | None) -> str:
    """`7s`, `3m05s`, `2h04m`; `?` when unknown. Rounds up: "0s" only when done."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    whole = math.ceil(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    hours, rest = divmod(whole, 3600)
    return f"{hours}h{rest // 60:02d}m"


def iso_millis(timestamp: float) -> str:
    """`2025-10-03T15:33:23.496Z`: ISO 8601 in UTC with milliseconds, as LM Studio writes."""
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class TransferMeter:
    """Keeps the recent samples of one transfer; `add` one whenever the count is known."""

    window: float = SPEED_WINDOW
    _samples: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, now: float, done: int) -> None:
        self._samples.append((now, done))
        # Samples older than the window go, but the last two stay for a slow poller.
        while len(self._samples) > 2 and now - self._samples[0][0] > self.window:
            self._samples.popleft()

    def speed(self, now: float) -> float | None:
        found = rate(tuple(self._samples), now, self.window)
        if found is None and len(self._samples) >= 2:
            # Polled less often than the window: the speed between the last two samples.
            found = rate(tuple(self._samples)[-2:], now, math.inf)
        return found
