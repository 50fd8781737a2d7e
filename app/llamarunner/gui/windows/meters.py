"""The meters window: CPU, RAM, per-runner RAM and GPU plots drawn from the core's monitor."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from PySide6.QtCore import QSize, Qt, Slot
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QGridLayout, QLabel, QVBoxLayout, QWidget

from ...monitor import GpuSample, Sample, ServiceMonitor
from ..widgets.plot import TimeSeriesPlot, Unit, format_bytes, format_value, unavailable
from ._common import ToolWindow

WINDOW_SECONDS = 300.0  # what the plots show; the monitor's history holds more
CPU_SERIES = "all cores"
RAM_SERIES = "used"
RUNNER_STOPPED = "not running"
NO_GPU_PREFIX = "No GPU readings: "


def gpu_label(gpu: GpuSample) -> str:
    return f"GPU {gpu.index}: {gpu.name}"


class MetersWindow(ToolWindow):
    """Only draws: the sampling lives in the core's ServiceMonitor, shared with headless.

    Closing hides the window (the tray keeps it); its geometry is kept in QSettings under
    "meters/geometry" by ToolWindow.
    """

    def __init__(self, monitor: ServiceMonitor, parent: QWidget | None = None) -> None:
        super().__init__("meters", "Meters", QSize(900, 720), parent)
        self._monitor = monitor

        self.summary_label = QLabel("Waiting for the first reading…")
        self.summary_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.cpu_plot = TimeSeriesPlot("CPU (whole system)", Unit.PERCENT,
                                       window_seconds=WINDOW_SECONDS)
        self.ram_plot = TimeSeriesPlot("Memory (whole system)", Unit.BYTES,
                                       window_seconds=WINDOW_SECONDS)
        self.runner_plot = TimeSeriesPlot("Memory per runner (resident)", Unit.BYTES,
                                          window_seconds=WINDOW_SECONDS)
        self.runner_plot.set_empty_text("No runner is running.")
        self.gpu_util_plot = TimeSeriesPlot("GPU utilisation", Unit.PERCENT,
                                            window_seconds=WINDOW_SECONDS)
        self.vram_plot = TimeSeriesPlot("GPU memory (VRAM)", Unit.BYTES,
                                        window_seconds=WINDOW_SECONDS)
        self.gpu_label = QLabel()
        self.gpu_label.setWordWrap(True)
        self.gpu_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        grid = QGridLayout()
        grid.setSpacing(8)
        grid.addWidget(self.cpu_plot, 0, 0)
        grid.addWidget(self.ram_plot, 0, 1)
        grid.addWidget(self.runner_plot, 1, 0, 1, 2)
        grid.addWidget(self.gpu_util_plot, 2, 0)
        grid.addWidget(self.vram_plot, 2, 1)
        for column in (0, 1):
            grid.setColumnStretch(column, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary_label)
        layout.addLayout(grid, 1)
        layout.addWidget(self.gpu_label)
        self._show_gpu_plots(False)
        self.gpu_label.setText("Looking for GPUs…")

        # Start with what the monitor already saw, so opening the window shows the last
        # minutes at once instead of an empty plot.
        samples = monitor.history.samples()
        for sample in samples:
            self._record(sample)
        if samples:
            self._present(samples[-1])

        unsubscribe = monitor.subscribe(self.on_sample)
        # The closure holds only `unsubscribe`, not the window: it still works once the
        # C++ side is gone, and the monitor never calls into a deleted widget.
        self.destroyed.connect(_ignoring_args(unsubscribe))

    @property
    def plots(self) -> list[TimeSeriesPlot]:
        return [self.cpu_plot, self.ram_plot, self.runner_plot, self.gpu_util_plot,
                self.vram_plot]

    @Slot(object)
    def on_sample(self, sample: Sample) -> None:
        """Take one sample from the monitor: add a point to every series, repaint once."""
        self._record(sample)
        self._present(sample)

    # ---- internals -------------------------------------------------------------------

    def _record(self, sample: Sample) -> None:
        t = sample.time
        self.cpu_plot.add_point(CPU_SERIES, t, sample.cpu_percent)
        self.ram_plot.set_y_max(float(sample.ram_total))
        self.ram_plot.add_point(RAM_SERIES, t, float(sample.ram_used))

        for name, usage in sample.runners.items():
            self.runner_plot.add_point(name, t, None if usage.rss is None else float(usage.rss),
                                       unavailable("the process cannot be read"))
        _mark_gone(self.runner_plot, sample.runners, t, RUNNER_STOPPED)

        labels = {gpu_label(gpu): gpu for gpu in sample.gpus}
        for label, gpu in labels.items():
            self.gpu_util_plot.add_point(label, t, gpu.utilization_percent,
                                         unavailable("the driver does not report it"))
            self.vram_plot.add_point(label, t, None if gpu.vram_used is None
                                     else float(gpu.vram_used),
                                     unavailable("the driver does not report it"))
        totals = [gpu.vram_total for gpu in sample.gpus if gpu.vram_total]
        self.vram_plot.set_y_max(float(max(totals)) if totals else None)
        _mark_gone(self.gpu_util_plot, labels, t, "gone")
        _mark_gone(self.vram_plot, labels, t, "gone")

    def _present(self, sample: Sample) -> None:
        self.ram_plot.set_title(f"Memory (whole system, {format_bytes(sample.ram_total)})")
        parts = [
            f"CPU {format_value(sample.cpu_percent, Unit.PERCENT)}",
            f"RAM {format_bytes(sample.ram_used)} of {format_bytes(sample.ram_total)}",
            _count(len(sample.runners), "runner"),
        ]
        if sample.gpus:
            parts.append(_count(len(sample.gpus), "GPU"))
            self.gpu_label.setText(sample.gpu_status)
            self.gpu_label.setForegroundRole(QPalette.ColorRole.PlaceholderText)  # a caption
        else:
            self.gpu_label.setText(NO_GPU_PREFIX + sample.gpu_status)
            self.gpu_label.setForegroundRole(QPalette.ColorRole.WindowText)
        self._show_gpu_plots(bool(sample.gpus) or self.gpu_util_plot.series_names() != [])
        self.summary_label.setText("   ·   ".join(parts))
        for plot in self.plots:
            plot.advance(sample.time)

    def _show_gpu_plots(self, visible: bool) -> None:
        self.gpu_util_plot.setVisible(visible)
        self.vram_plot.setVisible(visible)


def _mark_gone(plot: TimeSeriesPlot, present: Iterable[str], t: float, note: str) -> None:
    """A series whose source vanished shows a gap until its last value scrolls out."""
    present = set(present)
    for name in plot.series_names():
        if name in present:
            continue
        if plot.has_data(name, now=t):
            plot.add_point(name, t, None, note)
        else:
            plot.remove_series(name)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _ignoring_args(action: Callable[[], None]) -> Callable[..., None]:
    def call(*_args: object) -> None:
        action()

    return call
