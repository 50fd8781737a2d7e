"""The progress lines of `llamarunner pull` (store_cli.py): a bar on a terminal, plain
lines otherwise."""

from __future__ import annotations

import io

import pytest

from llamarunner.store_cli import ProgressPrinter, bar_line, plain_line


@pytest.mark.parametrize(("done", "total", "speed", "line"), [
    (0, 1000, None, "pulling abc   0% ▕          ▏ 0 B/1.0 KB -/s ?"),
    (500, 1000, 100.0, "pulling abc  50% ▕█████     ▏ 500 B/1.0 KB 100 B/s 5s"),
    (1000, 1000, None, "pulling abc 100% ▕██████████▏ 1.0 KB/1.0 KB -/s 0s"),
    (1200, 1000, None, "pulling abc 100% ▕██████████▏ 1.2 KB/1.0 KB -/s 0s"),
    (5, 0, None, "pulling abc   0% ▕          ▏ 5 B/0 B -/s ?"),
])
def test_bar_line(done: int, total: int, speed: float | None, line: str) -> None:
    assert bar_line("pulling abc", done, total, speed, width=10) == line


def test_plain_line() -> None:
    assert plain_line("pulling abc", 2_500_000, 10_000_000, 1_500_000.0) == (
        "pulling abc: 25% (2.5 MB of 10.0 MB, 1.5 MB/s, 5s left)")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def feed(printer: ProgressPrinter, clock: Clock) -> None:
    printer.update("pulling manifest")
    for step in range(0, 11):
        clock.now = float(step)
        printer.update("pulling aaa", "sha256:aaa", 1000, step * 100)
    printer.update("pulling bbb", "sha256:bbb", 10, 10)
    printer.update("verifying sha256 digest")
    printer.update("success")
    printer.close()


def test_plain_output_prints_each_status_once_and_every_tenth_of_a_layer() -> None:
    out, clock = io.StringIO(), Clock()
    feed(ProgressPrinter(out, tty=False, clock=clock), clock)
    lines = out.getvalue().splitlines()
    assert lines[0] == "pulling manifest"
    assert [line.split(":")[1].split("%")[0] for line in lines[1:12]] == [
        f" {p}" for p in range(0, 101, 10)]
    assert lines[6] == "pulling aaa: 50% (500 B of 1.0 KB, 100 B/s, 5s left)"
    assert lines[12:] == ["pulling bbb: 100% (10 B of 10 B, -/s, 0s left)",
                          "verifying sha256 digest", "success"]


def test_terminal_output_redraws_one_line_per_layer() -> None:
    out, clock = io.StringIO(), Clock()
    feed(ProgressPrinter(out, tty=True, clock=clock), clock)
    text = out.getvalue()
    lines = text.split("\n")
    assert lines[0] == "pulling manifest"
    assert lines[1].count("\r") == 11 and lines[1].endswith("\x1b[K")
    assert lines[1].rsplit("\r", 1)[1].startswith("pulling aaa 100% ")
    assert lines[2].startswith("\rpulling bbb 100% ")
    assert lines[3:] == ["verifying sha256 digest", "success", ""]
