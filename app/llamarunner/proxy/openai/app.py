"""The application served on the LM Studio / OpenAI port (default 127.0.0.1:1234)."""

from __future__ import annotations

from aiohttp import web

from ..context import BACKEND, ProxyBackend
from ..errors import error_middleware, render_openai
from .routes import add_openai_routes

# Room for long prompts and inline images; aiohttp's own default (1 MiB) is far too small.
MAX_BODY_BYTES = 32 * 1024 * 1024


async def root(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "service": "llamarunner"})


def create_openai_app(backend: ProxyBackend) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware(render_openai)], client_max_size=MAX_BODY_BYTES
    )
    app[BACKEND] = backend
    app.router.add_get("/", root)
    add_openai_routes(app)
    return app
