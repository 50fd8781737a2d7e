"""Anthropic's error shape and the rewriting of llama-server's error events in its streams."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llamarunner.proxy.anthropic.errors import (
    error_body,
    error_event,
    error_type,
    is_anthropic_path,
    upstream_error,
)
from llamarunner.proxy.anthropic.stream import END_MARKERS, rewrite_error_events


@pytest.mark.parametrize(("path", "anthropic"), [
    ("/v1/messages", True),
    ("/v1/messages/count_tokens", True),
    ("/v1/messages/anything/else", True),
    ("/v1/messagesX", False),
    ("/v1/chat/completions", False),
    ("/v1/responses", False),
    ("/api/chat", False),
    ("/messages", False),
])
def test_which_paths_answer_in_anthropic_shape(path: str, anthropic: bool) -> None:
    assert is_anthropic_path(path) is anthropic


@pytest.mark.parametrize(("status", "etype"), [
    (400, "invalid_request_error"),
    (401, "authentication_error"),
    (402, "billing_error"),
    (403, "permission_error"),
    (404, "not_found_error"),
    (405, "invalid_request_error"),
    (408, "timeout_error"),
    (413, "request_too_large"),
    (422, "invalid_request_error"),
    (429, "rate_limit_error"),
    (500, "api_error"),
    (501, "api_error"),
    (502, "api_error"),
    (503, "api_error"),
    (504, "timeout_error"),
    (529, "overloaded_error"),
])
def test_error_type_by_status(status: int, etype: str) -> None:
    assert error_type(status) == etype


def test_error_body_is_anthropics_shape() -> None:
    assert error_body("model 'x' not found", 404) == {
        "type": "error", "error": {"type": "not_found_error", "message": "model 'x' not found"}}


def test_error_event_is_one_sse_error_event() -> None:
    event = error_event("it broke", 500)
    assert event.startswith(b"event: error\ndata: ")
    assert event.endswith(b"\n\n") and event.count(b"\n\n") == 1
    data = json.loads(event.split(b"data: ", 1)[1])
    assert data == {"type": "error", "error": {"type": "api_error", "message": "it broke"}}


@pytest.mark.parametrize(("data", "expected"), [
    ({"code": 500, "message": "boom", "type": "server_error"}, ("boom", 500)),
    ({"code": 400, "message": "too long", "type": "invalid_request_error"}, ("too long", 400)),
    ({"error": {"code": 503, "message": "loading"}}, ("loading", 503)),
    ({"message": "no code"}, ("no code", 500)),
    ({"code": 200, "message": "not an error status"}, ("not an error status", 500)),
    ({"code": True, "message": "bool is no status"}, ("bool is no status", 500)),
    ({"code": "500", "message": "text is no status"}, ("text is no status", 500)),
    (" plain text ", ("plain text", 500)),
    (None, ("llama-server reported an error in the middle of the response", 500)),
    ([1, 2], ("llama-server reported an error in the middle of the response", 500)),
])
def test_upstream_error(data: Any, expected: tuple[str, int]) -> None:
    assert upstream_error(data) == expected


LLAMA_ERROR = (b'event: error\ndata: {"code":500,"message":"boom","type":"server_error"}'
               b"\n\n")
ANTHROPIC_ERROR = (b'event: error\ndata: {"type": "error", "error": {"type": "api_error", '
                   b'"message": "boom"}}\n\n')
DELTA = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
         b'"delta":{"type":"text_delta","text":"hi"}}\n\n')
STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


@pytest.mark.parametrize(("unsent", "ready", "kept"), [
    # Complete events pass unchanged, byte for byte.
    (DELTA, DELTA, b""),
    (DELTA + STOP, DELTA + STOP, b""),
    (b":\n\n", b":\n\n", b""),  # llama-server's keep-alive comment
    # An unfinished event waits for the rest of it.
    (DELTA[:20], b"", DELTA[:20]),
    (DELTA + STOP[:10], DELTA, STOP[:10]),
    (b"", b"", b""),
    # llama-server's own error event takes Anthropic's shape.
    (LLAMA_ERROR, ANTHROPIC_ERROR, b""),
    (DELTA + LLAMA_ERROR, DELTA + ANTHROPIC_ERROR, b""),
    (DELTA + LLAMA_ERROR[:15], DELTA, LLAMA_ERROR[:15]),
    # One already in Anthropic's shape stays as it is.
    (ANTHROPIC_ERROR, ANTHROPIC_ERROR, b""),
    # An error event whose data is not JSON is reported with its text.
    (b"event: error\ndata: out of memory\n\n",
     b'event: error\ndata: {"type": "error", "error": {"type": "api_error", '
     b'"message": "out of memory"}}\n\n', b""),
    # Data split over several lines is joined as SSE says.
    (b'event: error\ndata: {"code":400,\ndata: "message":"bad"}\n\n',
     b'event: error\ndata: {"type": "error", "error": {"type": "invalid_request_error", '
     b'"message": "bad"}}\n\n', b""),
    # "event: error" inside generated text is text, not an event.
    (b'event: content_block_delta\ndata: {"text":"event: error"}\n\n',
     b'event: content_block_delta\ndata: {"text":"event: error"}\n\n', b""),
])
def test_rewrite_error_events(unsent: bytes, ready: bytes, kept: bytes) -> None:
    assert rewrite_error_events(unsent) == (ready, kept)


def test_rewriting_a_stream_read_in_small_pieces_gives_the_whole_stream() -> None:
    stream = DELTA + DELTA + LLAMA_ERROR
    sent, unsent = b"", b""
    for start in range(0, len(stream), 7):
        ready, unsent = rewrite_error_events(unsent + stream[start:start + 7])
        sent += ready
    assert (sent, unsent) == (DELTA + DELTA + ANTHROPIC_ERROR, b"")


def test_bytes_that_never_become_an_event_are_not_held_forever() -> None:
    blob = b"x" * (70 * 1024)
    assert rewrite_error_events(blob) == (blob, b"")


@pytest.mark.parametrize(("stream", "ended"), [
    (DELTA + STOP, True),
    (DELTA + LLAMA_ERROR, True),
    (DELTA, False),
    # Generated text cannot end a stream: JSON has no raw line break.
    (b'event: content_block_delta\ndata: {"text":"\\nevent: message_stop\\n"}\n\n', False),
])
def test_end_markers(stream: bytes, ended: bool) -> None:
    assert any(marker in stream for marker in END_MARKERS) is ended
