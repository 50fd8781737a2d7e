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
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

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


# The counts llama-server reports, in any API's spelling: OpenAI's `usage`
# (prompt_tokens, completion_tokens), Anthropic's and the Responses API's (input_tokens,
# output_tokens), or its own `timings` (prompt_n + cache_n, predicted_n). Found by a
# search from the end instead of parsing the answer (a few microseconds per request less):
# a quote that starts a key cannot occur unescaped inside a JSON string, so a match is
# always a real key, and the last one is the final count of a stream.
_PROMPT: Final = (b'"prompt_tokens":', b'"input_tokens":')
_GENERATED: Final = (b'"completion_tokens":', b'"output_tokens":')
_DIGITS: Final = re.compile(rb"\s*(\d+)")


def _last_count(text: bytes, key: bytes) -> int | None:
    at = text.rfind(key)
    if at < 0:
        return None
    match = _DIGITS.match(text, at + len(key))
    return int(match.group(1)) if match else None


def _first_found(text: bytes, keys: tuple[bytes, ...]) -> int | None:
    for key in keys:
        value = _last_count(text, key)
        if value is not None:
            return value
    return None


def note_usage(record: RequestRecord | None, text: bytes) -> None:
    """Token counts from an answer, or from the last events of a stream."""
    if record is None or (b'"usage"' not in text and b'"timings"' not in text):
        return
    prompt = _first_found(text, _PROMPT)
    if prompt is None:
        prompt_n = _last_count(text, b'"prompt_n":')
        if prompt_n is not None:
            prompt = prompt_n + (_last_count(text, b'"cache_n":') or 0)
    generated = _first_found(text, _GENERATED)
    if generated is None:
        generated = _last_count(text, b'"predicted_n":')
    if prompt is not None:
        record.prompt_tokens = prompt
    if generated is not None:
        record.generated_tokens = generated
