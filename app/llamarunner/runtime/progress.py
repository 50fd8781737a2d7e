"""Progress events for runtime installs, build-output parsing and a quiet terminal printer."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TextIO


class InstallStep(StrEnum):
    """The steps of a runtime install, in the order they run."""

    CHECK = "check"
    DOWNLOAD = "download"
    EXTRACT = "extract"
    CONFIGURE = "configure"
    BUILD = "build"
    INSTALL = "install"
    VERIFY = "verify"
    DONE = "done"


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report: the step, its percent when known (None otherwise) and a message."""

    step: InstallStep
    percent: int | None
    message: str


ProgressCallback = Callable[[ProgressEvent], None]

# Makefile generators print "[ 37%] Building CXX object ..."; Ninja prints "[12/345] ...".
# MSBuild prints neither, so its build progress stays unknown (None), never guessed.
_MAKE_PERCENT = re.compile(r"^\[\s*(\d{1,3})%\]")
_NINJA_COUNT = re.compile(r"^\[(\d+)/(\d+)\]")


def parse_build_percent(line: str) -> int | None:
    """Return the percent a cmake build line reports, or None when the line carries none."""
    match = _MAKE_PERCENT.match(line)
    if match:
        return min(int(match.group(1)), 100)
    match = _NINJA_COUNT.match(line)
    if match:
        done, total = int(match.group(1)), int(match.group(2))
        if total > 0:
            return min(done * 100 // total, 100)
    return None


def format_event(event: ProgressEvent) -> str:
    """Render an event as one terminal line, e.g. ``[build  37%] Building CXX object ...``."""
    if event.percent is None:
        return f"[{event.step}] {event.message}"
    return f"[{event.step} {event.percent:>3}%] {event.message}"


class ProgressPrinter:
    """Print progress events to a stream without flooding terminals or CI logs.

    A line is printed when the step changes, when the percent changes, or when
    ``interval`` seconds have passed since the last printed line; everything else is
    dropped (a llama.cpp build emits hundreds of lines, CI logs want dozens).
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._interval = interval
        self._clock = clock
        self._last_step: InstallStep | None = None
        self._last_percent: int | None = None
        self._last_time: float | None = None

    def __call__(self, event: ProgressEvent) -> None:
        now = self._clock()
        if not self._should_print(event, now):
            return
        self._last_step = event.step
        self._last_percent = event.percent
        self._last_time = now
        # Resolved at call time so pytest's capsys (which swaps sys.stdout) sees the output.
        stream = self._stream if self._stream is not None else sys.stdout
        stream.write(format_event(event) + "\n")
        stream.flush()

    def _should_print(self, event: ProgressEvent, now: float) -> bool:
        if self._last_time is None or event.step != self._last_step:
            return True
        if event.percent is not None and event.percent != self._last_percent:
            return True
        return now - self._last_time >= self._interval
