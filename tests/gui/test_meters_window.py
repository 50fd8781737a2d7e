"""The meters window fed with synthetic samples: plots, labels, unknown values, hide on close."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QByteArray, QSettings
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from llamarunner.gui.widgets.plot import (
    GIB,
    MIB,
    TimeSeriesPlot,
    Unit,
    axis_ticks,
    format_bytes,
    format_value,
    nice_ceiling,
)
from llamarunner.gui.windows.meters import MetersWindow
from llamarunner.monitor import (
    GpuSample,
    MetricsHistory,
    RunnerUsage,
    Sample,
    Sampler,
    ServiceMonitor,
)

NO_GPU = "no NVIDIA driver (NVML not found); no AMD GPU in /sys/class/drm"
T0 = 1_700_000_000.0


@pytest.fixture(autouse=True)
def private_settings(tmp_path: Path) -> Iterator[Path]:
    """Window geometry goes to a temporary folder, never the user's real settings."""
    folder = tmp_path / "qsettings"
    for fmt in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
        QSettings.setPath(fmt, QSettings.Scope.UserScope, str(folder))
    yield folder


class CannedSampler(Sampler):
    """A Sampler that hands out prepared samples, so the monitor path is the real one."""

    def __init__(self) -> None:
        super().__init__(dict, gpu_readers=[])
        self.queue: list[Sample] = []

    def sample(self, pids: object = None) -> Sample:
        return self.queue.pop(0)


def make_sample(i: int, *, runners: dict[str, int | None] | None = None,
                gpus: list[GpuSample] | None = None, status: str = NO_GPU) -> Sample:
    usage = {name: RunnerUsage(1000 + n, rss, 10.0 if rss is not None else None)
             for n, (name, rss) in enumerate((runners or {}).items())}
    return Sample(
        time=T0 + i,
        cpu_percent=35 + 25 * math.sin(i / 9),
        ram_used=int((9 + 2 * math.sin(i / 40)) * GIB),
        ram_total=int(31.3 * GIB),
        runners=usage,
        gpus=gpus or [],
        gpu_status=status,
    )


def gpu(i: int, util: float | None = None, used: int | None = None) -> GpuSample:
    return GpuSample(0, "NVIDIA GeForce RTX 4090", util, used, 24 * GIB, "NVIDIA")


@pytest.fixture
def monitor() -> ServiceMonitor:
    return ServiceMonitor(CannedSampler(), interval=1.0, history=MetricsHistory(600))


@pytest.fixture
def window(qtbot: QtBot, monitor: ServiceMonitor) -> MetersWindow:
    win = MetersWindow(monitor)
    qtbot.addWidget(win)
    return win


def feed(monitor: ServiceMonitor, *samples: Sample) -> None:
    sampler = monitor.sampler
    assert isinstance(sampler, CannedSampler)
    sampler.queue.extend(samples)
    for _ in samples:
        assert monitor.sample_once() is not None


def test_samples_show_up_in_every_plot(window: MetersWindow, monitor: ServiceMonitor) -> None:
    samples = [
        make_sample(i, runners={"gemma3": 1200 * MIB, **({"qwen": 3 * GIB} if i >= 3 else {})},
                    gpus=[gpu(i, util=40.0 + i, used=(6 + i) * GIB)],
                    status="NVIDIA: 1 GPU via NVML")
        for i in range(5)
    ]
    feed(monitor, *samples)

    assert window.cpu_plot.series_names() == ["all cores"]
    assert len(window.cpu_plot.points("all cores")) == 5
    assert window.ram_plot.y_max == samples[-1].ram_total
    assert window.ram_plot.title == "Memory (whole system, 31.3 GiB)"
    assert window.runner_plot.series_names() == ["gemma3", "qwen"]
    assert len(window.runner_plot.points("gemma3")) == 5
    assert window.runner_plot.points("qwen") == [(T0 + 3, 3.0 * GIB), (T0 + 4, 3.0 * GIB)]
    assert window.runner_plot.legend_texts() == ["gemma3  1.17 GiB", "qwen  3.00 GiB"]
    label = "GPU 0: NVIDIA GeForce RTX 4090"
    assert window.gpu_util_plot.legend_texts() == [f"{label}  44 %"]
    assert window.vram_plot.latest(label) == 10 * GIB
    assert window.vram_plot.y_max == 24 * GIB
    assert window.gpu_util_plot.isVisibleTo(window) and window.vram_plot.isVisibleTo(window)
    assert window.gpu_label.text() == "NVIDIA: 1 GPU via NVML"
    summary = window.summary_label.text()
    assert "CPU " in summary and "RAM " in summary and "of 31.3 GiB" in summary
    assert "2 runners" in summary and "1 GPU" in summary


