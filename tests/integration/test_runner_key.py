"""Each llama-server child demands a key only the app knows; the app sends it on every call.

The fake llama-server enforces the key like the real one, so a call site that forgets it
fails here; tests/e2e/test_runner_key_real.py repeats the essentials on the real server.
"""

from __future__ import annotations

import base64
import json
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from llamarunner.runner.model_runner import API_KEY_ENV, ModelRunner


def both_proxies() -> dict[str, Any]:
    return {"ollama": {"enabled": True, "host": "127.0.0.1", "port": 0},
            "lmstudio": {"enabled": True, "host": "127.0.0.1", "port": 0}}


def tiny_png() -> str:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
           + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))
    return base64.b64encode(png).decode()


def secret_of(runner: ModelRunner) -> str:
    scheme, _, secret = runner.auth_headers["Authorization"].partition(" ")
    assert scheme == "Bearer" and len(secret) >= 32
    return secret


def raw_cmdline(pid: int) -> bytes:
    """The argv the kernel shows every local user (Linux), NUL-separated."""
    return Path(f"/proc/{pid}/cmdline").read_bytes()


@pytest.fixture
async def running(write_config, start_service, fake_bin, tiny_model):  # type: ignore[no-untyped-def]
    # A GGUF file as the model (the fake ignores it) so that the projector makes it a
    # vision model: raw /api/generate with images then asks the child's /props.
    args = {"mmproj": str(tiny_model), "fault-echo": True}
    # Embedding mode serves nothing but embeddings, as in llama-server: a second model.
    config = write_config({"m": {"path": str(tiny_model), "args": args},
                           "e": {"path": str(tiny_model), "args": {"embeddings": True}}},
                          runtime=fake_bin, proxies=both_proxies())
    return await start_service(config)


async def fetch(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
                ) -> tuple[int, bytes]:
    async with http.request(method, url, **kwargs) as resp:
        return resp.status, await resp.read()


async def test_every_call_the_app_makes_carries_the_key(running) -> None:
    service = running.service
    ollama = f"http://127.0.0.1:{service.listeners.bound_port('ollama')}"
    lmstudio = running.base_url
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    calls: list[tuple[str, dict[str, Any]]] = [
        (lmstudio + "/v1/chat/completions", chat),
        (lmstudio + "/v1/chat/completions", {**chat, "stream": True}),
        (lmstudio + "/v1/completions", {"model": "m", "prompt": "hi"}),
        (lmstudio + "/v1/embeddings", {"model": "e", "input": "hi"}),
        (lmstudio + "/api/v0/chat/completions", chat),
        (lmstudio + "/api/v0/completions", {"model": "m", "prompt": "hi", "stream": True}),
        (ollama + "/api/chat", chat),
        (ollama + "/api/chat", {**chat, "stream": False}),
        (ollama + "/api/generate", {"model": "m", "prompt": "hi", "raw": True,
                                    "stream": False}),
        (ollama + "/api/embed", {"model": "e", "input": "hi"}),
        (ollama + "/v1/chat/completions", chat),
    ]
    async with aiohttp.ClientSession(trust_env=False) as http:
        for url, body in calls:
            status, data = await fetch(http, "POST", url, json=body)
            assert status == 200, (url, body, data)
            assert b"Invalid API Key" not in data, (url, data)
        # Raw prompts with images use the media marker the child reports in /props.
        status, data = await fetch(http, "POST", ollama + "/api/generate", json={
            "model": "m", "prompt": "what?", "raw": True, "images": [tiny_png()],
            "stream": False})
        assert status == 200, data
        assert "<__media_fake__>" in json.loads(data)["response"]


async def test_the_child_refuses_callers_without_the_key(running) -> None:
    service = running.service
    async with aiohttp.ClientSession(trust_env=False) as http:
        status, _ = await fetch(http, "POST", running.base_url + "/v1/chat/completions",
                                json={"model": "m", "messages": []})
        runner = service.manager.runner("m")
        assert runner is not None and runner.state.value == "ready"
        child = runner.base_url
        assert (await fetch(http, "GET", child + "/health"))[0] == 200
        for method, path in (("GET", "/v1/models"), ("GET", "/props"), ("GET", "/slots"),
                             ("POST", "/v1/chat/completions"), ("POST", "/completion")):
            status, body = await fetch(http, method, child + path, json={"prompt": "x"})
            assert status == 401, (path, body)
        wrong = {"Authorization": "Bearer " + "x" * 43}
        assert (await fetch(http, "GET", child + "/v1/models", headers=wrong))[0] == 401
        status, _ = await fetch(http, "GET", child + "/v1/models", headers=runner.auth_headers)
        assert status == 200


async def test_the_key_is_fresh_per_start_and_never_in_argv_logs_or_registry(
    running, tmp_path: Path
) -> None:
    service = running.service
    async with aiohttp.ClientSession(trust_env=False) as http:
        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        assert (await fetch(http, "POST", running.base_url + "/v1/chat/completions",
                            json=chat))[0] == 200
        runner = service.manager.runner("m")
        assert runner is not None and runner.pid is not None
        first = secret_of(runner)
        proc = psutil.Process(runner.pid)
        assert not any(first in part for part in proc.cmdline())
        if sys.platform.startswith("linux"):
            assert first.encode() not in raw_cmdline(runner.pid)
            assert proc.environ().get(API_KEY_ENV) == first  # handed over privately
        # The registry of children (stale-child cleanup) keeps argv only.
        registry = tmp_path / "data" / "runners.json"
        entries = json.loads(registry.read_text())
        assert [e["cmdline"] for e in entries if e["pid"] == runner.pid] == [proc.cmdline()]
        assert first not in registry.read_text()

        assert await service.manager.unload("m") is not None
        assert (await fetch(http, "POST", running.base_url + "/v1/chat/completions",
                            json=chat))[0] == 200
        second = secret_of(runner)
        assert second != first
    logs = list((tmp_path / "runners").glob("*.log"))
    assert logs
    for log_file in logs:
        text = log_file.read_text()
        assert first not in text and second not in text
