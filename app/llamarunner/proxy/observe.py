"""What one request was, for metrics and the access log: API, route, model, key, tokens.

The observing middleware is the outermost one on both listeners: it opens a
`RequestRecord` before the security checks run and, when the answer is complete (a stream
to its end), hands it to every observer of the app (`OBSERVERS`: the metrics and the
access log). The security middleware fills in the key's name; the relay fills in the
model, the time to the first streamed byte and the token counts llama-server reported.
Nothing in a record is prompt text or a file path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson
from aiohttp import web

log = logging.getLogger(__name__)

# The APIs a route belongs to, as metrics label them.
OPENAI: Final = "openai"
OLLAMA: Final = "ollama"
LMSTUDIO: Final = "lmstudio"
ANTHROPIC: Final = "anthropic"
# A path no route matched: never the raw path, which a client could make up by the million.
UNMATCHED_ROUTE: Final = "unmatched"


@dataclass
class RequestRecord:
    """One request as metrics and logs see it; filled in as the request goes."""

    api: str
    route: str
    method: str
    started: float  # time.perf_counter()
    model: str | None = None
    key_name: str | None = None
    status: int = 0
    seconds: float = 0.0
    first_byte_seconds: float | None = None
    prompt_tokens: int | None = None
    generated_tokens: int | None = None
    client: str | None = None


Observer = Callable[[RequestRecord], None]
OBSERVERS: Final = web.AppKey("observers", list[Observer])
# Which API the app's own routes are (the Ollama port: "ollama"; the other: "lmstudio").
NATIVE_API: Final = web.AppKey("native_api", str)
_RECORD: Final = web.RequestKey("record", RequestRecord)


def record_of(request: web.Request) -> RequestRecord | None:
    """The record of `request`; None on an app without the observing middleware."""
    return request.get(_RECORD)


def api_of(path: str, native: str) -> str:
    """openai, anthropic, ollama or lmstudio: which API's route `path` is on a listener
    whose own routes are `native`'s."""
    if path.startswith("/v1/messages"):
        return ANTHROPIC
    if path.startswith("/v1/"):
        return OPENAI
    return native


def route_of(request: web.Request) -> str:
    """The matched route's pattern (`/api/v0/models/{model}`), never the raw path."""
    resource = request.match_info.route.resource
    if resource is None:
        return UNMATCHED_ROUTE
    canonical: str = resource.canonical
    return canonical or UNMATCHED_ROUTE


def observe_middleware() -> Any:
    @web.middleware
    async def middleware(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        observers = request.app.get(OBSERVERS)
        if not observers:
            return await handler(request)
        record = RequestRecord(
            api=api_of(request.path, request.app.get(NATIVE_API, LMSTUDIO)),
            route=route_of(request), method=request.method, started=time.perf_counter(),
            client=request.remote)
        request[_RECORD] = record
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = 499  # the client left before the answer was complete (nginx's code)
            raise
        finally:
            record.status = status
            record.seconds = time.perf_counter() - record.started
            for observer in observers:
                try:
                    observer(record)
                except Exception:  # an observer's bug must never fail the request
                    log.exception("request observer %r failed", observer)

    return middleware


def install_observers(app: web.Application, native_api: str) -> None:
    """Put the observing middleware outermost; observers are added to `app[OBSERVERS]`."""
    app[NATIVE_API] = native_api
    app[OBSERVERS] = []
    app.middlewares.insert(0, observe_middleware())


# --- token counts from llama-server's answers ----------------------------------------------


def note_usage(record: RequestRecord | None, data: Any) -> None:
    """Token counts from one decoded answer or event, in any of llama-server's spellings:
    OpenAI's `usage`, Anthropic's and the Responses API's, or its own `timings`."""
    if record is None or not isinstance(data, dict):
        return
    usage = data.get("usage")
    if not isinstance(usage, dict):
        response = data.get("response")  # the Responses API's last event
        usage = response.get("usage") if isinstance(response, dict) else None
    if isinstance(usage, dict):
        prompt = _count(usage, "prompt_tokens", "input_tokens")
        generated = _count(usage, "completion_tokens", "output_tokens")
        if prompt is not None:
            record.prompt_tokens = prompt
        if generated is not None:
            record.generated_tokens = generated
    timings = data.get("timings")
    if isinstance(timings, dict):
        if record.prompt_tokens is None:
            prompt_n = _count(timings, "prompt_n")
            if prompt_n is not None:
                record.prompt_tokens = prompt_n + (_count(timings, "cache_n") or 0)
        if record.generated_tokens is None:
            record.generated_tokens = _count(timings, "predicted_n")


def note_usage_in_body(record: RequestRecord | None, body: bytes) -> None:
    """`note_usage` for a whole JSON answer; a body that is not JSON counts nothing."""
    if record is None or (b'"usage"' not in body and b'"timings"' not in body):
        return
    with contextlib.suppress(orjson.JSONDecodeError):
        note_usage(record, orjson.loads(body))


def note_usage_in_stream_tail(record: RequestRecord | None, tail: bytes) -> None:
    """`note_usage` for the last events of a stream (its usage rides on the last ones)."""
    if record is None or (b'"usage"' not in tail and b'"timings"' not in tail):
        return
    for line in reversed(tail.split(b"\n")):
        if not line.startswith(b"data:") or (b'"usage"' not in line
                                              and b'"timings"' not in line):
            continue
        try:
            note_usage(record, orjson.loads(line[5:]))
        except orjson.JSONDecodeError:
            continue  # the start of the tail cut an event in half
        if record.generated_tokens is not None:
            return


def _count(data: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = data.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None
