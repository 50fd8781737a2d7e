"""Ollama's generation routes: /api/chat, /api/generate, /api/embed, /api/embeddings."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from aiohttp import web

from ...core.errors import BadRequestError, LlamaRunnerError
from ...runner.manager import Lease
from ..body import read_json_object
from ..relay import open_upstream, relay, upstream_error_message
from ..scopes import resolve_for
from .backend import OLLAMA_BACKEND, OllamaBackend
from .convert import (
    CHAT_PATH,
    COMPLETION_PATH,
    DEFAULT_MEDIA_MARKER,
    EMBED_CANNOT_FIT,
    EMBED_TOO_LONG,
    EMBEDDINGS_PATH,
    INFILL_PATH,
    batch_limit_from_error,
    chat_response_to_ollama,
    chat_to_upstream,
    completion_prompt_parts,
    embed_response_to_ollama,
    embed_to_upstream,
    embed_token_limit,
    embeddings_response_to_ollama,
    embeddings_to_upstream,
    fit_tokens,
    fits_untokenized,
    generate_response_to_ollama,
    generate_to_upstream,
    load_only_reply,
    logprobs_requested,
    needs_chat_prompt,
)
from .errors import ollama_error
from .models import model_field
from .options import OllamaRequestError, load_args_from_options, parse_keep_alive
from .runner_calls import apply_template, props, slot_context, tokenize
from .stream import ChatStreamConverter, GenerateStreamConverter, NdjsonStream
from .timefmt import rfc3339_now

log = logging.getLogger(__name__)

Kind = Literal["chat", "generate"]


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


@dataclass(frozen=True)
class _Call:
    """One generation request as the relay needs it."""

    kind: Kind
    model: str  # the name the client asked for, echoed in every chunk
    path: str
    body: dict[str, Any]
    start_ns: int
    top_logprobs: int | None
    # Ollama's generate answers carry `context`; not in raw mode, and not with images
    # (their place in the prompt cannot be given back as tokens).
    with_context: bool

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream", True))


async def _generation(request: web.Request, kind: Kind) -> web.StreamResponse:
    backend = request.app[OLLAMA_BACKEND]
    start_ns = time.monotonic_ns()
    _, data = await read_json_object(request)
    requested = model_field(data)
    struct = "ChatRequest" if kind == "chat" else "GenerateRequest"
    try:
        # Ollama checks top_logprobs before it looks the model up.
        top_logprobs = logprobs_requested(data, struct)
    except OllamaRequestError as exc:
        raise BadRequestError(exc.message) from exc
    name = resolve_for(request, requested)
    if kind == "chat" and isinstance(data.get("messages"), list) and data["messages"]:
        # A created model's MESSAGE lines come before the chat's own, as in Ollama.
        preset = backend.default_messages_for(name)
        if preset:
            data = {**data, "messages": [*preset, *data["messages"]]}
    raw = data.get("raw") is True
    can_chat = True
    try:
        keep_alive = parse_keep_alive(data.get("keep_alive"))
        overrides = load_args_from_options(data.get("options")) or None
        only_load = load_only_reply(data, kind=kind, model=requested,
                                    created_at=rfc3339_now(), keep_alive=keep_alive)
        if only_load is None:
            if kind == "chat":
                path, body = chat_to_upstream(data, model=name)
            else:
                can_chat = raw or backend.chat_template_for(name).can_chat
                path, body = generate_to_upstream(data, model=name, can_chat=can_chat)
    except OllamaRequestError as exc:
        raise BadRequestError(exc.message) from exc
    if only_load is not None:
        await _load_or_unload(backend, name, keep_alive, overrides)
        return web.json_response(only_load)
    if kind == "chat" and path == CHAT_PATH:
        # A request with its own template brings the chat template with it.
        backend.require_chat(name, requested)
    refused = _missing_capability(backend, name, requested, data, path)
    if refused:
        return ollama_error(refused, 400)
    lease = await backend.manager.acquire(name, overrides)
    try:
        if path == COMPLETION_PATH and data.get("images"):
            # Raw prompts mark image positions with the server's own media marker, which
            # llama-server picks per process and reports in /props.
            marker = await _media_marker(backend, lease)
            path, body = _generate_again(data, name, can_chat, media_marker=marker)
        elif kind == "generate" and needs_chat_prompt(data, can_chat=can_chat):
            # Continuing a context: the model's chat template renders this turn, and the
            # turn goes after the context tokens to /completion.
            text = await apply_template(backend.http, lease, body)
            path, body = _generate_again(data, name, can_chat, chat_prompt=text)
        with_context = kind == "generate" and not raw and not data.get("images")
        call = _Call(kind, requested, path, body, start_ns, top_logprobs, with_context)
        return await _relay(request, lease, backend, call)
    finally:
        lease.release(keep_alive)


def _generate_again(data: Mapping[str, Any], name: str, can_chat: bool,
                    **extra: Any) -> tuple[str, dict[str, Any]]:
    try:
        return generate_to_upstream(data, model=name, can_chat=can_chat, **extra)
    except OllamaRequestError as exc:
        raise BadRequestError(exc.message) from exc


async def _media_marker(backend: OllamaBackend, lease: Lease) -> str:
    marker = (await props(backend.http, lease)).get("media_marker")
    return marker if isinstance(marker, str) and marker else DEFAULT_MEDIA_MARKER


async def _load_or_unload(backend: OllamaBackend, name: str, keep_alive: float | None,
                          overrides: dict[str, int] | None) -> None:
    if keep_alive == 0:
        await backend.manager.unload(name)
        return
    lease = await backend.manager.acquire(name, overrides)
    lease.release(keep_alive)


async def _reply_context(backend: OllamaBackend, lease: Lease, call: _Call, answer: str,
                         tokens: list[int]) -> list[int] | None:
    """Ollama's ``context`` for a generate answer: the token ids of prompt and answer.

    From ``/completion`` these are the context the request continued, this turn's text
    and the answer's own tokens (end-of-turn included); from a chat completion, the
    runner's rendering of the messages with the answer text, tokenized.
    """
    if not call.with_context or lease.remote is not None:
        return None  # a peer has no /tokenize to count the context with
    try:
        if call.path == CHAT_PATH:
            text = await apply_template(backend.http, lease, call.body)
            return await tokenize(backend.http, lease, text + answer, add_special=True)
        if call.path != COMPLETION_PATH:
            return None
        parts = completion_prompt_parts(call.body)
        if parts is None:
            return None
        before, text = parts
        prompt = await tokenize(backend.http, lease, text, add_special=not before)
        return [*before, *prompt, *tokens]
    except LlamaRunnerError as exc:
        # The answer is complete: losing its context is better than losing the answer.
        log.warning("no context for the answer of %s: %s", lease.runner.name, exc.message)
        return None


def _answer_of(reply: Mapping[str, Any], path: str) -> tuple[str, list[int]]:
    if path == CHAT_PATH:
        choices = reply.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else {}
        message = choice.get("message") if isinstance(choice, Mapping) else None
        content = message.get("content") if isinstance(message, Mapping) else None
        return (content if isinstance(content, str) else ""), []
    content = reply.get("content")
    tokens = reply.get("tokens")
    return (content if isinstance(content, str) else "",
            [t for t in tokens if isinstance(t, int)] if isinstance(tokens, list) else [])


async def _relay(request: web.Request, lease: Lease, backend: OllamaBackend, call: _Call
                 ) -> web.StreamResponse:
    load_ns = int(lease.load_wait * 1e9)

    async def answer(raw: bytes) -> web.StreamResponse:
        reply = json.loads(raw)
        if call.kind == "chat":
            out = chat_response_to_ollama(
                reply, model=call.model, created_at=rfc3339_now(),
                total_ns=time.monotonic_ns() - call.start_ns, load_ns=load_ns,
                upstream=call.path, top_logprobs=call.top_logprobs)
        else:
            context = await _reply_context(backend, lease, call, *_answer_of(reply, call.path))
            out = generate_response_to_ollama(
                reply, model=call.model, created_at=rfc3339_now(),
                total_ns=time.monotonic_ns() - call.start_ns, load_ns=load_ns,
                upstream=call.path, top_logprobs=call.top_logprobs, context=context)
        return web.json_response(out)

    converter_type = ChatStreamConverter if call.kind == "chat" else GenerateStreamConverter
    converter = converter_type(model=call.model, load_ns=load_ns, clock=rfc3339_now,
                               monotonic_ns=time.monotonic_ns, start_ns=call.start_ns,
                               top_logprobs=call.top_logprobs)

    async def final_fields() -> dict[str, Any]:
        context = await _reply_context(backend, lease, call, converter.text, converter.tokens)
        return {} if context is None else {"context": context}

    return await relay(request, backend.http, lease, call.path,
                       json.dumps(call.body).encode(), NdjsonStream(converter, final_fields),
                       answer)


def _require_embeddings(backend: OllamaBackend, name: str, requested: str) -> None:
    if not backend.models()[name].takes_embedding_requests:
        raise BadRequestError(
            f'"{requested}" does not support embeddings; enable llama-server\'s embedding '
            'mode with "embedding": true in the model\'s args')


async def embed(request: web.Request) -> web.StreamResponse:
    backend = request.app[OLLAMA_BACKEND]
    start_ns = time.monotonic_ns()
    _, data = await read_json_object(request)
    requested = model_field(data)
    name = resolve_for(request, requested)
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
        reply = await _embed_fitted(backend, lease, body, truncate=plan["truncate"])
        if isinstance(reply, web.Response):
            return reply
        out = embed_response_to_ollama(
            reply, model=requested, total_ns=time.monotonic_ns() - start_ns,
            load_ns=int(lease.load_wait * 1e9), dimensions=plan["dimensions"])
        return web.json_response(out)
    finally:
        lease.release(keep_alive)


async def _embed_fitted(backend: OllamaBackend, lease: Lease, body: dict[str, Any], *,
                        truncate: bool) -> dict[str, Any] | web.Response:
    """Embed the inputs, each cut to what the runner takes first when ``truncate`` allows
    it (else Ollama's 400 for one that is too long)."""
    texts = [text for text in body["input"] if isinstance(text, str)]
    server = await props(backend.http, lease)
    limit = embed_token_limit(lease.runner.effective_args(), slot_context(server))
    for attempt in range(2):
        inputs = await _fitted_inputs(backend, lease, texts, limit, truncate)
        result = await _call_json(backend, lease, EMBEDDINGS_PATH, {**body, "input": inputs})
        if isinstance(result, dict):
            return result
        status, message = result
        # The physical batch can be smaller than the flags say (llama-server clamps it to
        # the context): its error names the real size, so fit to that once more.
        smaller = batch_limit_from_error(message)
        if smaller is not None and not truncate:
            raise BadRequestError(EMBED_TOO_LONG)
        if smaller is None or attempt or (limit is not None and smaller >= limit):
            return ollama_error(message, status)
        limit = smaller
    raise AssertionError("unreachable")  # pragma: no cover


async def _fitted_inputs(backend: OllamaBackend, lease: Lease, texts: list[str],
                         limit: int | None, truncate: bool) -> list[str | list[int]]:
    inputs: list[str | list[int]] = []
    for text in texts:
        if limit is None or fits_untokenized(text, limit):
            inputs.append(text)
            continue
        whole = await tokenize(backend.http, lease, text, add_special=True)
        if len(whole) <= limit:
            inputs.append(text)
            continue
        if not truncate:
            raise BadRequestError(EMBED_TOO_LONG)
        bare = await tokenize(backend.http, lease, text, add_special=False)
        fitted = fit_tokens(whole, bare, limit)
        if fitted is None:
            raise BadRequestError(EMBED_CANNOT_FIT)
        inputs.append(fitted)  # llama-server takes token ids as an input, used as they are
    return inputs


async def embeddings(request: web.Request) -> web.StreamResponse:
    backend = request.app[OLLAMA_BACKEND]
    _, data = await read_json_object(request)
    requested = model_field(data)
    name = resolve_for(request, requested)
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


async def _call_json(backend: OllamaBackend, lease: Lease, path: str, body: dict[str, Any]
                     ) -> dict[str, Any] | tuple[int, str]:
    """llama-server's JSON answer, or (status, message) when it refused."""
    upstream = await open_upstream(backend.http, lease, path, json.dumps(body).encode())
    try:
        raw = await upstream.read()
        if upstream.status != 200:
            message, _ = upstream_error_message(upstream.status, raw)
            return upstream.status, message
        reply: dict[str, Any] = json.loads(raw)
        return reply
    except aiohttp.ClientError as exc:
        return 502, (f"llama-server for model '{lease.runner.name}' broke off the "
                     f"response: {exc}")
    finally:
        upstream.close()


async def _post_json(backend: OllamaBackend, lease: Lease, path: str, body: dict[str, Any]
                     ) -> dict[str, Any] | web.Response:
    result = await _call_json(backend, lease, path, body)
    if isinstance(result, dict):
        return result
    status, message = result
    return ollama_error(message, status)
