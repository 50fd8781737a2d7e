"""Relay one request to a runner and its answer back: the one streaming relay every API uses.

The relay owns what every streamed answer shares: the first-byte watchdog, one client
write per upstream read, closing the upstream when the client leaves, an in-stream error
when llama-server dies midway, error statuses before the stream, and knowing whether the
stream ended as its protocol says it should. What differs between APIs is a transform
(`StreamTransform`): OpenAI and Responses SSE pass through unchanged (`OpenAiSse`,
`ResponsesSse`); Anthropic's SSE (`anthropic/stream.py`), Ollama's NDJSON
(`ollama/stream.py`) and LM Studio's annotated SSE (`lmstudio/routes.py`) reshape it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import ClassVar, Final, Protocol

import aiohttp
from aiohttp import web

from ..config.schema import format_duration
from ..core.errors import UpstreamError
from ..runner.manager import Lease
from .errors import openai_error
from .observe import RequestRecord, note_usage, record_of
from .upstream import JSON, UpstreamResponse, pool_for

log = logging.getLogger(__name__)

# No total timeout: a 10-minute stream or a 90-second first token are normal for local
# models (aiohttp's default total of 300 s would cut them). Connecting to a child on
# loopback is instant, so a short connect timeout catches a wedged runner. A child that
# is healthy but never answers is caught by the per-request first-byte watchdog
# (scheduler.first_token_timeout), which stops counting once the first body bytes arrive.
UPSTREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)

SSE_HEADERS: Final[Mapping[str, str]] = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    # Reverse proxies (nginx) must not buffer server-sent events.
    "X-Accel-Buffering": "no",
}


def upstream_session() -> aiohttp.ClientSession:
    """One pooled session for all traffic to runners.

    trust_env=False: HTTP(S)_PROXY from the user's environment must never capture
    loopback traffic to our own children.
    """
    # llama-server closes idle keep-alive connections after 5 s; drop ours sooner.
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=4)
    return aiohttp.ClientSession(
        connector=connector, trust_env=False, timeout=UPSTREAM_TIMEOUT, auto_decompress=False
    )


class FirstTokenTimeoutError(UpstreamError):
    """llama-server accepted the request but sent nothing within first_token_timeout."""

    status = 504
    code = "first_token_timeout"

    def __init__(self, model: str, seconds: float) -> None:
        super().__init__(
            f"llama-server for model '{model}' produced no output for "
            f"{format_duration(seconds)}; raise scheduler.first_token_timeout if the model "
            "needs longer (a long prompt on a CPU can take minutes), or check its log"
        )


def first_byte_deadline(lease: Lease) -> float | None:
    """The loop time by which llama-server must have sent body bytes; None = never."""
    timeout = lease.first_token_timeout
    if math.isinf(timeout):
        return None
    return asyncio.get_running_loop().time() + timeout


def _timed_out(lease: Lease) -> FirstTokenTimeoutError:
    log.warning("no output from %s within scheduler.first_token_timeout; closing the request",
                lease.runner.name)
    return FirstTokenTimeoutError(lease.runner.name, lease.first_token_timeout)


async def first_chunk(
    upstream: UpstreamResponse, lease: Lease, deadline: float | None
) -> bytes:
    """The first body bytes of a streamed answer, read under the first-byte watchdog.

    Read before any header goes to the client, so a timeout (or a child that dies before
    its first token) is still answered with a proper error status. b"" = empty body.
    """
    try:
        async with asyncio.timeout_at(deadline):
            return await upstream.content.readany()
    except TimeoutError:
        raise _timed_out(lease) from None


def upstream_error_message(status: int, body: bytes) -> tuple[str, str | None]:
    """llama-server's error text and type from its JSON error body, or a generic one."""
    try:
        data = json.loads(body)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            etype = err.get("type")
            return err["message"], etype if isinstance(etype, str) else None
        if isinstance(err, str):
            return err, None
    except (ValueError, UnicodeDecodeError):
        pass
    text = body.decode("utf-8", "replace").strip()[:500]
    return text or f"llama-server answered HTTP {status}", None


