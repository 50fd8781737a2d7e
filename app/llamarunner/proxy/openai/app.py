"""The application served on the LM Studio / OpenAI port (default 127.0.0.1:1234)."""

from __future__ import annotations

from aiohttp import web

from ..context import BACKEND
from ..errors import error_middleware, render_openai
from ..lmstudio import LMSTUDIO_BACKEND, LMStudioBackend, add_lmstudio_routes
from .routes import add_openai_routes

# Room for long prompts and inline images; aiohttp's own default (1 MiB) is far too small.
MAX_BODY_BYTES = 32 * 1024 * 1024


async def root(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "service": "llamarunner"})


def create_openai_app(backend: LMStudioBackend) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware(render_openai)], client_max_size=MAX_BODY_BYTES
    )
    app[BACKEND] = backend
    app[LMSTUDIO_BACKEND] = backend
    app.router.add_get("/", root)
    add_openai_routes(app)
    add_lmstudio_routes(app)
    return app
