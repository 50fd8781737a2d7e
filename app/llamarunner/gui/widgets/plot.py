"""A small QPainter time-series plot: named series, legend, axes, and "not available" text."""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass, field

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QFontMetricsF,
    QPainter,
    QPainterPath,
    QPaintEvent,
    QPalette,
    QPen,
)
from PySide6.QtWidgets import QSizePolicy, QWidget

KIB = 1024
MIB = 1024**2
GIB = 1024**3

# Matplotlib's "tab10": distinct hues that stay readable on light and dark backgrounds.
SERIES_COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
)

Point = tuple[float, float | None]


class Unit(enum.Enum):
    PERCENT = "percent"
    BYTES = "bytes"


def unavailable(reason: str) -> str:
    """The one wording for a value we could not read (unknown is never drawn as 0)."""
    return f"not available: {reason}"


def _scale_for_bytes(top: float) -> tuple[float, str]:
    if top >= GIB:
        return GIB, "GiB"
    if top >= MIB:
        return MIB, "MiB"
    return KIB, "KiB"


def format_bytes(value: float) -> str:
    """Binary units, three significant digits: "512 MiB", "3.25 GiB", "23.5 GiB"."""
    if value < KIB:
        return f"{value:.0f} B"
    scale, suffix = _scale_for_bytes(value)
    scaled = value / scale
    digits = 2 if scaled < 10 else 1 if scaled < 100 else 0
    return f"{scaled:.{digits}f} {suffix}"


def format_value(value: float | None, unit: Unit) -> str:
    if value is None:
        return "—"
    if unit is Unit.PERCENT:
        return f"{value:.0f} %" if value >= 10 else f"{value:.1f} %"
    return format_bytes(value)


def nice_step(span: float, target_ticks: int = 4) -> float:
    """The 1/2/2.5/5 x 10^n step that cuts `span` into the number of parts nearest
    `target_ticks`."""
    if span <= 0:
        return 1.0
    exponent = math.floor(math.log10(span / target_ticks))
    candidates = [f * 10.0**e for e in (exponent - 1, exponent, exponent + 1)
                  for f in (1.0, 2.0, 2.5, 5.0)]
    return min(candidates, key=lambda step: abs(span / step - target_ticks))


def axis_ticks(top: float, unit: Unit) -> list[tuple[float, str]]:
    """(value, label) pairs from 0 to `top` at round numbers of the display unit."""
    if unit is Unit.PERCENT:
        return [(float(v), f"{v} %") for v in range(0, 101, 25)]
    scale, suffix = _scale_for_bytes(top)
    step = nice_step(top / scale)
    ticks = []
    k = 0
    while k * step <= top / scale + 1e-9:
        shown = k * step
        text = f"{shown:g} {suffix}" if k else "0"
        ticks.append((shown * scale, text))
        k += 1
    return ticks


def nice_ceiling(value: float, unit: Unit) -> float:
    """A round top for the y axis that leaves headroom above `value`."""
    if unit is Unit.PERCENT:
        return 100.0
    if value <= 0:
        return float(MIB)
    scale, _ = _scale_for_bytes(value)
    step = nice_step(value / scale)
    return math.ceil(value * 1.05 / scale / step) * step * scale


@dataclass
class _Series:
    color: QColor
    points: deque[Point] = field(default_factory=deque)
    missing: str = "no reading"  # what the legend says while the latest value is None


