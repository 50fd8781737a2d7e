"""Streaming: llama-server SSE events in, Ollama NDJSON chunks out, without any I/O of its own."""

from __future__ import annotations

import abc
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, Final, Literal

from aiohttp import web

from ...core.errors import LlamaRunnerError
from .convert import (
    done_reason_from,
    durations_from_timings,
    logprobs_to_ollama,
    tool_calls_from_openai,
)
from .errors import ollama_error

__all__ = [
    "DONE",
    "ChatStreamConverter",
    "GenerateStreamConverter",
    "NdjsonStream",
    "StreamConverter",
    "ndjson",
    "parse_sse_lines",
]

Chunk = dict[str, Any]

DONE: Final = b"[DONE]"  # the OpenAI endpoints' last event; the native ones just end

_LINE_END = re.compile(rb"\r\n|\r|\n")

# Go's encoding/json escapes these even inside strings; Ollama's bytes do the same.
_GO_ESCAPES: Final = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                      ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


def ndjson(obj: Any) -> bytes:
    """One NDJSON line as Ollama writes it: compact JSON, UTF-8, Go's escapes, ``\\n``."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    for char, escape in _GO_ESCAPES:
        if char in text:
            text = text.replace(char, escape)
    return text.encode() + b"\n"


def parse_sse_lines(buffer: bytes, *, final: bool = False) -> tuple[list[bytes], bytes]:
    """Split complete SSE events' ``data`` payloads off the front of ``buffer``.

    Returns ``(payloads, remainder)``: feed the remainder back in front of the next bytes
    read, whatever the chunk boundaries were. Comments (llama-server's ``:`` pings),
    ``event:``/``id:`` lines and empty events are skipped; several ``data:`` lines in one
    event are joined with ``\\n`` (the SSE rule). ``[DONE]`` comes back as the payload
    :data:`DONE`. With ``final=True`` (the connection closed) an event missing its blank
    line is still delivered and the remainder is empty.
    """
    payloads: list[bytes] = []
    data: list[bytes] = []
    pos = 0
    event_start = 0
    while True:
        match = _LINE_END.search(buffer, pos)
        if match is None:
            break
        if match.group() == b"\r" and match.end() == len(buffer) and not final:
            break  # may be the first half of a "\r\n" split across two reads
        line = buffer[pos:match.start()]
        pos = match.end()
        if not line:
            if data:
                payloads.append(b"\n".join(data))
                data = []
            event_start = pos
            continue
        _field_into(line, data)
    if not final:
        return payloads, buffer[event_start:]
    if pos < len(buffer):
        _field_into(buffer[pos:], data)
    if data:
        payloads.append(b"\n".join(data))
    return payloads, b""


def _field_into(line: bytes, data: list[bytes]) -> None:
    if line.startswith(b":"):
        return  # comment / keep-alive ping
    name, _, value = line.partition(b":")
    if name == b"data":
        data.append(value[1:] if value.startswith(b" ") else value)


class _ToolCallBuffer:
    """One streamed tool call, put together from its index-keyed fragments."""

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments: list[str] = []

    def add(self, fragment: Mapping[str, Any]) -> None:
        if isinstance(fragment.get("id"), str) and fragment["id"]:
            self.id = fragment["id"]
        function = fragment.get("function")
        if isinstance(function, Mapping):
            name = function.get("name")
            if isinstance(name, str):
                # llama-server re-sends the whole name when its parser extends it
                # ("get_w", then "get_weather"); OpenAI-style servers send pieces.
                self.name = name if self.name and name.startswith(self.name) else self.name + name
            if isinstance(function.get("arguments"), str):
                self.arguments.append(function["arguments"])

    def as_openai(self, index: int) -> dict[str, Any]:
        call: dict[str, Any] = {"index": index, "type": "function",
                                "function": {"name": self.name,
                                             "arguments": "".join(self.arguments)}}
        if self.id:
            call["id"] = self.id
        return call


class StreamConverter(abc.ABC):
    """Turns one llama-server stream into Ollama's chunks; see the two subclasses.

    Feed every parsed SSE ``data`` object to :meth:`feed_event` (or the raw payload to
    :meth:`feed_payload`) and write what it returns; when the upstream stream ends
    normally, write :meth:`finish`. Understands OpenAI chat chunks (content,
    ``reasoning_content``, streamed ``tool_calls``, ``finish_reason``, a trailing
    ``usage``/``timings`` event), ``/v1/completions`` chunks and the native
    ``/completion``/``/infill`` chunks (``content``, ``stop``, ``stop_type``, ``timings``).

    ``total_duration`` is measured with ``monotonic_ns`` from ``start_ns``, the reading
    taken when the request arrived; by default that is the converter's creation minus
    ``load_ns``, i.e. create it right after the model is ready. With ``top_logprobs``
    (not ``None``) every chunk carries the ``logprobs`` of its tokens. The answer's text
    (:attr:`text`) and, from native streams, its token ids (:attr:`tokens`) are kept for
    the route, which makes the final chunk's ``context`` from them.
    """

    kind: ClassVar[Literal["chat", "generate"]]

    def __init__(
        self, *, model: str, load_ns: int, clock: Callable[[], str],
        monotonic_ns: Callable[[], int], start_ns: int | None = None,
        top_logprobs: int | None = None,
    ) -> None:
        self.model = model
        self.load_ns = load_ns
        self._clock = clock
        self._monotonic_ns = monotonic_ns
        self._start_ns = monotonic_ns() - load_ns if start_ns is None else start_ns
        self._top_logprobs = top_logprobs
        self._text: list[str] = []
        self.tokens: list[int] = []
        self._timings: Mapping[str, Any] | None = None
        self._usage: Mapping[str, Any] | None = None
        self._finish_reason: str | None = None
        self._stop_type: str | None = None
        self._tools: dict[int, _ToolCallBuffer] = {}
        self._tools_sent = False
        self.error: str | None = None
        self.upstream_done = False  # saw [DONE] or a native final chunk

    @property
    def text(self) -> str:
        """The answer's text so far (without reasoning)."""
        return "".join(self._text)

    # -- input ------------------------------------------------------------------------

    def feed_payload(self, payload: bytes) -> list[Chunk]:
        """One SSE ``data`` payload as bytes: JSON, or :data:`DONE`."""
        if payload.strip() == DONE:
            self.upstream_done = True
            return []
        try:
            data = json.loads(payload)
        except ValueError:
            return [self._fail(f"invalid event from llama-server: {payload[:200]!r}")]
        if not isinstance(data, Mapping):
            return [self._fail(f"invalid event from llama-server: {payload[:200]!r}")]
        return self.feed_event(data)

    def feed_event(self, data: Mapping[str, Any]) -> list[Chunk]:
        """Ollama chunks for one upstream event; role-only and empty events give none.

        An upstream ``{"error": ...}`` event becomes Ollama's ``{"error": message}``
        line, and :attr:`error` is set: write it and end the response there.
        """
        if "error" in data:
            return [self._fail(_error_message(data["error"]))]
        if isinstance(data.get("timings"), Mapping):
            self._timings = data["timings"]
        if isinstance(data.get("usage"), Mapping):
            self._usage = data["usage"]
        if "choices" in data:
            return self._openai(data)
        return self._native(data)

    def _openai(self, data: Mapping[str, Any]) -> list[Chunk]:
        choices = data.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(choice, Mapping):
            return []  # the include_usage event: choices == []
        content = thinking = ""
        logprobs = choice.get("logprobs")
        delta = choice.get("delta")
        if isinstance(delta, Mapping):
            content = _str(delta.get("content"))
            thinking = _str(delta.get("reasoning_content"))
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for position, fragment in enumerate(calls):
                    if isinstance(fragment, Mapping):
                        index = fragment.get("index", position)
                        key = index if isinstance(index, int) else position
                        self._tools.setdefault(key, _ToolCallBuffer()).add(fragment)
        else:
            content = _str(choice.get("text"))  # /v1/completions
        entries = logprobs.get("content") if isinstance(logprobs, Mapping) else None
        chunks = self._emit(content, thinking, entries)
        finish_reason = choice.get("finish_reason")
        if isinstance(finish_reason, str):
            self._finish_reason = finish_reason
            # Every fragment is in once the choice has finished: send the calls whole.
            tools = self._tool_chunk()
            if tools is not None:
                chunks.append(tools)
        return chunks

    def _native(self, data: Mapping[str, Any]) -> list[Chunk]:
        if "tokens_evaluated" in data or "tokens_predicted" in data:
            self._usage = {"prompt_tokens": data.get("tokens_evaluated"),
                           "completion_tokens": data.get("tokens_predicted")}
        tokens = data.get("tokens")
        if isinstance(tokens, list):
            self.tokens.extend(t for t in tokens if isinstance(t, int) and not isinstance(t, bool))
        chunks = self._emit(_str(data.get("content")), "", data.get("completion_probabilities"))
        if data.get("stop") is True:
            self.upstream_done = True
            if isinstance(data.get("stop_type"), str):
                self._stop_type = data["stop_type"]
        return chunks

    # -- output -----------------------------------------------------------------------

    def _head(self) -> Chunk:
        return {"model": self.model, "created_at": self._clock()}

    def _emit(self, content: str, thinking: str, entries: object) -> list[Chunk]:
        if content:
            self._text.append(content)
        logprobs = None
        if self._top_logprobs is not None and isinstance(entries, list) and entries:
            logprobs = logprobs_to_ollama(entries, self._top_logprobs)
        chunks = self._deltas(content, thinking, force=bool(logprobs))
        if logprobs and chunks:
            chunks[-1]["logprobs"] = logprobs
        return chunks

    @abc.abstractmethod
    def _deltas(self, content: str, thinking: str, *, force: bool = False) -> list[Chunk]:
        """The chunks for one piece of answer text and/or reasoning; ``force`` makes one
        even without text (it carries log probabilities)."""

    def _tool_chunk(self) -> Chunk | None:
        return None

    @abc.abstractmethod
    def _final_body(self) -> Chunk:
        """What the final chunk carries besides the metrics (an empty message/response)."""

    def finish(self, extra: Mapping[str, Any] | None = None) -> Chunk:
        """The last chunk: ``done: true``, ``done_reason``, ``extra`` (``context``) and the
        metrics."""
        final = self._head()
        final.update(self._final_body())
        final["done"] = True
        final["done_reason"] = done_reason_from(self._finish_reason, self._stop_type)
        if extra:
            final.update(extra)
        total_ns = self._monotonic_ns() - self._start_ns
        final.update(durations_from_timings(
            self._timings, self._usage, total_ns=total_ns, load_ns=self.load_ns))
        return final

    @staticmethod
    def error_line(message: str) -> Chunk:
        """Ollama's in-stream error line, ``{"error": message}``."""
        return {"error": message}

    def _fail(self, message: str) -> Chunk:
        self.error = message
        return self.error_line(message)


class ChatStreamConverter(StreamConverter):
    """``/api/chat`` chunks: ``message.content`` / ``message.thinking`` / ``tool_calls``."""

    kind = "chat"

    def _deltas(self, content: str, thinking: str, *, force: bool = False) -> list[Chunk]:
        if not content and not thinking and not force:
            return []
        message: Chunk = {"role": "assistant", "content": content}
        if thinking:
            message["thinking"] = thinking
        chunk = self._head()
        chunk.update({"message": message, "done": False})
        return [chunk]

    def _pending_tool_calls(self) -> list[Chunk]:
        if self._tools_sent or not self._tools:
            return []
        self._tools_sent = True
        return tool_calls_from_openai(
            [self._tools[i].as_openai(i) for i in sorted(self._tools)])

    def _tool_chunk(self) -> Chunk | None:
        calls = self._pending_tool_calls()
        if not calls:
            return None
        chunk = self._head()
        chunk.update({"message": {"role": "assistant", "content": "", "tool_calls": calls},
                      "done": False})
        return chunk

    def _final_body(self) -> Chunk:
        message: Chunk = {"role": "assistant", "content": ""}
        # A stream that ended without a finish_reason still owes its tool calls.
        calls = self._pending_tool_calls()
        if calls:
            message["tool_calls"] = calls
        return {"message": message}


class GenerateStreamConverter(StreamConverter):
    """``/api/generate`` chunks: ``response`` / ``thinking``; the route passes the final
    chunk's ``context`` to :meth:`finish`."""

    kind = "generate"

    def _deltas(self, content: str, thinking: str, *, force: bool = False) -> list[Chunk]:
        if not content and not thinking and not force:
            return []
        chunk = self._head()
        chunk["response"] = content
        if thinking:
            chunk["thinking"] = thinking
        chunk["done"] = False
        return [chunk]

    def _final_body(self) -> Chunk:
        return {"response": ""}


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _error_message(error: object) -> str:
    if isinstance(error, Mapping) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return json.dumps(error)


class NdjsonStream:
    """The relay's transform for /api/chat and /api/generate: SSE in, Ollama's NDJSON out.

    Wraps a stream converter; every upstream read gives at most one write, the lines of
    the events it completed. An upstream error event becomes Ollama's ``{"error": ...}``
    line and ends the answer. ``final_fields`` gives what the last line carries besides the
    metrics (``context``); a failure there ends the answer with an error line instead.
    """

    # X-Accel-Buffering: without it nginx holds the whole stream back until it ends.
    headers: ClassVar[Mapping[str, str]] = {"Content-Type": "application/x-ndjson",
                                            "X-Accel-Buffering": "no"}

    def __init__(self, converter: StreamConverter,
                 final_fields: Callable[[], Awaitable[Mapping[str, Any]]] | None = None
                 ) -> None:
        self.converter = converter
        self._final_fields = final_fields
        self._buffer = b""

    @property
    def ended(self) -> bool:
        return self.converter.upstream_done or self.converter.error is not None

    def feed(self, chunk: bytes) -> bytes:
        if self.converter.error is not None:
            return b""  # the error line was the last one
        payloads, self._buffer = parse_sse_lines(self._buffer + chunk)
        return self._lines(payloads)

    async def finish(self) -> bytes:
        if self.converter.error is not None:
            return b""
        # The connection closed: an event missing its blank line still counts.
        payloads, self._buffer = parse_sse_lines(self._buffer, final=True)
        out = self._lines(payloads)
        if not self.ended or self.converter.error is not None:
            return out
        try:
            extra = await self._final_fields() if self._final_fields is not None else {}
        except LlamaRunnerError as exc:
            return out + ndjson(self.converter.error_line(exc.message))
        return out + ndjson(self.converter.finish(extra))

    def broken(self, message: str) -> bytes:
        return ndjson(self.converter.error_line(message))

    def error_response(self, status: int, message: str, error_type: str | None
                       ) -> web.Response:
        return ollama_error(message, status)

    def _lines(self, payloads: list[bytes]) -> bytes:
        lines: list[Chunk] = []
        for payload in payloads:
            lines.extend(self.converter.feed_payload(payload))
            if self.converter.error is not None:
                break
        return b"".join(ndjson(line) for line in lines) if lines else b""
