"""Download speed and time left (store/meter.py): pure arithmetic, table-tested."""

from __future__ import annotations

import math

import pytest

from llamarunner.store.meter import TransferMeter, eta_seconds, format_duration, iso_millis, rate


@pytest.mark.parametrize(("samples", "now", "expected"), [
    ([], 10.0, None),
    ([(1.0, 100)], 1.0, None),  # one sample says nothing about speed
    ([(0.0, 0), (2.0, 1000)], 2.0, 500.0),
    ([(0.0, 0), (1.0, 300), (2.0, 1000)], 2.0, 500.0),  # first to last in the window
    ([(0.0, 0), (20.0, 1000), (22.0, 2000)], 22.0, 500.0),  # older than 10 s: left out
    ([(0.0, 5000), (1.0, 0), (3.0, 1000)], 3.0, 500.0),  # a restart dropped bytes
    ([(1.0, 100), (1.0, 200)], 1.0, None),  # no time between them
    ([(0.0, 100), (4.0, 100)], 4.0, 0.0),  # stalled
])
def test_rate(samples: list[tuple[float, int]], now: float, expected: float | None) -> None:
    assert rate(samples, now) == expected


@pytest.mark.parametrize(("total", "done", "speed", "expected"), [
    (1000, 500, 100.0, 5.0),
    (1000, 1000, None, 0.0),  # done: nothing left, speed or not
    (1000, 1200, 10.0, 0.0),
    (0, 0, 100.0, None),  # size not known yet
    (1000, 0, None, None),
    (1000, 0, 0.0, None),  # stalled: no estimate
    (1000, 0, math.inf, None),
])
def test_eta_seconds(total: int, done: int, speed: float | None,
                     expected: float | None) -> None:
    assert eta_seconds(total, done, speed) == expected


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "?"), (-1.0, "?"), (math.nan, "?"), (math.inf, "?"),
    (0.0, "0s"), (0.2, "1s"), (59.0, "59s"), (60.0, "1m00s"), (185.0, "3m05s"),
    (3599.5, "1h00m"), (7440.0, "2h04m"),
])
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_iso_millis_is_utc_with_milliseconds() -> None:
    assert iso_millis(1759505603.4961) == "2025-10-03T15:33:23.496Z"
    assert iso_millis(0) == "1970-01-01T00:00:00.000Z"


def test_the_meter_measures_recent_speed_and_survives_slow_polling() -> None:
    meter = TransferMeter(window=10.0)
    meter.add(0.0, 1_000_000)  # a resumed pull: a million bytes at once
    assert meter.speed(0.0) is None
    meter.add(1.0, 1_000_100)
    assert meter.speed(1.0) == 100.0  # not the resumed bytes
    for t in range(2, 30):
        meter.add(float(t), 1_000_100 + (t - 1) * 200)
    assert meter.speed(29.0) == 200.0
    slow = TransferMeter(window=10.0)
    slow.add(0.0, 0)
    slow.add(60.0, 6000)  # polled once a minute
    assert slow.speed(60.0) == 100.0
