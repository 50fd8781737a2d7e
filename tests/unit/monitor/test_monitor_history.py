"""The sample ring: capacity, order, copies and series with unknown values kept unknown."""

from __future__ import annotations

import pytest

from llamarunner.monitor import GpuSample, MetricsHistory, RunnerUsage, Sample


def sample(t: float, cpu: float = 0.0, *, rss: int | None = None,
           vram: int | None = None) -> Sample:
    runners = {} if rss is None else {"tiny": RunnerUsage(1, rss, None)}
    gpus = [GpuSample(0, "GPU", None, vram, 8, "X")]
    return Sample(t, cpu, 100, 200, runners, gpus, "X: 1 GPU")


def test_default_capacity_holds_five_minutes_at_one_second() -> None:
    assert MetricsHistory().capacity >= 300


def test_ring_drops_the_oldest() -> None:
    history = MetricsHistory(capacity=3)
    assert len(history) == 0 and history.latest is None and history.samples() == []
    for t in range(5):
        history.append(sample(float(t)))
    assert [s.time for s in history.samples()] == [2.0, 3.0, 4.0]
    assert len(history) == 3 and history.latest is not None and history.latest.time == 4.0
    copy = history.samples()
    copy.clear()
    assert len(history) == 3  # samples() is a copy
    history.clear()
    assert len(history) == 0


def test_series_keeps_unknown_as_none() -> None:
    history = MetricsHistory(capacity=10)
    history.append(sample(1.0, 10.0, rss=1000, vram=None))
    history.append(sample(2.0, 20.0, vram=5))
    history.append(sample(3.0, 30.0, rss=3000, vram=6))
    assert history.series(lambda s: s.cpu_percent) == [(1.0, 10.0), (2.0, 20.0), (3.0, 30.0)]
    rss = history.series(lambda s: s.runners["tiny"].rss if "tiny" in s.runners else None)
    assert rss == [(1.0, 1000.0), (2.0, None), (3.0, 3000.0)]
    assert history.series(lambda s: s.gpus[0].vram_used) == [(1.0, None), (2.0, 5.0), (3.0, 6.0)]
    assert all(isinstance(v, float) for _, v in history.series(lambda s: s.ram_used))
    assert history.series(lambda s: s.cpu_percent, since=2.0) == [(2.0, 20.0), (3.0, 30.0)]
    assert [s.time for s in history.samples(since=2.5)] == [3.0]


@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_must_be_positive(capacity: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        MetricsHistory(capacity)