def sse_error_event(message: str, code: str = "upstream_error") -> bytes:
    body = {"error": {"message": message, "type": "server_error", "param": None, "code": code}}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


async def open_upstream(
    http: aiohttp.ClientSession, lease: Lease, path: str, body: bytes,
    deadline: float | None = None, content_type: str = JSON,
) -> UpstreamResponse:
    """POST to the runner and wait for its response headers under the first-byte watchdog.

    `deadline` (from first_byte_deadline) lets a streaming relay share one watchdog window
    between the headers and the first body bytes; without it a fresh window starts here.
    The POST goes through the lean client's pool that goes with `http` (upstream.py).
    """
    if deadline is None:
        deadline = first_byte_deadline(lease)
    try:
        # Cancelling the POST on timeout closes its connection, which is how llama-server
        # learns to drop the task (it checks the socket between tokens).
        async with asyncio.timeout_at(deadline):
            if lease.remote is not None:  # a peer's model: aiohttp speaks TLS and proxies
                answer: UpstreamResponse = await lease.remote.post(http, path, body,
                                                                    content_type)
                return answer
            return await pool_for(http).post(lease.base_url, path, body, lease.headers,
                                             content_type)
    except TimeoutError:
        raise _timed_out(lease) from None
    except aiohttp.ClientError as exc:
        raise UpstreamError(
            f"cannot reach llama-server for model '{lease.runner.name}': {exc}"
        ) from exc


# --- transforms ---------------------------------------------------------------------------


class StreamTransform(Protocol):
    """One API's view of llama-server's event stream; one instance per request, no I/O.

    The relay writes what `feed(chunk)` returns for every upstream read (b"" = nothing this
    time). When the upstream closes it writes what `await finish()` returns (what is still
    held, whole events only, and the protocol's proper ending when `ended`), then
    `broken(message)` if `ended` is still False. A connection that breaks gets
    `broken(message)` alone. `ended` means the stream ended as its API says it should: its
    last event, or an error event llama-server ended a failed generation with. An error
    status before the stream is answered with `error_response(status, message,
    llama-server's error type)`.
    """

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def ended(self) -> bool: ...

    def feed(self, chunk: bytes) -> bytes: ...

    async def finish(self) -> bytes: ...

    def broken(self, message: str) -> bytes: ...

    def error_response(self, status: int, message: str, error_type: str | None
                       ) -> web.Response: ...


class SseTransform:
    """What every OpenAI-shaped SSE stream shares: headers, error event and error body."""

    headers: ClassVar[Mapping[str, str]] = SSE_HEADERS

    def broken(self, message: str) -> bytes:
        return sse_error_event(message)

    def error_response(self, status: int, message: str, error_type: str | None
                       ) -> web.Response:
        return openai_error(message, status=status, error_type=error_type, code=error_type)


# Markers are searched in each read plus this much of the one before, so that a marker
# split over two reads is still found.
_MARKER_CARRY: Final = 64


class OpenAiSse(SseTransform):
    """Chat and text completions, relayed byte for byte: no parsing, only a marker search.

    They end with `data: [DONE]`; llama-server ends a stream that fails midway with its own
    `data: {"error": ...}` event and no [DONE]: that is a reported error, not a broken
    connection.
    """

    END_MARKERS: ClassVar[tuple[bytes, ...]] = (b"data: [DONE]", b'data: {"error"')

    def __init__(self) -> None:
        self._carry = b""
        self._ended = False

    @property
    def ended(self) -> bool:
        return self._ended

    def feed(self, chunk: bytes) -> bytes:
        if not self._ended:
            self._see(chunk)
        return chunk

    def _see(self, chunk: bytes) -> None:
        # The hot path of every relayed token: a plain loop, no generator.
        window = self._carry + chunk
        for marker in self.END_MARKERS:
            if marker in window:
                self._ended = True
                return
        self._carry = window[-_MARKER_CARRY:]

    async def finish(self) -> bytes:
        return b""


