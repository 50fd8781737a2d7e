"""A streamed chat with one model through the Service, as typed events (the "Try it" panel)."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import aiohttp

from ..core.errors import BadRequestError, LlamaRunnerError
from ..proxy.ollama.stream import DONE
from ..proxy.relay import first_byte_deadline, open_upstream, upstream_error_message
from ..runner.manager import Lease, RunnerManager
from .sse_reader import sse_payloads

__all__ = [
    "CHAT_PATH",
    "ChatBackend",
    "ChatError",
    "ChatEvent",
    "ChatStreamReader",
    "ChatSummary",
    "ReasoningDelta",
    "TextDelta",
    "chat_request",
    "stream_chat",
]

log = logging.getLogger(__name__)

CHAT_PATH: Final = "/v1/chat/completions"


class ChatBackend(Protocol):
    """What a chat needs from the Service: the same calls an API request makes."""

    @property
    def manager(self) -> RunnerManager: ...

    @property
    def http(self) -> aiohttp.ClientSession: ...

    def resolve_model(self, requested: str) -> str: ...

    def require_chat(self, name: str, requested: str | None = None) -> None: ...


@dataclass(frozen=True)
class TextDelta:
    """A piece of the answer."""

    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    """A piece of the model's reasoning ("thinking"), sent before or beside the answer."""

    text: str


@dataclass(frozen=True)
class ChatSummary:
    """The last event of a chat that ended normally; None = llama-server did not say.

    ``time_to_first_token`` is measured here, from sending the request to the runner to
    the first text or reasoning; ``load_seconds`` is how long the model took to load first
    (0 when it was ready).
    """

    model: str
    prompt_tokens: int | None
    generated_tokens: int | None
    tokens_per_second: float | None
    time_to_first_token: float | None
    finish_reason: str | None
    load_seconds: float = 0.0

    def describe(self) -> str:
        """One line for under an answer: tokens, speed, first token, why it stopped."""
        parts = []
        if self.generated_tokens is not None:
            parts.append(f"{self.generated_tokens} tokens")
        if self.tokens_per_second is not None:
            parts.append(f"{self.tokens_per_second:.1f} tokens/s")
        if self.time_to_first_token is not None:
            parts.append(f"first token after {_seconds(self.time_to_first_token)}")
        if self.load_seconds >= 0.05:
            parts.append(f"loaded in {_seconds(self.load_seconds)}")
        if self.finish_reason == "length":
            parts.append("stopped at the token limit")
        return " · ".join(parts) or "no statistics"


@dataclass(frozen=True)
class ChatError:
    """The last event of a chat that failed: a message for the user and the error's code."""

    message: str
    code: str = "upstream_error"


ChatEvent = TextDelta | ReasoningDelta | ChatSummary | ChatError


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def chat_request(
    model: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    system: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
) -> dict[str, Any]:
    """The OpenAI chat body sent to llama-server; raises BadRequestError for bad settings."""
    if not messages:
        raise BadRequestError("write a message first: the conversation is empty")
    if temperature is not None and not 0 <= temperature <= 2:
        raise BadRequestError(f"temperature {temperature} is out of range; use 0 to 2",
                              "temperature")
    if max_tokens is not None and max_tokens < 1:
        raise BadRequestError(f"max tokens {max_tokens} is too small; use 1 or more, or no "
                              "limit", "max_tokens")
    turns = [dict(message) for message in messages]
    if system:
        turns.insert(0, {"role": "system", "content": system})
    body: dict[str, Any] = {
        "model": model,
        "messages": turns,
        "stream": True,
        # The token counts come in a last usage event; llama-server's timings come anyway.
        "stream_options": {"include_usage": True},
    }
    if temperature is not None:
        body["temperature"] = temperature
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


