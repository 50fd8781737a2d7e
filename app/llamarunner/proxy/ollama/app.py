"""The application served on the Ollama port (default 127.0.0.1:11434)."""

from __future__ import annotations

from aiohttp import web

from ..access_log import log_request
from ..context import BACKEND
from ..errors import error_middleware
from ..metrics import add_metrics
from ..observe import OBSERVERS, OLLAMA, install_observers
from ..openai.app import MAX_BODY_BYTES
from ..openai.routes import add_openai_routes
from ..security import STREAMED_BODY_PREFIXES, install_security, ollama_unauthorized
from . import generation, models, store_routes
from .backend import OLLAMA_BACKEND, OllamaBackend
from .errors import render_ollama_port

# Answered without an API key: the health checks Ollama clients make before anything else.
OPEN_PATHS = ("/", "/api/version")


def create_ollama_app(backend: OllamaBackend) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware(render_ollama_port)], client_max_size=MAX_BODY_BYTES
    )
    app[BACKEND] = backend
    app[OLLAMA_BACKEND] = backend
    install_security(app, render_ollama_port, ollama_unauthorized, OPEN_PATHS)
    # Outermost, so that requests the guards refuse are counted and logged too.
    install_observers(app, OLLAMA)
    app[OBSERVERS].append(log_request)
    add_metrics(app, backend.metrics)
    # aiohttp answers HEAD for every GET route (allow_head), as Ollama does for / and
    # /api/version.
    app.router.add_get("/", models.root)
    app.router.add_get("/api/version", models.version)
    app.router.add_get("/api/tags", models.tags)
    app.router.add_post("/api/show", models.show)
    app.router.add_get("/api/ps", models.ps)
    app.router.add_post("/api/copy", models.copy)
    app.router.add_delete("/api/delete", models.delete)
    # Getting models: the store of pulled models (store/).
    app.router.add_post("/api/pull", store_routes.pull)
    app.router.add_post("/api/push", store_routes.push)
    app.router.add_post("/api/create", store_routes.create)
    app.router.add_head("/api/blobs/{digest}", store_routes.head_blob)
    app.router.add_post("/api/blobs/{digest}", store_routes.post_blob)
    app[STREAMED_BODY_PREFIXES] = (store_routes.BLOB_PATH_PREFIX,)
    app.router.add_post("/api/chat", generation.chat)
    app.router.add_post("/api/generate", generation.generate)
    app.router.add_post("/api/embed", generation.embed)
    app.router.add_post("/api/embeddings", generation.embeddings)
    # GitHub Copilot and other tools send OpenAI-style requests to the Ollama port.
    add_openai_routes(app)
    return app