def test_no_gpu_says_why(window: MetersWindow, monitor: ServiceMonitor) -> None:
    feed(monitor, make_sample(0), make_sample(1))
    assert window.gpu_label.text() == f"No GPU readings: {NO_GPU}"
    assert not window.gpu_util_plot.isVisibleTo(window)
    assert not window.vram_plot.isVisibleTo(window)
    assert window.runner_plot.series_names() == []
    assert window.runner_plot.status_text() == "No runner is running."
    assert "0 runners" in window.summary_label.text()


def test_unknown_values_are_gaps_never_zero(window: MetersWindow) -> None:
    window.on_sample(make_sample(0, runners={"locked": None},
                                 gpus=[gpu(0, util=None, used=None)], status="NVIDIA: 1 GPU"))
    label = "GPU 0: NVIDIA GeForce RTX 4090"
    assert window.gpu_util_plot.points(label) == [(T0, None)]
    assert window.gpu_util_plot.status_text() == "not available: the driver does not report it"
    assert window.gpu_util_plot.legend_texts() == [
        f"{label}  not available: the driver does not report it"
    ]
    assert window.runner_plot.legend_texts() == [
        "locked  not available: the process cannot be read"
    ]


def test_a_stopped_runner_leaves_a_gap_then_goes(window: MetersWindow) -> None:
    window.on_sample(make_sample(0, runners={"gemma3": 100 * MIB}))
    window.on_sample(make_sample(1))
    assert window.runner_plot.points("gemma3") == [(T0, 100.0 * MIB), (T0 + 1, None)]
    assert window.runner_plot.legend_texts() == ["gemma3  not running"]
    window.on_sample(make_sample(400))  # its last reading scrolled out of the 5 minutes
    assert window.runner_plot.series_names() == []


def test_opening_shows_what_the_monitor_already_has(qtbot: QtBot,
                                                    monitor: ServiceMonitor) -> None:
    for i in range(400):
        monitor.history.append(make_sample(i, runners={"gemma3": 500 * MIB}))
    win = MetersWindow(monitor)
    qtbot.addWidget(win)
    # The history holds 400 s; the plot keeps its 5 minutes, both ends included.
    assert len(win.cpu_plot.points("all cores")) == 301
    assert win.runner_plot.series_names() == ["gemma3"]


def test_close_hides_and_geometry_is_remembered(qtbot: QtBot, monitor: ServiceMonitor) -> None:
    win = MetersWindow(monitor)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    win.resize(700, 560)
    win.move(40, 30)
    win.close()
    assert not win.isVisible()
    assert win.on_sample is not None  # still alive: hidden, not destroyed
    feed(monitor, make_sample(0))  # a hidden window keeps collecting
    assert len(win.cpu_plot.points("all cores")) == 1

    saved = QSettings("llamarunner", "LlamaRunner Pro").value("meters/geometry")
    assert isinstance(saved, QByteArray) and saved.size() > 0
    again = MetersWindow(monitor)
    qtbot.addWidget(again)
    assert again.size() == win.size()


def test_one_paint_per_sample_at_most(qtbot: QtBot, window: MetersWindow,
                                      monitor: ServiceMonitor) -> None:
    window.show()
    qtbot.waitExposed(window)
    feed(monitor, make_sample(0, runners={"a": MIB}))
    qtbot.wait(20)
    for plot in window.plots:
        plot.paint_count = 0
    feed(monitor, *(make_sample(i, runners={"a": MIB, "b": MIB}) for i in range(1, 4)))
    QApplication.processEvents()
    qtbot.wait(20)
    visible = [plot for plot in window.plots if plot.isVisible()]
    assert visible and all(plot.paint_count == 1 for plot in visible)  # three samples, one paint
    assert all(plot.paint_count == 0 for plot in window.plots if not plot.isVisible())