class TimeSeriesPlot(QWidget):
    """Draws the last `window_seconds` of one or more named series.

    Feed it with add_point() for every series, then advance(now) once per sample: that
    drops old points and asks for a single repaint (Qt merges update() calls, and a hidden
    widget does not paint at all), so a sample costs one paint however many series it has.
    """

    def __init__(self, title: str, unit: Unit, *, window_seconds: float = 300.0,
                 y_max: float | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._title = title
        self._unit = unit
        self._window = window_seconds
        self._y_max = y_max
        self._series: dict[str, _Series] = {}
        self._now: float | None = None
        self._empty_text = "waiting for the first reading…"
        self._fill = True
        self.paint_count = 0  # for tests and diagnostics: how often it really painted
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent, True)

    # ---- data ------------------------------------------------------------------------

    @property
    def title(self) -> str:
        return self._title

    def set_title(self, title: str) -> None:
        if title != self._title:
            self._title = title
            self.update()

    @property
    def unit(self) -> Unit:
        return self._unit

    @property
    def y_max(self) -> float | None:
        return self._y_max

    def set_y_max(self, value: float | None) -> None:
        """A fixed top for the y axis (RAM or VRAM total); None scales to the data."""
        self._y_max = value

    def set_empty_text(self, text: str) -> None:
        """What to show while there is no series at all ("no runner is running")."""
        self._empty_text = text

    @property
    def empty_text(self) -> str:
        return self._empty_text

    def series_names(self) -> list[str]:
        return list(self._series)

    def points(self, name: str) -> list[Point]:
        return list(self._series[name].points)

    def latest(self, name: str) -> float | None:
        points = self._series[name].points
        return points[-1][1] if points else None

    def has_data(self, name: str, now: float | None = None) -> bool:
        """Whether the series has a known value inside the window ending at `now`
        (default: the last advance())."""
        series = self._series.get(name)
        if series is None:
            return False
        end = now if now is not None else self._now
        start = -math.inf if end is None else end - self._window
        return any(v is not None and t >= start for t, v in series.points)

    def add_point(self, name: str, time: float, value: float | None,
                  missing: str = "no reading") -> None:
        """Append one reading; None is drawn as a gap and the legend says `missing`."""
        series = self._series.get(name)
        if series is None:
            color = QColor(SERIES_COLORS[len(self._series) % len(SERIES_COLORS)])
            series = self._series[name] = _Series(color)
        series.points.append((time, value))
        series.missing = missing

    def remove_series(self, name: str) -> None:
        if self._series.pop(name, None) is not None:
            self.update()

    def clear(self) -> None:
        self._series.clear()
        self._now = None
        self.update()

    def advance(self, now: float) -> None:
        """Move the right edge to `now`, forget what scrolled out, and schedule one paint."""
        self._now = now
        cutoff = now - self._window
        for series in self._series.values():
            points = series.points
            # Keep one point left of the edge so the line enters from the border.
            while len(points) > 1 and points[1][0] <= cutoff:
                points.popleft()
        self.update()

    def legend_texts(self) -> list[str]:
        """What the legend shows, one entry per series (also what tests read)."""
        texts = []
        for name, series in self._series.items():
            value = series.points[-1][1] if series.points else None
            shown = format_value(value, self._unit) if value is not None else series.missing
            texts.append(f"{name}  {shown}")
        return texts

    def status_text(self) -> str | None:
        """The text drawn across the plot instead of lines, or None when lines are drawn."""
        if not self._series:
            return self._empty_text
        if not any(self.has_data(name) for name in self._series):
            first = next(iter(self._series.values()))
            return first.missing
        return None

    # ---- drawing ---------------------------------------------------------------------

    def sizeHint(self) -> QSize:
        return QSize(420, 200)

    def minimumSizeHint(self) -> QSize:
        return QSize(260, 140)

    def _small_font(self) -> QFont:
        font = QFont(self.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
        return font

    def _top(self) -> float:
        if self._y_max is not None and self._y_max > 0:
            return self._y_max
        known = [v for s in self._series.values() for _, v in s.points if v is not None]
        return nice_ceiling(max(known, default=0.0), self._unit)

    def paintEvent(self, event: QPaintEvent) -> None:
        self.paint_count += 1
        painter = QPainter(self)
        try:
            self._paint(painter)
        finally:
            painter.end()

    def _paint(self, painter: QPainter) -> None:
        palette = self.palette()
        text_color = palette.color(QPalette.ColorRole.WindowText)
        faint = QColor(text_color)
        faint.setAlphaF(0.55)
        grid = QColor(text_color)
        grid.setAlphaF(0.12)
        painter.fillRect(self.rect(), palette.color(QPalette.ColorRole.Base))

        pad = 8.0
        width = float(self.width())
        y = pad

        title_font = QFont(self.font())
        title_font.setBold(True)
        painter.setFont(title_font)
        painter.setPen(text_color)
        title_metrics = QFontMetricsF(title_font)
        painter.drawText(QPointF(pad, y + title_metrics.ascent()), self._title)
        y += title_metrics.height() + 2

        small = self._small_font()
        metrics = QFontMetricsF(small)
        painter.setFont(small)
        y = self._paint_legend(painter, metrics, pad, y, width - pad, text_color) + 4

        status = self.status_text() if self._now is not None else self._empty_text
        top = self._top()
        # Without a line to read, a y scale would only suggest numbers that do not exist.
        ticks = axis_ticks(top, self._unit) if status is None else []
        label_width = max((metrics.horizontalAdvance(text) for _, text in ticks), default=0.0)
        bottom_band = metrics.height() + 4
        area = QRectF(pad + label_width + 6, y + metrics.height() / 2,
                      width - pad - (pad + label_width + 6),
                      self.height() - pad - bottom_band - (y + metrics.height() / 2))
        if area.width() < 20 or area.height() < 20:
            return

        # Y axis: grid lines and labels.
        for value, text in ticks:
            ty = area.bottom() - value / top * area.height()
            painter.setPen(QPen(grid, 1))
            painter.drawLine(QPointF(area.left(), ty), QPointF(area.right(), ty))
            painter.setPen(faint)
            painter.drawText(QRectF(pad, ty - metrics.height() / 2, label_width,
                                    metrics.height()),
                             Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, text)

        # X axis: one line a minute, labelled as minutes before the newest sample.
        minutes = max(1, round(self._window / 60))
        for m in range(minutes + 1):
            tx = area.right() - m * 60 / self._window * area.width()
            painter.setPen(QPen(grid, 1))
            painter.drawLine(QPointF(tx, area.top()), QPointF(tx, area.bottom()))
            text = "now" if m == 0 else f"\u2212{m} min"  # a true minus sign
            text_width = metrics.horizontalAdvance(text)
            left = min(max(tx - text_width / 2, area.left()), area.right() - text_width)
            painter.setPen(faint)
            painter.drawText(QPointF(left, area.bottom() + 2 + metrics.ascent()), text)

        painter.setPen(QPen(faint, 1))
        painter.drawRect(area)

        if status is not None:
            painter.setPen(faint)
            painter.drawText(area, Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                             status)
            return

        painter.save()
        painter.setClipRect(area.adjusted(0, -1, 0, 1))
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        single = len(self._series) == 1
        for series in self._series.values():
            self._paint_series(painter, series, area, top, fill=single and self._fill)
        painter.restore()

    def _paint_legend(self, painter: QPainter, metrics: QFontMetricsF, left: float, y: float,
                      right: float, text_color: QColor) -> float:
        """Legend entries flow left to right and wrap; returns the y below the last row."""
        if not self._series:
            return y
        swatch = metrics.height() * 0.6
        x = left
        line = metrics.height()
        for (_name, series), text in zip(self._series.items(), self.legend_texts(),
                                         strict=True):
            entry_width = swatch + 4 + metrics.horizontalAdvance(text) + 14
            if x > left and x + entry_width > right:
                x = left
                y += line
            painter.fillRect(QRectF(x, y + (line - swatch) / 2, swatch, swatch), series.color)
            painter.setPen(text_color)
            painter.drawText(QPointF(x + swatch + 4, y + metrics.ascent()), text)
            x += entry_width
        return y + line

    def _paint_series(self, painter: QPainter, series: _Series, area: QRectF, top: float,
                      *, fill: bool) -> None:
        assert self._now is not None
        start = self._now - self._window

        def at(t: float, v: float) -> QPointF:
            return QPointF(area.left() + (t - start) / self._window * area.width(),
                           area.bottom() - min(v, top) / top * area.height())

        # Runs of known values; an unknown value (None) breaks the line instead of
        # dropping it to zero.
        runs: list[list[QPointF]] = [[]]
        for t, v in series.points:
            if v is None:
                if runs[-1]:
                    runs.append([])
            else:
                runs[-1].append(at(t, v))
        pen = QPen(series.color, 1.6)
        pen.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
        for run in runs:
            if not run:
                continue
            if len(run) == 1:
                painter.setPen(Qt.PenStyle.NoPen)
                painter.setBrush(QBrush(series.color))
                painter.drawEllipse(run[0], 2.0, 2.0)
                continue
            path = QPainterPath(run[0])
            for point in run[1:]:
                path.lineTo(point)
            if fill:
                area_path = QPainterPath(path)
                area_path.lineTo(QPointF(run[-1].x(), area.bottom()))
                area_path.lineTo(QPointF(run[0].x(), area.bottom()))
                area_path.closeSubpath()
                shade = QColor(series.color)
                shade.setAlphaF(0.15)
                painter.fillPath(area_path, shade)
            painter.setPen(pen)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawPath(path)
