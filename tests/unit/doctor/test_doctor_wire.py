"""Streamed answers parsed as the clients parse them: NDJSON lines and SSE events."""

from __future__ import annotations

from typing import Any

import pytest

from llamarunner.doctor.wire import FramingError, parse_ndjson, parse_sse, stream_error


@pytest.mark.parametrize(("text", "expected"), [
    ('{"a":1}\n{"b":2}\n', [{"a": 1}, {"b": 2}]),
    ('{"a":1}\n\n   \n{"b":2}', [{"a": 1}, {"b": 2}]),  # blank lines are skipped
    ("", []),
])
def test_ndjson(text: str, expected: list[dict[str, Any]]) -> None:
    assert parse_ndjson(text) == expected


@pytest.mark.parametrize(("text", "where"), [
    ('{"a":1}\ndata: {"b":2}\n', "line 2 is not JSON"),
    ('{"a":1}\n[1, 2]\n', "line 2 is not a JSON object"),
])
def test_ndjson_refused(text: str, where: str) -> None:
    with pytest.raises(FramingError, match=where):
        parse_ndjson(text)


@pytest.mark.parametrize(("text", "events", "done"), [
    ('data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n', [{"a": 1}, {"b": 2}], True),
    ('data:{"a":1}\n\n', [{"a": 1}], False),  # no space after the colon is fine
    (': ping\n\nevent: message\nid: 3\ndata: {"a":1}\n\ndata: [DONE]\n\n', [{"a": 1}], True),
    ("", [], False),
])
def test_sse(text: str, events: list[dict[str, Any]], done: bool) -> None:
    stream = parse_sse(text)
    assert (stream.events, stream.done) == (events, done)


@pytest.mark.parametrize(("text", "where"), [
    ("data: {oops}\n\n", "line 1: event is not JSON"),
    ('data: "text"\n\n', "line 1: event is not a JSON object"),
    ('data: [DONE]\n\ndata: {"late":1}\n\n', "line 3: data after \\[DONE\\]"),
])
def test_sse_refused(text: str, where: str) -> None:
    with pytest.raises(FramingError, match=where):
        parse_sse(text)


@pytest.mark.parametrize(("event", "expected"), [
    ({"error": "model crashed"}, "model crashed"),  # Ollama's shape
    ({"error": {"message": "upstream died", "type": "server_error"}}, "upstream died"),
    ({"choices": []}, None),
    ({"message": {"content": "hi"}, "done": False}, None),
])
def test_stream_error(event: dict[str, Any], expected: str | None) -> None:
    assert stream_error(event) == expected
