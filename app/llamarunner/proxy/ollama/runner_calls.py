"""Small JSON calls to a model's llama-server: props, tokenize, detokenize, apply-template."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from ...core.errors import UpstreamError
from ...runner.manager import Lease
from ..relay import open_upstream, upstream_error_message

__all__ = ["apply_template", "props", "slot_context", "tokenize"]


async def _post(http: aiohttp.ClientSession, lease: Lease, path: str,
                body: Mapping[str, Any]) -> Any:
    upstream = await open_upstream(http, lease, path, json.dumps(body).encode())
    try:
        raw = await upstream.read()
        if upstream.status != 200:
            message, _ = upstream_error_message(upstream.status, raw)
            raise UpstreamError(f"llama-server for model '{lease.runner.name}' refused "
                                f"{path}: {message}")
        return json.loads(raw)
    except (aiohttp.ClientError, ValueError) as exc:
        raise UpstreamError(f"llama-server for model '{lease.runner.name}' broke off the "
                            f"answer to {path}: {exc}") from exc
    finally:
        upstream.close()


async def props(http: aiohttp.ClientSession, lease: Lease) -> Mapping[str, Any]:
    """llama-server's ``GET /props``; empty when it cannot be read."""
    if lease.remote is not None:
        return {}  # a peer's model: OpenAI servers have no /props
    try:
        async with http.get(lease.base_url + "/props", headers=lease.headers) as resp:
            data = await resp.json(content_type=None)
    except (aiohttp.ClientError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def slot_context(server_props: Mapping[str, Any]) -> int | None:
    """The context of one slot (``default_generation_settings.n_ctx``) from ``/props``."""
    settings = server_props.get("default_generation_settings")
    value = settings.get("n_ctx") if isinstance(settings, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


async def tokenize(http: aiohttp.ClientSession, lease: Lease, text: str, *,
                   add_special: bool) -> list[int]:
    """The token ids of ``text``; ``add_special`` adds what the model's tokenizer adds to a
    whole prompt (BOS, EOS/SEP for some), special-token text is read as those tokens."""
    reply = await _post(http, lease, "/tokenize",
                        {"content": text, "add_special": add_special, "parse_special": True})
    tokens = reply.get("tokens") if isinstance(reply, Mapping) else None
    if not isinstance(tokens, list):
        raise UpstreamError(f"llama-server for model '{lease.runner.name}' answered /tokenize "
                            "without tokens")
    return [t for t in tokens if isinstance(t, int) and not isinstance(t, bool)]


async def apply_template(http: aiohttp.ClientSession, lease: Lease,
                         chat_body: Mapping[str, Any]) -> str:
    """The prompt text the runner's chat template makes of a chat completion body."""
    reply = await _post(http, lease, "/apply-template", chat_body)
    prompt = reply.get("prompt") if isinstance(reply, Mapping) else None
    if not isinstance(prompt, str):
        raise UpstreamError(f"llama-server for model '{lease.runner.name}' answered "
                            "/apply-template without a prompt")
    return prompt
