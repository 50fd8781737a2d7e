"""Ollama's generation routes: /api/chat, /api/generate, /api/embed, /api/embeddings."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, Literal

import aiohttp
from aiohttp import web

from ...core.errors import BadRequestError
from ...runner.manager import Lease
from ..body import read_json_object
from ..relay import first_byte_deadline, first_chunk, open_upstream, upstream_error_message
from .backend import OLLAMA_BACKEND, OllamaBackend
from .convert import (
    CHAT_PATH,
    COMPLETION_PATH,
    DEFAULT_MEDIA_MARKER,
    EMBEDDINGS_PATH,
    INFILL_PATH,
    chat_response_to_ollama,
    chat_to_openai,
    embed_response_to_ollama,
    embed_to_upstream,
    embeddings_response_to_ollama,
    embeddings_to_upstream,
    generate_response_to_ollama,
    generate_to_upstream,
    load_only_reply,
)
from .errors import ollama_error
from .models import model_field
from .options import OllamaRequestError, load_args_from_options, parse_keep_alive
from .stream import ChatStreamConverter, GenerateStreamConverter, ndjson, parse_sse_lines
from .timefmt import rfc3339_now

Kind = Literal["chat", "generate"]
NDJSON = "application/x-ndjson"


async def chat(request: web.Request) -> web.StreamResponse:
    return await _generation(request, "chat")


async def generate(request: web.Request) -> web.StreamResponse:
    return await _generation(request, "generate")


def _missing_capability(backend: OllamaBackend, name: str, requested: str,
                        data: Mapping[str, Any], path: str) -> str | None:
    """Ollama refuses a feature the model cannot do, before loading anything."""
    caps = backend.capabilities_for(name)
    needs = []
    if data.get("tools"):
        needs.append(("tools", "tools"))
    if data.get("think") not in (None, False):
        needs.append(("thinking", "thinking"))
    images = bool(data.get("images")) or any(
        isinstance(m, Mapping) and m.get("images") for m in data.get("messages") or [])
    if images:
        needs.append(("vision", "vision"))
    if path == INFILL_PATH:
        needs.append(("insert", "insert"))
    for capability, what in needs:
        if capability not in caps:
            return f'"{requested}" does not support {what}'
    return None


async def _generation(request: web.Request, kind: Kind) -> web.StreamResponse:
    backend = request.app[OLLAMA_BACKEND]
    start_ns = time.monotonic_ns()
    _, data = await read_json_object(request)
    requested = model_field(data)
    name = backend.resolve_model(requested)
    try:
        keep_alive = parse_keep_alive(data.get("keep_alive"))
        overrides = load_args_from_options(data.get("options")) or None
        only_load = load_only_reply(data, kind=kind, model=requested,
                                    created_at=rfc3339_now(), keep_alive=keep_alive)
        if only_load is None:
            if kind == "chat":
                path, body = CHAT_PATH, chat_to_openai(data, model=name)
            else:
                path, body = generate_to_upstream(data, model=name)
    except OllamaRequestError as exc:
        raise BadRequestError(exc.message) from exc
    if only_load is not None:
        await _load_or_unload(backend, name, keep_alive, overrides)
        return web.json_response(only_load)
    refused = _missing_capability(backend, name, requested, data, path)
    if refused:
        return ollama_error(refused, 400)
    stream = bool(body.get("stream", True))
    lease = await backend.manager.acquire(name, overrides)
    try:
        if path == COMPLETION_PATH and data.get("images"):
            # Raw prompts mark image positions with the server's own media marker, which
            # llama-server picks per process and reports in /props.
            marker = await _media_marker(backend, lease)
            try:
                path, body = generate_to_upstream(data, model=name, media_marker=marker)
            except OllamaRequestError as exc:
                raise BadRequestError(exc.message) from exc
        return await _relay(request, lease, backend, path, body, kind, requested, stream,
                            start_ns)
    finally:
        lease.release(keep_alive)


async def _media_marker(backend: OllamaBackend, lease: Lease) -> str:
    try:
        async with backend.http.get(lease.base_url + "/props", headers=lease.headers) as resp:
            props = await resp.json(content_type=None)
    except (aiohttp.ClientError, ValueError):
        return DEFAULT_MEDIA_MARKER
    marker = props.get("media_marker") if isinstance(props, dict) else None
    return marker if isinstance(marker, str) and marker else DEFAULT_MEDIA_MARKER


async def _load_or_unload(backend: OllamaBackend, name: str, keep_alive: float | None,
                          overrides: dict[str, int] | None) -> None:
    if keep_alive == 0:
        await backend.manager.unload(name)
        return
    lease = await backend.manager.acquire(name, overrides)
    lease.release(keep_alive)


async def _relay(
    request: web.Request, lease: Lease, backend: OllamaBackend, path: str,
    body: dict[str, Any], kind: Kind, model: str, stream: bool, start_ns: int,
) -> web.StreamResponse:
    load_ns = int(lease.load_wait * 1e9)
    deadline = first_byte_deadline(lease)
    upstream = await open_upstream(backend.http, lease, path, json.dumps(body).encode(),
                                   deadline)
    try:
        if upstream.status != 200:
            message, _ = upstream_error_message(upstream.status, await upstream.read())
            return ollama_error(message, upstream.status)
        if not stream:
            reply = await upstream.json(content_type=None)
            total_ns = time.monotonic_ns() - start_ns
            if kind == "chat":
                out = chat_response_to_ollama(reply, model=model, created_at=rfc3339_now(),
                                              total_ns=total_ns, load_ns=load_ns)
            else:
                out = generate_response_to_ollama(
                    reply, model=model, created_at=rfc3339_now(), total_ns=total_ns,
                    load_ns=load_ns, upstream=path)
            return web.json_response(out)
        converter_type = ChatStreamConverter if kind == "chat" else GenerateStreamConverter
        converter = converter_type(model=model, load_ns=load_ns, clock=rfc3339_now,
                                   monotonic_ns=time.monotonic_ns, start_ns=start_ns)
        # Read before our headers go out, so a silent or dead child is an error status.
        first = await first_chunk(upstream, lease, deadline)
        return await _relay_ndjson(request, upstream, converter, lease.runner.name, first)
    except aiohttp.ClientError as exc:
        return ollama_error(f"llama-server for model '{lease.runner.name}' broke off the "
                            f"response: {exc}", 502)
    finally:
        upstream.close()


async def _relay_ndjson(
    request: web.Request, upstream: aiohttp.ClientResponse,
    converter: ChatStreamConverter | GenerateStreamConverter, runner_name: str,
    first: bytes = b"",
) -> web.StreamResponse:
    """Turn llama-server's SSE into Ollama's NDJSON, one write per upstream read.

    `first` is what the caller already read (under the first-byte watchdog).
    """
    # X-Accel-Buffering: without it nginx holds the whole stream back until it ends.
    response = web.StreamResponse(status=200, headers={"Content-Type": NDJSON,
                                                       "X-Accel-Buffering": "no"})
    await response.prepare(request)
    buffer = b""
    try:
        if first:
            payloads, buffer = parse_sse_lines(first)
            if await _write_converted(response, converter, payloads):
                return response
        async for chunk in upstream.content.iter_any():
            payloads, buffer = parse_sse_lines(buffer + chunk)
            if await _write_converted(response, converter, payloads):
                return response
        payloads, _ = parse_sse_lines(buffer, final=True)
        if await _write_converted(response, converter, payloads):
            return response
    except aiohttp.ClientError as exc:
        await response.write(ndjson(converter.error_line(
            f"llama-server for model '{runner_name}' stopped in the middle of the response: "
            f"{exc}")))
        await response.write_eof()
        return response
    if converter.upstream_done:
        await response.write(ndjson(converter.finish()))
    else:
        await response.write(ndjson(converter.error_line(
            f"llama-server for model '{runner_name}' stopped in the middle of the response")))
    await response.write_eof()
    return response


async def _write_converted(
    response: web.StreamResponse, converter: ChatStreamConverter | GenerateStreamConverter,
    payloads: list[bytes],
) -> bool:
    """Write the chunks for these payloads; True when an upstream error ended the stream."""
    lines = []
    for payload in payloads:
        lines.extend(converter.feed_payload(payload))
        if converter.error:
            break
    if lines:
        await response.write(b"".join(ndjson(line) for line in lines))
    if converter.error:
        await response.write_eof()
        return True
    return False


def _require_embeddings(backend: OllamaBackend, name: str, requested: str) -> None:
    if not backend.models()[name].serves_embeddings:
        raise BadRequestError(
            f'"{requested}" does not support embeddings; enable llama-server\'s embedding '
            'mode with "embedding": true in the model\'s args')


async def embed(request: web.Request) -> web.StreamResponse:
    backend = request.app[OLLAMA_BACKEND]
    start_ns = time.monotonic_ns()
    _, data = await read_json_object(request)
    requested = model_field(data)
    name = backend.resolve_model(requested)
    try:
        keep_alive = parse_keep_alive(data.get("keep_alive"))
        body, plan = embed_to_upstream(data, model=name)
    except OllamaRequestError as exc:
        raise BadRequestError(exc.message) from exc
    _require_embeddings(backend, name, requested)
    lease = await backend.manager.acquire(name)
    try:
        if plan["inputs"] == 0:
            return web.json_response({"model": requested, "embeddings": []})
        reply = await _post_json(backend, lease, EMBEDDINGS_PATH, body)
        if isinstance(reply, web.Response):
            return reply
        out = embed_response_to_ollama(
            reply, model=requested, total_ns=time.monotonic_ns() - start_ns,
            load_ns=int(lease.load_wait * 1e9), dimensions=plan["dimensions"])
        return web.json_response(out)
    finally:
        lease.release(keep_alive)


async def embeddings(request: web.Request) -> web.StreamResponse:
    backend = request.app[OLLAMA_BACKEND]
    _, data = await read_json_object(request)
    requested = model_field(data)
    name = backend.resolve_model(requested)
    try:
        keep_alive = parse_keep_alive(data.get("keep_alive"))
        body = embeddings_to_upstream(data, model=name)
    except OllamaRequestError as exc:
        raise BadRequestError(exc.message) from exc
    _require_embeddings(backend, name, requested)
    lease = await backend.manager.acquire(name)
    try:
        if body is None:
            return web.json_response(embeddings_response_to_ollama(None))
        reply = await _post_json(backend, lease, EMBEDDINGS_PATH, body)
        if isinstance(reply, web.Response):
            return reply
        return web.json_response(embeddings_response_to_ollama(reply))
    finally:
        lease.release(keep_alive)


async def _post_json(backend: OllamaBackend, lease: Lease, path: str, body: dict[str, Any]
                     ) -> dict[str, Any] | web.Response:
    upstream = await open_upstream(backend.http, lease, path, json.dumps(body).encode())
    try:
        raw = await upstream.read()
        if upstream.status != 200:
            message, _ = upstream_error_message(upstream.status, raw)
            return ollama_error(message, upstream.status)
        reply: dict[str, Any] = json.loads(raw)
        return reply
    except aiohttp.ClientError as exc:
        return ollama_error(f"llama-server for model '{lease.runner.name}' broke off the "
                            f"response: {exc}", 502)
    finally:
        upstream.close()
