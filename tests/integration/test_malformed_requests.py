"""Every POST route of all three APIs refuses bad bodies in its own format, starting nothing."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

# (port, method, path, shape): shape is "openai" ({"error": {...}}) or "ollama".
ROUTES = [
    ("lmstudio", "POST", "/v1/chat/completions", "openai"),
    ("lmstudio", "POST", "/v1/completions", "openai"),
    ("lmstudio", "POST", "/v1/embeddings", "openai"),
    ("lmstudio", "POST", "/api/v0/chat/completions", "openai"),
    ("lmstudio", "POST", "/api/v0/completions", "openai"),
    ("lmstudio", "POST", "/api/v0/embeddings", "openai"),
    ("lmstudio", "POST", "/api/v1/models/load", "openai"),
    ("ollama", "POST", "/v1/chat/completions", "openai"),
    ("ollama", "POST", "/v1/completions", "openai"),
    ("ollama", "POST", "/v1/embeddings", "openai"),
    ("ollama", "POST", "/api/chat", "ollama"),
    ("ollama", "POST", "/api/generate", "ollama"),
    ("ollama", "POST", "/api/embed", "ollama"),
    ("ollama", "POST", "/api/embeddings", "ollama"),
    ("ollama", "POST", "/api/show", "ollama"),
    ("ollama", "DELETE", "/api/delete", "ollama"),
]

BAD_BODIES: list[tuple[str, bytes, set[int]]] = [
    ("malformed JSON", b'{"model": "m",', {400}),
    ("not an object", b'["m"]', {400}),
    ("empty body", b"", {400}),
    ("missing model", b'{"messages": [], "prompt": "x", "input": "x"}', {400}),
    ("model of the wrong type", b'{"model": 7, "prompt": "x", "input": "x"}', {400}),
    ("unknown model", b'{"model": "no-such-model", "prompt": "x", "input": "x", '
                      b'"messages": [{"role": "user", "content": "x"}]}', {404}),
]


@pytest.fixture
async def ports(write_config, start_service, fake_bin) -> dict[str, str]:
    config = write_config(
        {"m": {"path": str(fake_bin), "args": {"embedding": True}}}, runtime=fake_bin,
        proxies={"ollama": {"enabled": True, "port": 0},
                 "lmstudio": {"enabled": True, "port": 0}},
    )
    running = await start_service(config)
    listeners = running.service.listeners
    ports = {name: f"http://127.0.0.1:{listeners.bound_port(name)}"
             for name in ("ollama", "lmstudio")}
    ports["_service"] = running  # type: ignore[assignment]
    return ports


def assert_shape(shape: str, body: Any) -> None:
    assert isinstance(body, dict) and "error" in body, body
    if shape == "ollama":
        assert isinstance(body["error"], str) and body["error"]
    else:
        assert isinstance(body["error"], dict) and body["error"].get("message")


@pytest.mark.parametrize(("api", "method", "path", "shape"), ROUTES,
                         ids=[f"{a}{p}" for a, _, p, _ in ROUTES])
async def test_bad_bodies_are_refused_in_the_api_format(ports, api, method, path,
                                                        shape) -> None:
    async with aiohttp.ClientSession() as http:
        for label, raw, statuses in BAD_BODIES:
            async with http.request(method, ports[api] + path, data=raw,
                                    headers={"Content-Type": "application/json"}) as resp:
                text = await resp.text()
                assert resp.status in statuses, (label, resp.status, text)
                assert_shape(shape, json.loads(text))
                assert "Traceback" not in text
    manager = ports["_service"].service.manager  # type: ignore[attr-defined]
    assert [i.state for i in manager.snapshot()] == ["stopped"]  # nothing was started
