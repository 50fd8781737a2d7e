"""Anthropic's Messages API routes, relayed to the runner's own routes of the same names."""

from __future__ import annotations

from aiohttp import web

from ..body import read_json_object, required_model
from ..context import BACKEND
from ..relay import StreamDialect, relay_openai
from .errors import ROUTE_PREFIX, anthropic_error, error_event
from .stream import END_MARKERS, rewrite_error_events

COUNT_TOKENS_PATH = ROUTE_PREFIX + "/count_tokens"


def _error_like_upstream(status: int, message: str, etype: str | None) -> web.Response:
    # llama-server names OpenAI's error types; Anthropic's follow from the status.
    return anthropic_error(message, status)


ANTHROPIC_SSE = StreamDialect(
    end_markers=END_MARKERS,
    broken_event=error_event,
    error_response=_error_like_upstream,
    rewrite=rewrite_error_events,
)


async def _relay(request: web.Request, upstream_path: str) -> web.StreamResponse:
    backend = request.app[BACKEND]
    raw, data = await read_json_object(request)
    requested = required_model(data)
    name = backend.resolve_model(requested)
    # Both routes render the conversation with the chat template (count_tokens counts the
    # prompt the model would really see), so both need one.
    backend.require_chat(name, requested)
    async with await backend.manager.acquire(name) as lease:
        return await relay_openai(request, backend.http, lease, upstream_path, raw,
                                  ANTHROPIC_SSE)


async def messages(request: web.Request) -> web.StreamResponse:
    return await _relay(request, ROUTE_PREFIX)


async def count_tokens(request: web.Request) -> web.StreamResponse:
    return await _relay(request, COUNT_TOKENS_PATH)


def add_anthropic_routes(app: web.Application) -> None:
    """Register the Messages API; errors on these paths take Anthropic's shape on both
    ports (proxy/errors.py and proxy/security.py choose the renderer by path)."""
    app.router.add_post(ROUTE_PREFIX, messages)
    app.router.add_post(COUNT_TOKENS_PATH, count_tokens)