class ResponsesSse(OpenAiSse):
    """The Responses API: no [DONE]; its last event names how the response ended.

    The line breaks around a name make it a field line (JSON text cannot hold a raw one).
    """

    END_MARKERS = (b"\nevent: response.completed\n", b"\nevent: response.failed\n",
                   b"\nevent: response.incomplete\n", b'data: {"error"')


# --- the relay ----------------------------------------------------------------------------

# What a route makes of a whole (non-streamed) answer: llama-server's JSON body in, the
# client's response out.
AnswerHandler = Callable[[bytes], Awaitable[web.StreamResponse]]


async def relay(
    request: web.Request,
    http: aiohttp.ClientSession,
    lease: Lease,
    path: str,
    body: bytes,
    transform: StreamTransform,
    answer: AnswerHandler | None = None,
    content_type: str = JSON,
) -> web.StreamResponse:
    """POST `body` to the runner's `path` and relay its answer to the client.

    An event stream goes through `transform`, one write per upstream read. A whole answer
    goes to `answer` (default: passed on unchanged, as JSON, or with the child's own
    content type when the request was not JSON). An error status is answered with the
    transform's error body. A connection that breaks before the stream begins is an
    UpstreamError (502).
    """
    deadline = first_byte_deadline(lease)
    record = record_of(request)
    if record is not None:
        record.model = lease.runner.name
    upstream = await open_upstream(http, lease, path, body, deadline, content_type)
    try:
        if upstream.status != 200:
            message, etype = upstream_error_message(upstream.status, await upstream.read())
            return transform.error_response(upstream.status, message, etype)
        if upstream.content_type == "text/event-stream":
            return await _relay_stream(request, upstream, lease, deadline, transform, record)
        data = await upstream.read()
        note_usage(record, data)
        if answer is not None:
            return await answer(data)
        if content_type != JSON:  # the speech worker's text, srt and vtt answers
            return web.Response(body=data, status=200, headers={
                "Content-Type": upstream.headers.get("content-type") or JSON})
        return web.Response(body=data, status=200, content_type=JSON)
    except aiohttp.ClientError as exc:
        raise UpstreamError(
            f"llama-server for model '{lease.runner.name}' broke off the response: {exc}"
        ) from exc
    finally:
        # On success the body is fully read and the connection goes back to the pool; on
        # cancellation (client gone: the listeners cancel its handler) closing it tells
        # llama-server to stop generating.
        upstream.close()


async def _relay_stream(
    request: web.Request, upstream: UpstreamResponse, lease: Lease,
    deadline: float | None, transform: StreamTransform, record: RequestRecord | None,
) -> web.StreamResponse:
    # Raises before our headers go out: a silent or dead child is still a proper error.
    chunk = await first_chunk(upstream, lease, deadline)
    if record is not None:
        record.first_byte_seconds = time.perf_counter() - record.started
    response = web.StreamResponse(status=200, headers=transform.headers)
    await response.prepare(request)
    content = upstream.content
    # The last reads, by reference: the token counts ride on the stream's last events.
    before_last = last = b""
    try:
        while chunk:
            out = transform.feed(chunk)
            if out:
                await response.write(out)
            before_last, last = last, chunk
            chunk = await content.readany()
    except aiohttp.ClientError as exc:
        log.warning("stream from %s broke off: %s", lease.runner.name, exc)
        # What a transform still holds is dropped: half an event is no event.
        await _end(response, transform.broken(_broken_message(lease.runner.name, exc)))
        return response
    note_usage(record, before_last + last)
    tail = await transform.finish()
    if not transform.ended:
        log.warning("stream from %s ended without its last event", lease.runner.name)
        tail += transform.broken(_broken_message(lease.runner.name, None))
    await _end(response, tail)
    return response


def _broken_message(model: str, exc: BaseException | None) -> str:
    """The in-stream error text when llama-server stopped answering midway."""
    detail = f": {exc}" if exc else ""
    return f"llama-server for model '{model}' stopped in the middle of the response{detail}"


async def _end(response: web.StreamResponse, data: bytes) -> None:
    # The client may be gone already; there is nobody left to tell.
    with contextlib.suppress(ConnectionError, RuntimeError):
        await response.write_eof(data)
