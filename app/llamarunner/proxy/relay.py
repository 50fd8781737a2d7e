"""Relay one request to a runner and its response back, streaming chunk by chunk."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from ..config.schema import format_duration
from ..core.errors import UpstreamError
from ..runner.manager import Lease
from .errors import openai_error

log = logging.getLogger(__name__)

# No total timeout: a 10-minute stream or a 90-second first token are normal for local
# models (aiohttp's default total of 300 s would cut them). Connecting to a child on
# loopback is instant, so a short connect timeout catches a wedged runner. A child that
# is healthy but never answers is caught by the per-request first-byte watchdog
# (scheduler.first_token_timeout), which stops counting once the first body bytes arrive.
UPSTREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)

_STREAM_HEADERS = {
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
    upstream: aiohttp.ClientResponse, lease: Lease, deadline: float | None
) -> bytes:
    """The first body bytes of a streamed answer, read under the first-byte watchdog.

    Relays call this before sending their own headers, so a timeout (or a child that dies
    before its first token) is still answered with a proper error status. b"" = empty body.
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


# Failures that mean a pooled keep-alive connection was already closed by llama-server
# (its HTTP library drops connections after streamed responses and idle periods without
# always saying so). The request never reached it, so sending it again is safe.
_STALE_CONNECTION_ERRORS = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
# One retry per pooled connection that may have died at once (a burst of streams on
# several connections), then a last try whose failure is reported.
_STALE_RETRIES = 4


async def open_upstream(
    http: aiohttp.ClientSession, lease: Lease, path: str, body: bytes,
    deadline: float | None = None,
) -> aiohttp.ClientResponse:
    """POST to the runner and wait for its response headers under the first-byte watchdog.

    `deadline` (from first_byte_deadline) lets a streaming relay share one watchdog window
    between the headers and the first body bytes; without it a fresh window starts here.
    """
    url = lease.base_url + path
    headers = {"Content-Type": "application/json", **lease.headers}
    if deadline is None:
        deadline = first_byte_deadline(lease)
    try:
        # Cancelling the POST on timeout closes its connection, which is how llama-server
        # learns to drop the task (it checks the socket between tokens).
        async with asyncio.timeout_at(deadline):
            for _ in range(_STALE_RETRIES):
                try:
                    return await http.post(url, data=body, headers=headers)
                except _STALE_CONNECTION_ERRORS:
                    continue  # the pool may hold several dead connections: next one
            return await http.post(url, data=body, headers=headers)
    except TimeoutError:
        raise _timed_out(lease) from None
    except aiohttp.ClientError as exc:
        raise UpstreamError(
            f"cannot reach llama-server for model '{lease.runner.name}': {exc}"
        ) from exc


@dataclass(frozen=True)
class StreamDialect:
    """What differs between the APIs whose answers are relayed as they are.

    `end_markers`: bytes whose arrival means the stream ended as its API says it should
    (its last event, or the error event llama-server ends a failed stream with); a stream
    that closes without one broke off and gets `broken_event(message)` appended.
    `error_response(status, message, type)` answers a llama-server error status.
    `rewrite(unsent) -> (send now, keep)` may reshape events before they go out.
    """

    end_markers: tuple[bytes, ...]
    broken_event: Callable[[str], bytes]
    error_response: Callable[[int, str, str | None], web.Response]
    rewrite: Callable[[bytes], tuple[bytes, bytes]] | None = None


async def relay_openai(
    request: web.Request,
    http: aiohttp.ClientSession,
    lease: Lease,
    path: str,
    body: bytes,
    dialect: StreamDialect | None = None,
) -> web.StreamResponse:
    """Forward an OpenAI-style POST to the runner and relay its answer unchanged.

    `dialect` describes another API's stream and errors (default: chat completions).
    """
    dialect = dialect or OPENAI_SSE
    deadline = first_byte_deadline(lease)
    upstream = await open_upstream(http, lease, path, body, deadline)
    try:
        if upstream.status != 200:
            data = await upstream.read()
            message, etype = upstream_error_message(upstream.status, data)
            return dialect.error_response(upstream.status, message, etype)
        if upstream.content_type == "text/event-stream":
            return await _relay_stream(request, upstream, lease, deadline, dialect)
        data = await upstream.read()
        return web.Response(body=data, status=200, content_type="application/json")
    except aiohttp.ClientError as exc:
        raise UpstreamError(
            f"llama-server for model '{lease.runner.name}' broke off the response: {exc}"
        ) from exc
    finally:
        # On success the body is fully read and the connection goes back to the pool; on
        # cancellation (client gone) closing it tells llama-server to stop generating.
        upstream.close()


def _error_like_upstream(status: int, message: str, etype: str | None) -> web.Response:
    return openai_error(message, status=status, error_type=etype, code=etype)


# Chat and text completions end with `data: [DONE]`; llama-server ends a stream that fails
# midway with its own `data: {"error": ...}` event and no [DONE]: that is a reported
# error, not a broken connection.
OPENAI_SSE = StreamDialect(
    end_markers=(b"data: [DONE]", b'data: {"error"'),
    broken_event=sse_error_event,
    error_response=_error_like_upstream,
)
# The Responses API's stream has no [DONE]: its last event names how the response ended.
# The line breaks around a name make it a field line (JSON text cannot hold a raw one).
OPENAI_RESPONSES_SSE = StreamDialect(
    end_markers=(b"\nevent: response.completed\n", b"\nevent: response.failed\n",
                 b"\nevent: response.incomplete\n", b'data: {"error"'),
    broken_event=sse_error_event,
    error_response=_error_like_upstream,
)
# Markers are searched in each read plus this much of the one before, so that a marker
# split over two reads is still found.
_MARKER_CARRY = 64


async def _relay_stream(
    request: web.Request, upstream: aiohttp.ClientResponse, lease: Lease,
    deadline: float | None, dialect: StreamDialect,
) -> web.StreamResponse:
    # Raises before our headers go out: a silent or dead child is still a proper error.
    first = await first_chunk(upstream, lease, deadline)
    response = web.StreamResponse(status=200, headers=_STREAM_HEADERS)
    await response.prepare(request)
    carry = unsent = b""
    ended = False
    try:
        chunks = upstream.content.iter_any()
        chunk = first
        while chunk:
            window = carry + chunk
            ended = ended or any(marker in window for marker in dialect.end_markers)
            carry = window[-_MARKER_CARRY:]
            if dialect.rewrite is None:
                await response.write(chunk)
            else:
                ready, unsent = dialect.rewrite(unsent + chunk)
                if ready:
                    await response.write(ready)
            chunk = await anext(chunks, b"")
    except aiohttp.ClientError as exc:
        log.warning("stream from %s broke off: %s", lease.runner.name, exc)
        # A held-back event that never finished is dropped: half an event is no event.
        await _write_quietly(response, dialect.broken_event(_broken_message(lease, exc)))
        return response
    if not ended:
        await _write_quietly(response, dialect.broken_event(_broken_message(lease, None)))
        return response
    if unsent:
        await _write_quietly(response, unsent)
        return response
    await _write_eof_quietly(response)
    return response


def _broken_message(lease: Lease, exc: Any) -> str:
    runner = lease.runner
    detail = f": {exc}" if exc else ""
    return f"llama-server for model '{runner.name}' stopped in the middle of the response{detail}"


async def _write_quietly(response: web.StreamResponse, data: bytes) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):
        await response.write(data)
        await response.write_eof()


async def _write_eof_quietly(response: web.StreamResponse) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):
        await response.write_eof()