class ChatStreamReader:
    """Turns llama-server's streamed chat events into ChatEvents, without any I/O.

    Feed every SSE ``data`` payload to :meth:`feed`; ``done`` is True after ``[DONE]``,
    ``error`` holds the message of an error event (the stream ends there). Token counts
    and speed are read from the ``usage`` and ``timings`` objects whichever event they
    ride on.
    """

    def __init__(self) -> None:
        self.done = False
        self.error: str | None = None
        self.finish_reason: str | None = None
        self.usage: Mapping[str, Any] = {}
        self.timings: Mapping[str, Any] = {}

    def feed(self, payload: bytes) -> list[TextDelta | ReasoningDelta]:
        if payload == DONE:
            self.done = True
            return []
        try:
            data = json.loads(payload)
        except ValueError:
            log.debug("ignoring a stream event that is not JSON: %r", payload[:200])
            return []
        if not isinstance(data, Mapping):
            return []
        if "error" in data:
            self.error = _error_text(data["error"])
            return []
        if isinstance(data.get("usage"), Mapping):
            self.usage = data["usage"]
        if isinstance(data.get("timings"), Mapping):
            self.timings = data["timings"]
        events: list[TextDelta | ReasoningDelta] = []
        for choice in data.get("choices") or ():
            if not isinstance(choice, Mapping):
                continue
            delta = choice.get("delta")
            if isinstance(delta, Mapping):
                reasoning = delta.get("reasoning_content")
                if isinstance(reasoning, str) and reasoning:
                    events.append(ReasoningDelta(reasoning))
                content = delta.get("content")
                if isinstance(content, str) and content:
                    events.append(TextDelta(content))
            if isinstance(choice.get("finish_reason"), str):
                self.finish_reason = choice["finish_reason"]
        return events

    def summary(self, model: str, time_to_first_token: float | None,
                load_seconds: float = 0.0) -> ChatSummary:
        timings, usage = self.timings, self.usage
        prompt = _int(usage.get("prompt_tokens"))
        if prompt is None and _int(timings.get("prompt_n")) is not None:
            # prompt_n counts only what was not in the cache already.
            prompt = (_int(timings.get("prompt_n")) or 0) + (_int(timings.get("cache_n")) or 0)
        generated = _int(usage.get("completion_tokens"))
        if generated is None:
            generated = _int(timings.get("predicted_n"))
        speed = timings.get("predicted_per_second")
        return ChatSummary(
            model=model,
            prompt_tokens=prompt,
            generated_tokens=generated,
            tokens_per_second=float(speed) if isinstance(speed, int | float) else None,
            time_to_first_token=time_to_first_token,
            finish_reason=self.finish_reason,
            load_seconds=load_seconds,
        )


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _error_text(error: object) -> str:
    if isinstance(error, Mapping) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return json.dumps(error)


async def stream_chat(
    backend: ChatBackend,
    model: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    system: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncGenerator[ChatEvent, None]:
    """Chat with `model` the way an API request does, streaming the answer as events.

    `messages` are OpenAI chat messages (``{"role": "user", "content": "..."}``); `system`
    goes first when given. The events are TextDelta and ReasoningDelta pieces, then exactly
    one ChatSummary (it ended normally) or ChatError (it failed, with a message for the
    user: unknown model, a model that cannot chat, a failed load, llama-server's own error).

    Cancelling the task that iterates (a Stop button) closes the connection to
    llama-server, which then stops generating, and ends the request. A consumer that may
    stop iterating early without cancelling should wrap the iterator in
    ``contextlib.aclosing`` so the same happens at once.
    """
    try:
        name = backend.resolve_model(model)
        backend.require_chat(name, model)
        body = chat_request(name, messages, system=system, temperature=temperature,
                            max_tokens=max_tokens)
        lease = await backend.manager.acquire(name)
    except LlamaRunnerError as exc:
        yield ChatError(exc.message, exc.code)
        return
    try:
        # aclosing: when this generator is closed early, the relay's connection closes now.
        async with contextlib.aclosing(_relay(backend.http, lease, name, body, clock)) as events:
            async for event in events:
                yield event
    finally:
        lease.release()


async def _relay(
    http: aiohttp.ClientSession, lease: Lease, name: str, body: dict[str, Any],
    clock: Callable[[], float],
) -> AsyncGenerator[ChatEvent, None]:
    deadline = first_byte_deadline(lease)
    sent = clock()
    try:
        upstream = await open_upstream(http, lease, CHAT_PATH, json.dumps(body).encode(),
                                       deadline)
    except LlamaRunnerError as exc:
        yield ChatError(exc.message, exc.code)
        return
    reader = ChatStreamReader()
    first_token: float | None = None
    try:
        if upstream.status != 200:
            # Errors found before the first token (a prompt over the context size...) come
            # as a plain JSON response, not as an event in a stream.
            message, _ = upstream_error_message(upstream.status, await upstream.read())
            yield ChatError(message)
            return
        # The first bytes under the first-token watchdog, like an API request.
        async with contextlib.aclosing(sse_payloads(upstream, lease, deadline)) as payloads:
            async for payload in payloads:
                for event in reader.feed(payload):
                    if first_token is None:
                        first_token = clock() - sent
                    yield event
                if reader.error is not None:
                    yield ChatError(reader.error)
                    return
    except LlamaRunnerError as exc:  # the first-token watchdog
        yield ChatError(exc.message, exc.code)
        return
    except aiohttp.ClientError as exc:
        yield ChatError(_broken(name, f": {exc}"))
        return
    finally:
        # After [DONE] the body is read and the connection goes back to the pool; when the
        # task was cancelled (Stop) closing it tells llama-server to stop generating.
        upstream.close()
    if not reader.done:
        yield ChatError(_broken(name, ""))
        return
    yield reader.summary(name, first_token, lease.load_wait)


def _broken(name: str, detail: str) -> str:
    return (f"llama-server for model '{name}' stopped in the middle of the answer{detail}; "
            "see the model's log")
