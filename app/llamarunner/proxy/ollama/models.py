"""Ollama's model routes: version, tags, show, ps, copy, delete."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from ...config.schema import ConfigValidationError
from ...core.errors import BadRequestError, LlamaRunnerError, ModelNotFoundError
from ...runner.state import OCCUPYING_STATES
from ...store.layout import MEDIA_LICENSE, MEDIA_PARAMS, Manifest, StoreLayout
from ..body import read_json_object
from ..peer_fields import peer_fields
from ..scopes import may_use, resolve_for, visible
from .backend import OLLAMA_BACKEND, OllamaBackend
from .errors import ollama_error
from .views import (
    OLLAMA_COMPAT_VERSION,
    context_length,
    file_digest,
    ps_entry,
    show_response,
    tag_entry,
    vram_share,
)

# Params and license layers are small text; a bigger one is not read into an answer.
_MAX_TEXT: Final = 1024 * 1024


async def root(request: web.Request) -> web.Response:
    return web.Response(text="Ollama is running")


async def version(request: web.Request) -> web.Response:
    configured = request.app[OLLAMA_BACKEND].config.proxies["ollama"].version
    return web.json_response({"version": configured or OLLAMA_COMPAT_VERSION})


def model_field(data: dict[str, Any]) -> str:
    """`model`, or the legacy `name` older clients send."""
    value = data.get("model") or data.get("name")
    if not isinstance(value, str) or not value.strip():
        raise BadRequestError("model is required")
    return value


def _digest(backend: OllamaBackend, name: str) -> tuple[int, float, str]:
    facts = backend.model_file(name)
    path = backend.models()[name].path
    if facts is None:
        return 0, 0.0, file_digest(path, 0, 0)
    digest = facts.digest or file_digest(path, facts.size, facts.mtime_ns)
    return facts.size, facts.mtime, digest


async def tags(request: web.Request) -> web.Response:
    backend = request.app[OLLAMA_BACKEND]
    entries = []
    for name in visible(request, sorted(backend.models())):
        size, mtime, digest = _digest(backend, name)
        entry = tag_entry(name, backend.metadata_for(name), size=size, mtime=mtime,
                          digest=digest)
        entry.update(peer_fields(backend, name, ollama=True))
        entries.append(entry)
    return web.json_response({"models": entries})


async def show(request: web.Request) -> web.Response:
    backend = request.app[OLLAMA_BACKEND]
    _, data = await read_json_object(request)
    name = resolve_for(request, model_field(data))
    runner = backend.manager.runner(name)
    args = runner.effective_args() if runner and runner.state in OCCUPYING_STATES else dict(
        backend.models()[name].args)
    _, mtime, _ = _digest(backend, name)
    chat_template = backend.chat_template_for(name)
    # The template the runner really uses: the file's own, ours for its family, the
    # configured one (a built-in's name when only llama-server has its text), or none.
    template = chat_template.text or chat_template.builtin or ""
    entry = backend.library_entries().get(name)
    texts = _StoredTexts()
    if entry is not None and entry.source == "pulled" and entry.manifest:
        texts = await asyncio.to_thread(_stored_texts, backend.model_store.layout,
                                        entry.manifest)
    body = show_response(name, backend.metadata_for(name), args=args,
                         capabilities=backend.capabilities_for(name), mtime=mtime,
                         template=template, system=entry.system if entry else None,
                         params=texts.params, license=texts.license)
    return web.json_response(body)


@dataclass(frozen=True)
class _StoredTexts:
    params: dict[str, object] | None = None
    license: str = ""


def _stored_texts(layout: StoreLayout, manifest_path: str) -> _StoredTexts:
    """A pulled model's params layer and license text(s), as its manifest names them.

    Unreadable layers are left out: /api/show still answers for a damaged model.
    """
    try:
        manifest = Manifest.parse(Path(manifest_path).read_bytes())
    except (OSError, LlamaRunnerError):
        return _StoredTexts()
    params: dict[str, object] | None = None
    licenses: list[str] = []
    for layer in manifest.layers:
        if layer.media_type not in (MEDIA_PARAMS, MEDIA_LICENSE) or layer.size > _MAX_TEXT:
            continue
        try:
            text = layout.blob_path(layer.digest).read_text(encoding="utf-8")
            if layer.media_type == MEDIA_LICENSE:
                licenses.append(text)
            else:
                data = json.loads(text)
                params = data if isinstance(data, dict) else params
        except (OSError, ValueError):
            continue
    # Ollama joins a model's licenses with a newline.
    return _StoredTexts(params, "\n".join(licenses))


async def ps(request: web.Request) -> web.Response:
    backend = request.app[OLLAMA_BACKEND]
    entries = []
    for info in backend.manager.snapshot():
        if info.state not in ("ready", "starting") or not may_use(request, info.name):
            continue
        size, _, digest = _digest(backend, info.name)
        meta = backend.metadata_for(info.name)
        runner = backend.manager.runner(info.name)
        tail = runner.tail(400) if runner else []
        expires = info.expires_at
        if expires is None:
            # Busy right now: it will expire one TTL after its last request ends.
            ttl = runner.keep_alive if runner and runner.keep_alive is not None else (
                backend.ttl_of(info.name))
            expires = time.time() + ttl
        entries.append(ps_entry(
            info.name, meta, size=size, digest=digest, expires_at=expires,
            context=context_length(info.args, meta), size_vram=vram_share(tail, size),
        ))
    return web.json_response({"models": entries})


async def copy(request: web.Request) -> web.Response:
    backend = request.app[OLLAMA_BACKEND]
    _, data = await read_json_object(request)
    source, destination = data.get("source"), data.get("destination")
    if not isinstance(source, str) or not source or not isinstance(destination, str) or (
            not destination):
        raise BadRequestError("source and destination are required")
    try:
        name = resolve_for(request, source)
    except ModelNotFoundError:
        return ollama_error(f"model '{source}' not found", 404)
    target = destination[: -len(":latest")] if destination.endswith(":latest") else destination
    try:
        await backend.copy_model(name, target)
    except ConfigValidationError as exc:
        # Problems without the config file's path: the client may be remote.
        reasons = "; ".join(str(problem) for problem in exc.problems)
        return ollama_error(f"invalid destination name: {reasons}", 400)
    return web.Response(status=200)


async def delete(request: web.Request) -> web.Response:
    backend = request.app[OLLAMA_BACKEND]
    _, data = await read_json_object(request)
    requested = model_field(data)
    name = resolve_for(request, requested)
    try:
        await backend.delete_model(name)
    except PermissionError as exc:
        return ollama_error(f"model '{requested}' was not deleted: {exc}", 403)
    return web.Response(status=200)
