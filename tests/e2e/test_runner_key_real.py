"""The real llama-server children demand their key; the app's own calls carry it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import psutil
import pytest

from llamarunner.runner.model_runner import API_KEY_ENV
from llamarunner.runner.registry import ChildRegistry

MODEL_ARGS = {"ctx-size": 256, "threads": 1}


def raw_cmdline(pid: int) -> bytes:
    """The argv the kernel shows every local user (Linux), NUL-separated."""
    return Path(f"/proc/{pid}/cmdline").read_bytes()


@pytest.fixture
async def running(write_config, start_service, llama_server_bin, tiny_model):  # type: ignore[no-untyped-def]
    config = write_config({"tiny": {"path": str(tiny_model), "args": MODEL_ARGS}},
                          runtime=llama_server_bin,
                          proxies={"ollama": {"enabled": True, "host": "127.0.0.1", "port": 0},
                                   "lmstudio": {"enabled": True, "host": "127.0.0.1",
                                                "port": 0}})
    return await start_service(config)


async def status_of(http: aiohttp.ClientSession, method: str, url: str, **kwargs: object
                    ) -> int:
    async with http.request(method, url, **kwargs) as resp:  # type: ignore[arg-type]
        await resp.read()
        return resp.status


async def test_real_child_answers_401_without_its_key_and_the_app_works(running) -> None:
    service = running.service
    ollama = f"http://127.0.0.1:{service.listeners.bound_port('ollama')}"
    chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 2}
    async with aiohttp.ClientSession(trust_env=False) as http:
        # Through the app: both APIs, streamed and not, and the native endpoint.
        assert await status_of(http, "POST", running.base_url + "/v1/chat/completions",
                               json=chat) == 200
        assert await status_of(http, "POST", running.base_url + "/v1/chat/completions",
                               json={**chat, "stream": True}) == 200
        assert await status_of(http, "POST", ollama + "/api/chat",
                               json={**chat, "options": {"num_predict": 2}}) == 200
        assert await status_of(http, "POST", ollama + "/api/generate", json={
            "model": "tiny", "prompt": "hi", "raw": True, "stream": False,
            "options": {"num_predict": 2}}) == 200
        runner = service.manager.runner("tiny")
        assert runner is not None and runner.state.value == "ready"
        child = runner.base_url
        # Straight to the child's port: only /health is open.
        assert await status_of(http, "GET", child + "/health") == 200
        for method, path in (("GET", "/v1/models"), ("GET", "/props"), ("GET", "/slots"),
                             ("POST", "/v1/chat/completions"), ("POST", "/completion"),
                             ("POST", "/tokenize")):
            assert await status_of(http, method, child + path, json=chat) == 401, path
        assert await status_of(http, "GET", child + "/v1/models",
                               headers={"Authorization": "Bearer wrong"}) == 401
        assert await status_of(http, "GET", child + "/v1/models",
                               headers=runner.auth_headers) == 200


async def test_real_child_keeps_the_key_out_of_argv_log_and_registry(
    running, tmp_path: Path
) -> None:
    service = running.service
    async with aiohttp.ClientSession(trust_env=False) as http:
        assert await status_of(http, "POST", running.base_url + "/v1/completions",
                               json={"model": "tiny", "prompt": "hi", "max_tokens": 2}) == 200
    runner = service.manager.runner("tiny")
    assert runner is not None and runner.pid is not None
    secret = runner.auth_headers["Authorization"].removeprefix("Bearer ")
    proc = psutil.Process(runner.pid)
    assert not any(secret in part for part in proc.cmdline())
    if sys.platform.startswith("linux"):
        assert secret.encode() not in raw_cmdline(runner.pid)
        assert proc.environ().get(API_KEY_ENV) == secret
    log_text = (tmp_path / "runners" / "tiny.log").read_text()
    assert "model loaded" in log_text and secret not in log_text
    # Stale-child cleanup still recognises the child by pid, start time and argv: with
    # its owner marked dead (a crashed app), the next start's cleanup kills it.
    registry_file = tmp_path / "data" / "runners.json"
    assert secret not in registry_file.read_text()
    [entry] = [e for e in json.loads(registry_file.read_text()) if e["pid"] == runner.pid]
    assert entry["cmdline"] == proc.cmdline()
    registry_file.write_text(json.dumps([{**entry, "owner_pid": _dead_pid()}]))
    assert ChildRegistry(registry_file).clean_stale() == [runner.pid]
    for _ in range(100):
        if runner.state.value == "failed":
            break
        await asyncio.sleep(0.02)
    assert runner.state.value == "failed"


def _dead_pid() -> int:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid
