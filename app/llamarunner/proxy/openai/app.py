"""The application served on the LM Studio / OpenAI port (default 127.0.0.1:1234)."""

from __future__ import annotations

from aiohttp import web

from ..access_log import log_request
from ..context import BACKEND
from ..errors import error_middleware, render_openai
from ..lmstudio import LMSTUDIO_BACKEND, LMStudioBackend, add_lmstudio_routes
from ..metrics import add_metrics
from ..observe import LMSTUDIO, OBSERVERS, install_observers
from ..security import install_security, openai_unauthorized
from .routes import add_openai_routes

# Room for long prompts and inline images; aiohttp's own default (1 MiB) is far too small.
# The limit in force is security.max_body_bytes, which the security middleware applies.
MAX_BODY_BYTES = 32 * 1024 * 1024
# Answered without an API key: the health check LM Studio clients make.
OPEN_PATHS = ("/",)


async def root(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "service": "llamarunner"})


def create_openai_app(backend: LMStudioBackend) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware(render_openai)], client_max_size=MAX_BODY_BYTES
    )
    app[BACKEND] = backend
    app[LMSTUDIO_BACKEND] = backend
    install_security(app, render_openai, openai_unauthorized, OPEN_PATHS)
    # Outermost, so that requests the guards refuse are counted and logged too.
    install_observers(app, LMSTUDIO)
    app[OBSERVERS].append(log_request)
    add_metrics(app, backend.metrics)
    app.router.add_get("/", root)
    add_openai_routes(app)
    add_lmstudio_routes(app)
    return app