def test_a_deleted_window_unsubscribes(qtbot: QtBot, monitor: ServiceMonitor,
                                       caplog: pytest.LogCaptureFixture) -> None:
    win = MetersWindow(monitor)
    win.deleteLater()
    qtbot.waitUntil(lambda: not _alive(win))
    with caplog.at_level(logging.ERROR):
        feed(monitor, make_sample(0))
    assert "failed" not in caplog.text


def _alive(widget: MetersWindow) -> bool:
    from shiboken6 import Shiboken

    return bool(Shiboken.isValid(widget))


@pytest.mark.parametrize(
    ("value", "text"),
    [(512, "512 B"), (1536, "1.50 KiB"), (300 * MIB, "300 MiB"), (1200 * MIB, "1.17 GiB"),
     (31.3 * GIB, "31.3 GiB"), (150 * GIB, "150 GiB")],
)
def test_format_bytes(value: float, text: str) -> None:
    assert format_bytes(value) == text


def test_value_and_axis_formats() -> None:
    assert format_value(None, Unit.PERCENT) == "—"
    assert format_value(7.25, Unit.PERCENT) == "7.2 %"
    assert format_value(73.4, Unit.PERCENT) == "73 %"
    assert [t for _, t in axis_ticks(100, Unit.PERCENT)] == ["0 %", "25 %", "50 %", "75 %",
                                                             "100 %"]
    assert [t for _, t in axis_ticks(31.3 * GIB, Unit.BYTES)] == [
        "0", "10 GiB", "20 GiB", "30 GiB"]
    assert [t for _, t in axis_ticks(24 * GIB, Unit.BYTES)] == [
        "0", "5 GiB", "10 GiB", "15 GiB", "20 GiB"]
    assert [t for _, t in axis_ticks(600 * MIB, Unit.BYTES)] == [
        "0", "200 MiB", "400 MiB", "600 MiB"]
    assert nice_ceiling(3.2 * GIB, Unit.BYTES) == 4 * GIB
    assert nice_ceiling(0, Unit.BYTES) == MIB


def test_plot_without_data_explains(qtbot: QtBot) -> None:
    plot = TimeSeriesPlot("Idle", Unit.PERCENT)
    qtbot.addWidget(plot)
    assert plot.status_text() == "waiting for the first reading…"
    plot.add_point("x", T0, None, "not available: no sensor")
    plot.advance(T0)
    assert plot.status_text() == "not available: no sensor"
    plot.add_point("x", T0 + 1, 5.0)
    plot.advance(T0 + 1)
    assert plot.status_text() is None
    plot.resize(400, 200)
    plot.show()
    qtbot.waitExposed(plot)
    assert not plot.grab().isNull()


def test_screenshot(qtbot: QtBot, monitor: ServiceMonitor) -> None:
    """Five minutes of readings with two runners and one GPU, saved for a human to look at."""
    for i in range(330):
        runners: dict[str, int | None] = {"gemma3-270m": int((260 + i / 30) * MIB)}
        if i >= 120:
            runners["qwen2.5-7b-instruct"] = int(min(5.1, 0.2 + (i - 120) / 12) * GIB)
        util = 85.0 + 10 * math.sin(i / 5) if 150 <= i <= 260 else 3.0
        monitor.history.append(make_sample(
            i, runners=runners, status="NVIDIA: 1 GPU via NVML",
            gpus=[gpu(i, util=util, used=int((0.4 + (5.4 if i >= 125 else 0)) * GIB))],
        ))
    win = MetersWindow(monitor)
    qtbot.addWidget(win)
    win.resize(900, 720)
    win.show()
    qtbot.waitExposed(win)
    assert win.grab().save("/tmp/meters.png")

    none = ServiceMonitor(CannedSampler())
    for i in range(60):
        none.history.append(make_sample(i))
    empty = MetersWindow(none)
    qtbot.addWidget(empty)
    empty.resize(900, 560)
    empty.show()
    qtbot.waitExposed(empty)
    assert empty.grab().save("/tmp/meters-no-gpu.png")
