"""How streamed answers are framed (NDJSON lines, SSE events), parsed as clients parse them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


class FramingError(ValueError):
    """A streamed answer that a client's parser would reject; the message says where."""


def parse_ndjson(text: str) -> list[dict[str, Any]]:
    """Ollama's stream: one JSON object per line; blank lines are skipped (clients do)."""
    objects: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise FramingError(f"line {number} is not JSON ({exc}): {line[:120]!r}") from exc
        if not isinstance(value, dict):
            raise FramingError(f"line {number} is not a JSON object: {line[:120]!r}")
        objects.append(value)
    return objects


@dataclass
class SSEStream:
    """The JSON events of an OpenAI stream, and whether it ended with `data: [DONE]`."""

    events: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False


def parse_sse(text: str) -> SSEStream:
    """OpenAI's stream: `data: <json>` events separated by blank lines, then `data: [DONE]`.

    Comment lines (`: ping`) and `event:`/`id:` fields are ignored, as the SDKs do; data
    after [DONE] is an error (the SDKs stop reading there and would lose it).
    """
    stream = SSEStream()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if stream.done:
            raise FramingError(f"line {number}: data after [DONE]: {data[:120]!r}")
        if data == "[DONE]":
            stream.done = True
            continue
        try:
            value = json.loads(data)
        except ValueError as exc:
            raise FramingError(f"line {number}: event is not JSON ({exc}): {data[:120]!r}") \
                from exc
        if not isinstance(value, dict):
            raise FramingError(f"line {number}: event is not a JSON object: {data[:120]!r}")
        stream.events.append(value)
    return stream


def stream_error(event: dict[str, Any]) -> str | None:
    """The message of an error event inside a stream (both APIs' shapes), else None."""
    error = event.get("error")
    if isinstance(error, str):
        return error
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return None
