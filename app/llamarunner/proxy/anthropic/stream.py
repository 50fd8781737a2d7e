"""The Messages API's event stream as llama-server sends it, made to follow Anthropic's rules."""

from __future__ import annotations

import json
from typing import ClassVar, Final

from aiohttp import web

from ..relay import OpenAiSse
from .errors import anthropic_error, error_body, error_event, upstream_error

# A stream ends with `message_stop`, or with an `error` event when generation failed; one
# that stops without either broke off (the SDKs would otherwise end it silently). The
# line breaks make them field lines: JSON text in a `data:` line cannot hold a raw one.
END_MARKERS: Final = (b"\nevent: message_stop\n", b"event: error\n")

# Events are held back until their blank line arrives, so that an error event split over
# two reads is still recognised. A stream that never sends one is not SSE: past this size
# it is passed on as it is rather than held in memory.
_MAX_HELD: Final = 64 * 1024
_EVENT_END: Final = b"\n\n"


def rewrite_error_events(buffer: bytes) -> tuple[bytes, bytes]:
    """Split a stream's unsent bytes into complete events to send now and a rest to keep.

    llama-server's own `error` events carry its bare error object; they are sent in
    Anthropic's shape, `{"type": "error", "error": {"type": ..., "message": ...}}`, which
    the SDKs turn into the matching exception. Every other byte passes unchanged.
    """
    end = buffer.rfind(_EVENT_END)
    if end < 0:
        return (buffer, b"") if len(buffer) > _MAX_HELD else (b"", buffer)
    ready, rest = buffer[: end + len(_EVENT_END)], buffer[end + len(_EVENT_END):]
    if b"event: error" not in ready:
        return ready, rest
    events = ready.split(_EVENT_END)  # the last piece is the empty text after the end
    return b"".join(_anthropic_error_event(event) + _EVENT_END for event in events[:-1]), rest


def _anthropic_error_event(event: bytes) -> bytes:
    lines = event.split(b"\n")
    if b"event: error" not in (line.rstrip(b"\r") for line in lines):
        return event
    # SSE: the data of an event is its `data:` lines joined, each without one leading space.
    data = b"\n".join(line[5:].removeprefix(b" ").rstrip(b"\r")
                      for line in lines if line.startswith(b"data:"))
    try:
        parsed = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        parsed = data.decode("utf-8", "replace")
    if (isinstance(parsed, dict) and parsed.get("type") == "error"
            and isinstance(parsed.get("error"), dict)):
        return event  # already in Anthropic's shape
    message, status = upstream_error(parsed)
    return b"event: error\ndata: " + json.dumps(error_body(message, status)).encode()


class AnthropicSse(OpenAiSse):
    """The relay's transform for /v1/messages: events pass unchanged, except llama-server's
    error events (rewritten into Anthropic's shape, so each is held until complete), and
    errors of every kind take Anthropic's shape."""

    END_MARKERS: ClassVar[tuple[bytes, ...]] = END_MARKERS

    def __init__(self) -> None:
        super().__init__()
        self._unsent = b""

    def feed(self, chunk: bytes) -> bytes:
        if not self._ended:
            self._see(chunk)
        ready, self._unsent = rewrite_error_events(self._unsent + chunk)
        return ready

    async def finish(self) -> bytes:
        # A stream that broke off drops its unfinished event: half an event is no event.
        return self._unsent if self._ended else b""

    def broken(self, message: str) -> bytes:
        return error_event(message)

    def error_response(self, status: int, message: str, error_type: str | None
                       ) -> web.Response:
        # llama-server names OpenAI's error types; Anthropic's follow from the status.
        return anthropic_error(message, status)
