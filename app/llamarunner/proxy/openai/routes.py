"""OpenAI-compatible routes (/v1/...): list models, and relay completions to runners."""

from __future__ import annotations

from aiohttp import web

from ...core.errors import FeatureNotEnabledError
from ..body import read_json_object, required_model
from ..context import BACKEND, ProxyBackend
from ..relay import relay_openai

OWNER = "llamarunner"


def _model_entry(backend: ProxyBackend, name: str) -> dict[str, object]:
    return {
        "id": name,
        "object": "model",
        "created": backend.model_created(name),
        "owned_by": OWNER,
    }


async def list_models(request: web.Request) -> web.Response:
    backend = request.app[BACKEND]
    data = [_model_entry(backend, name) for name in sorted(backend.models())]
    return web.json_response({"object": "list", "data": data})


async def get_model(request: web.Request) -> web.Response:
    backend = request.app[BACKEND]
    name = backend.resolve_model(request.match_info["model"])
    return web.json_response(_model_entry(backend, name))


async def _relay_post(request: web.Request, upstream_path: str, *, embeddings: bool = False
                      ) -> web.StreamResponse:
    backend = request.app[BACKEND]
    raw, data = await read_json_object(request)
    name = backend.resolve_model(required_model(data))
    if embeddings and not backend.models()[name].serves_embeddings:
        raise FeatureNotEnabledError(
            f"model '{name}' does not serve embeddings; add \"embedding\": true to its "
            "args in the config"
        )
    async with await backend.manager.acquire(name) as lease:
        return await relay_openai(request, backend.http, lease, upstream_path, raw)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _relay_post(request, "/v1/chat/completions")


async def completions(request: web.Request) -> web.StreamResponse:
    return await _relay_post(request, "/v1/completions")


async def embeddings(request: web.Request) -> web.StreamResponse:
    return await _relay_post(request, "/v1/embeddings", embeddings=True)


def add_openai_routes(app: web.Application) -> None:
    """Register the OpenAI-compatible routes; used on both ports."""
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", get_model)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
