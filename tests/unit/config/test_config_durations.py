"""Table tests for duration parsing and formatting."""

from __future__ import annotations

import math

import pytest

from llamarunner.config import format_duration, parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (90, 90.0),
        (1.5, 1.5),
        ("90", 90.0),
        ("  90  ", 90.0),
        ("2.5", 2.5),
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("1m30s", 90.0),
        ("1s500ms", 1.5),
        ("250ms", 0.25),
        ("0.5s", 0.5),
        (".5s", 0.5),
        ("1.5h", 5400.0),
        ("5M", 300.0),
        ("0", 0.0),
        ("0s", 0.0),
    ],
)
def test_parse_duration_accepts(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [-1, -0.5, "-1", "-1s", "-5m", -(10**400), math.inf])
def test_negative_means_never(value: object) -> None:
    assert parse_duration(value) == math.inf


@pytest.mark.parametrize(
    "value",
    ["", "  ", "5x", "m", "5 minutes", "1h-30m", "nan", "inf", "1e3", True, False, None, [], {}],
)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(value)


def test_parse_duration_rejects_nan_number() -> None:
    with pytest.raises(ValueError, match="NaN"):
        parse_duration(math.nan)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (5.0, "5s"),
        (90.0, "1m30s"),
        (300.0, "5m"),
        (3600.0, "1h"),
        (5400.0, "1h30m"),
        (0.25, "250ms"),
        (1.5, "1s500ms"),
        (86400.0, "24h"),
        (math.inf, "-1"),
        (-3.0, "-1"),
        (0.0005, "0.0005s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    "seconds", [0.0, 0.001, 0.25, 1.0, 1.5, 59.999, 61.0, 300.0, 5400.0, 12345.678, math.inf]
)
def test_format_then_parse_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_format_duration_rejects_nan() -> None:
    with pytest.raises(ValueError):
        format_duration(math.nan)
