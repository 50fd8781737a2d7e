"""OpenAI-compatible routes (/v1/...): list models, and relay completions to runners."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from ...core.errors import BadRequestError, FeatureNotEnabledError
from ..anthropic.routes import add_anthropic_routes
from ..body import read_json_object, required_model
from ..context import BACKEND, ProxyBackend
from ..ollama.backend import OLLAMA_BACKEND
from ..ollama.views import ollama_name
from ..peer_fields import peer_fields, peer_owner
from ..relay import OpenAiSse, ResponsesSse, StreamTransform, relay
from ..scopes import resolve_for, visible
from .audio import add_audio_routes

OWNER = "llamarunner"
# Ollama's owner of a model without a namespace ("llama3" is "library/llama3").
OLLAMA_OWNER = "library"


def ollama_owner(name: str) -> str:
    """`owned_by` as Ollama reports it: the namespace of `[host/]namespace/model[:tag]`."""
    parts = name.partition(":")[0].split("/")
    return parts[-2] if len(parts) >= 2 and parts[-2] else OLLAMA_OWNER


def requested_ttl(data: Mapping[str, Any]) -> float | None:
    """LM Studio's `ttl`: seconds the model may stay idle after this request, in place of
    its configured TTL; None when the request has none."""
    value = data.get("ttl")
    if value is None:
        return None
    seconds = math.nan
    # bool is an int to Python, but `"ttl": true` is no number of seconds.
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # an integer too large for a float
            seconds = math.inf
    if not (math.isfinite(seconds) and seconds >= 0):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
        raise BadRequestError(
            "'ttl' must be a number of seconds, 0 or more (how long the model may stay "
            f"loaded while idle after this request, e.g. 300), not {shown}", param="ttl")
    return seconds


def _on_ollama_port(request: web.Request) -> bool:
    return OLLAMA_BACKEND in request.app


def _model_entry(backend: ProxyBackend, name: str, ollama_style: bool) -> dict[str, object]:
    # The Ollama port names models as Ollama's own /v1/models does (with a tag, owned by
    # their namespace), so clients can send those names to /api/* as well.
    entry: dict[str, object] = {
        "id": ollama_name(name) if ollama_style else name,
        "object": "model",
        "created": backend.model_created(name),
        "owned_by": ollama_owner(name) if ollama_style else OWNER,
    }
    owner = peer_owner(backend, name)
    if owner is not None:
        # Another LlamaRunner that reads this list skips these: no peer loops.
        entry["owned_by"] = owner
        entry.update(peer_fields(backend, name))
    return entry


async def list_models(request: web.Request) -> web.Response:
    backend = request.app[BACKEND]
    ollama_style = _on_ollama_port(request)
    data = [_model_entry(backend, name, ollama_style)
            for name in visible(request, sorted(backend.models()))]
    return web.json_response({"object": "list", "data": data})


async def get_model(request: web.Request) -> web.Response:
    backend = request.app[BACKEND]
    name = resolve_for(request, request.match_info["model"])
    return web.json_response(_model_entry(backend, name, _on_ollama_port(request)))


async def _relay_post(
    request: web.Request, upstream_path: str, *, chat: bool = False,
    embeddings: bool = False, transform: Callable[[], StreamTransform] = OpenAiSse,
) -> web.StreamResponse:
    backend = request.app[BACKEND]
    raw, data = await read_json_object(request)
    requested = required_model(data)
    ttl = requested_ttl(data)
    name = resolve_for(request, requested)
    if chat:
        backend.require_chat(name, requested)
    if embeddings and not backend.models()[name].takes_embedding_requests:
        raise FeatureNotEnabledError(
            f"model '{name}' does not serve embeddings; add \"embedding\": true to its "
            "args in the config"
        )
    async with await backend.manager.acquire(name) as lease:
        try:
            return await relay(request, backend.http, lease, upstream_path, raw, transform())
        finally:
            lease.release(keep_alive=ttl)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _relay_post(request, "/v1/chat/completions", chat=True)


async def completions(request: web.Request) -> web.StreamResponse:
    # Plain text in, plain text out: no chat template involved, so any model serves it.
    return await _relay_post(request, "/v1/completions")


async def embeddings(request: web.Request) -> web.StreamResponse:
    return await _relay_post(request, "/v1/embeddings", embeddings=True)


async def responses(request: web.Request) -> web.StreamResponse:
    return await _relay_post(request, "/v1/responses", chat=True, transform=ResponsesSse)


def add_openai_routes(app: web.Application) -> None:
    """Register the OpenAI-compatible routes (speech to text included), and Anthropic's
    Messages API; used on both ports."""
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", get_model)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/v1/responses", responses)
    add_audio_routes(app)
    add_anthropic_routes(app)
