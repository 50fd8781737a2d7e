"""Ollama's routes for getting models: pull, push (refused), create, and blob uploads.

Handlers only translate HTTP: the work is the ModelStore's (store/). Progress streams as
NDJSON lines (Ollama's ProgressResponse), or with `"stream": false` as one answer at the
end. An error before the first line is an ordinary `{"error": ...}` answer with its
status; after it, a last `{"error": ...}` line (status 200 is already sent), as Ollama's
streamResponse does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any, Final

from aiohttp import web

from ...core.errors import BadRequestError, LlamaRunnerError
from ...store.create import CreateBase, CreateRequest, base_from_entry, parse_create_request
from ...store.download import PullProgress
from ..body import read_json_object
from ..redact import is_local_client, redact_paths
from ..scopes import resolve_for
from .backend import OLLAMA_BACKEND, OllamaBackend
from .errors import ollama_error
from .options import go_type_error

__all__ = ["BLOB_PATH_PREFIX", "create", "head_blob", "post_blob", "pull", "push"]

# Blob uploads stream to disk; the security middleware leaves their bodies unread.
BLOB_PATH_PREFIX: Final = "/api/blobs/"
_NDJSON: Final = "application/x-ndjson"


def _flag(data: Mapping[str, Any], key: str, struct: str, default: bool) -> bool:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequestError(go_type_error(struct, key, "bool", value).message)
    return value


def _error_text(request: web.Request, exc: LlamaRunnerError) -> str:
    # Paths of this machine (the store folder in a disk-space error) stay on it.
    return exc.message if is_local_client(request) else redact_paths(exc.message)


async def _progress(request: web.Request, events: AsyncGenerator[PullProgress, None], *,
                    stream: bool) -> web.StreamResponse:
    # aclosing: a client that hangs up ends the watch at once (a pull nobody watches stops).
    if not stream:
        last: PullProgress | None = None
        try:
            async with contextlib.aclosing(events):
                async for event in events:
                    last = event
        except LlamaRunnerError as exc:
            return ollama_error(_error_text(request, exc), exc.status)
        return web.json_response((last or PullProgress("success")).to_json())
    response: web.StreamResponse | None = None
    try:
        async with contextlib.aclosing(events):
            async for event in events:
                if response is None:
                    response = web.StreamResponse(status=200,
                                                  headers={"Content-Type": _NDJSON})
                    await response.prepare(request)
                await response.write(json.dumps(event.to_json()).encode() + b"\n")
    except LlamaRunnerError as exc:
        if response is None:
            return ollama_error(_error_text(request, exc), exc.status)
        line = {"error": _error_text(request, exc)}
        await response.write(json.dumps(line).encode() + b"\n")
    if response is None:
        return web.json_response(PullProgress("success").to_json())
    await response.write_eof()
    return response


async def pull(request: web.Request) -> web.StreamResponse:
    backend = request.app[OLLAMA_BACKEND]
    _, data = await read_json_object(request)
    insecure = _flag(data, "insecure", "PullRequest", False)
    stream = _flag(data, "stream", "PullRequest", True)
    # A bad name is a 400 here, before any network or file access.
    name = data.get("model") or data.get("name")
    job = backend.model_store.pull(name if isinstance(name, str) else "", insecure=insecure)
    return await _progress(request, job.events(), stream=stream)


async def push(request: web.Request) -> web.Response:
    await read_json_object(request)
    return ollama_error("pushing models is not supported: LlamaRunner pulls and creates "
                        "models but does not publish them; push with Ollama itself", 501)


async def create(request: web.Request) -> web.StreamResponse:
    backend = request.app[OLLAMA_BACKEND]
    _, data = await read_json_object(request)
    stream = _flag(data, "stream", "CreateRequest", True)
    spec = parse_create_request(data)
    base = await _base(request, backend, spec)
    # Every problem with the request is a 400 here, before anything is written.
    plan = await backend.model_store.plan_create(spec, base)
    return await _progress(request, backend.model_store.create(plan), stream=stream)


async def _base(request: web.Request, backend: OllamaBackend, spec: CreateRequest
                ) -> CreateBase | None:
    """What `from` lends: a stored model's layers, or another model's files."""
    if spec.source is None:
        return None
    store = backend.model_store
    stored = await store.find(spec.source)
    if stored is None:
        name = resolve_for(request, spec.source)  # 404 for an unknown model
        entry = backend.library_entries().get(name)
        if entry is not None and entry.source == "pulled" and entry.manifest:
            stored = store.name_of_manifest(entry.manifest)
        if stored is None:
            return base_from_entry(entry, backend.models()[name].path)
    manifest = await asyncio.to_thread(store.layout.read_manifest, stored)
    return CreateBase(layers=tuple((layer.media_type, layer.digest, layer.size)
                                   for layer in manifest.layers))


async def head_blob(request: web.Request) -> web.Response:
    backend = request.app[OLLAMA_BACKEND]
    digest = request.match_info["digest"]
    if await backend.model_store.has_blob(digest):
        return web.Response(status=200)
    return ollama_error(f"blob {digest!r} not found", 404)


async def post_blob(request: web.Request) -> web.Response:
    """Store an uploaded blob if its sha256 is the digest in the path (201), else 400."""
    backend = request.app[OLLAMA_BACKEND]
    digest = request.match_info["digest"]
    if await backend.model_store.has_blob(digest):
        return web.Response(status=200)
    # No size limit but the disk's; a pause longer than the body timeout ends the upload.
    idle = backend.config.security.body_timeout

    async def chunks() -> AsyncIterator[bytes]:
        while True:
            async with asyncio.timeout(idle):
                chunk = await request.content.readany()
            if not chunk:
                return
            yield chunk

    try:
        created = await backend.model_store.upload_blob(digest, chunks(),
                                                        request.content_length)
    except TimeoutError:
        response = ollama_error(f"the upload stalled for more than {idle:g} seconds "
                                "(security.body_timeout)", 408)
        response.force_close()
        return response
    except LlamaRunnerError as exc:
        response = ollama_error(_error_text(request, exc), exc.status)
        response.force_close()  # the rest of the body may still be on the wire
        return response
    return web.Response(status=201 if created else 200)
