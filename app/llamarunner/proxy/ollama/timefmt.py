"""Timestamps as Ollama writes them: UTC, Go's RFC 3339 with up to nine fractional digits."""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ["rfc3339", "rfc3339_now", "rfc3339_ns"]

_NS_PER_S = 1_000_000_000


def rfc3339_ns(ns: int) -> str:
    """Unix time in nanoseconds as Go's ``time.RFC3339Nano`` text of ``time.Now().UTC()``.

    Go drops trailing zeros of the fraction (and the dot when it is all zeros), so
    ``...:56.1234Z`` and ``...:56Z`` are both exactly what Ollama itself sends.
    """
    seconds, nanos = divmod(ns, _NS_PER_S)
    stamp = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{nanos:09d}".rstrip("0")
    return f"{stamp}.{fraction}Z" if fraction else f"{stamp}Z"


def rfc3339(ts: float) -> str:
    """A ``time.time()`` float as Ollama's timestamp text.

    A float holds about a microsecond of precision at today's epoch, so it is rounded to
    microseconds rather than inventing nanosecond digits.
    """
    micros = round(ts * 1_000_000)
    return rfc3339_ns(micros * 1_000)


def rfc3339_now() -> str:
    """Now, with the clock's full nanosecond resolution."""
    return rfc3339_ns(time.time_ns())
