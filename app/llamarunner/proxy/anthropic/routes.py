"""Anthropic's Messages API routes, relayed to the runner's own routes of the same names."""

from __future__ import annotations

from aiohttp import web

from ..body import read_json_object, required_model
from ..context import BACKEND
from ..relay import relay
from ..scopes import resolve_for
from .errors import ROUTE_PREFIX
from .stream import AnthropicSse

COUNT_TOKENS_PATH = ROUTE_PREFIX + "/count_tokens"


async def _relay(request: web.Request, upstream_path: str) -> web.StreamResponse:
    backend = request.app[BACKEND]
    raw, data = await read_json_object(request)
    requested = required_model(data)
    name = resolve_for(request, requested)
    # Both routes render the conversation with the chat template (count_tokens counts the
    # prompt the model would really see), so both need one.
    backend.require_chat(name, requested)
    async with await backend.manager.acquire(name) as lease:
        return await relay(request, backend.http, lease, upstream_path, raw, AnthropicSse())


async def messages(request: web.Request) -> web.StreamResponse:
    return await _relay(request, ROUTE_PREFIX)


async def count_tokens(request: web.Request) -> web.StreamResponse:
    return await _relay(request, COUNT_TOKENS_PATH)


def add_anthropic_routes(app: web.Application) -> None:
    """Register the Messages API; errors on these paths take Anthropic's shape on both
    ports (proxy/errors.py and proxy/security.py choose the renderer by path)."""
    app.router.add_post(ROUTE_PREFIX, messages)
    app.router.add_post(COUNT_TOKENS_PATH, count_tokens)
