"""LM Studio's load answer, ttl and chat check on a real llama-server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from tests.support.tiny_gguf import write_tiny_gguf

ARGS = {"ctx-size": 512, "threads": 1, "jinja": True}
# Bounded polling for an unload that a 1-second ttl triggers; the time itself is not
# asserted, only that the state changes.
POLL_LIMIT = 60.0


@pytest.fixture
async def running(write_config, start_service, llama_server_bin, tiny_model, tiny_model_b,
                  tmp_path: Path):
    base = write_tiny_gguf(tmp_path / "base.gguf", name="base", chat_template=None)
    config = write_config(
        {
            "tiny": {"path": str(tiny_model), "args": ARGS},
            "base": {"path": str(base), "args": ARGS},
            "embedder": {"path": str(tiny_model_b),
                         "args": {**ARGS, "embedding": True, "pooling": "mean"}},
        },
        runtime=llama_server_bin,
        # Without a ttl in the request nothing unloads during a test.
        scheduler={"default_ttl": "1h"},
    )
    return await start_service(config)


async def call(running: Any, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.request(
        method, running.base_url + path, json=body
    ) as resp:
        return resp.status, await resp.json(content_type=None)


async def loaded_instances(running: Any) -> dict[str, list[dict[str, Any]]]:
    status, body = await call(running, "GET", "/api/v1/models")
    assert status == 200
    return {entry["key"]: entry["loaded_instances"] for entry in body["models"]}


async def wait_unloaded(running: Any, name: str) -> None:
    """Poll until the model has no loaded instance and its llama-server is gone."""
    deadline = asyncio.get_running_loop().time() + POLL_LIMIT
    runner = running.service.manager.runner(name)
    while (await loaded_instances(running))[name] or runner.state.value != "stopped":
        assert asyncio.get_running_loop().time() < deadline, f"{name} never unloaded"
        await asyncio.sleep(0.1)


async def test_load_answers_in_lm_studios_shape(running) -> None:
    status, body = await call(running, "POST", "/api/v1/models/load", {"model": "tiny"})
    assert status == 200
    assert set(body) == {"type", "instance_id", "load_time_seconds", "status"}
    assert body["type"] == "llm" and body["instance_id"] == "tiny"
    assert body["status"] == "loaded" and body["load_time_seconds"] > 0

    status, again = await call(running, "POST", "/api/v1/models/load",
                               {"model": "tiny", "echo_load_config": True})
    assert status == 200 and again["load_time_seconds"] == 0
    assert again["load_config"] == {"context_length": 512, "eval_batch_size": 2048}

    status, resized = await call(running, "POST", "/api/v1/models/load", {
        "model": "tiny", "context_length": 1024, "echo_load_config": True})
    assert status == 200 and resized["load_config"]["context_length"] == 1024
    assert (await loaded_instances(running))["tiny"] == [
        {"id": "tiny", "config": {"context_length": 1024}}]

    status, embedder = await call(running, "POST", "/api/v1/models/load", {
        "model": "embedder", "echo_load_config": True})
    assert status == 200 and embedder["type"] == "embedding"
    assert embedder["load_config"] == {"context_length": 512}


async def test_load_ttl_unloads_the_model_when_idle(running) -> None:
    status, body = await call(running, "POST", "/api/v1/models/load",
                              {"model": "tiny", "ttl": 1})
    assert status == 200 and body["status"] == "loaded"
    assert (await loaded_instances(running))["tiny"]
    pid = running.service.manager.runner("tiny").pid
    await wait_unloaded(running, "tiny")
    assert pid is not None and not psutil.pid_exists(pid)


@pytest.mark.parametrize("path,body,model", [
    ("/api/v0/chat/completions",
     {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}, "tiny"),
    ("/api/v0/completions", {"prompt": "the", "max_tokens": 2}, "tiny"),
    ("/api/v0/embeddings", {"input": "the cat"}, "embedder"),
])
async def test_ttl_in_a_v0_request_unloads_the_model_when_idle(running, path, body,
                                                               model) -> None:
    status, reply = await call(running, "POST", path, {**body, "model": model, "ttl": 1})
    assert status == 200, reply
    await wait_unloaded(running, model)


@pytest.mark.parametrize("path,extra", [
    ("/api/v0/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    ("/api/v0/embeddings", {"input": "x"}),
])
@pytest.mark.parametrize("ttl", [-5, "soon", True])
async def test_a_bad_ttl_is_refused_before_loading(running, path, extra, ttl) -> None:
    model = "embedder" if "embeddings" in path else "tiny"
    status, body = await call(running, "POST", path, {**extra, "model": model, "ttl": ttl})
    assert status == 400
    assert body["error"]["param"] == "ttl" and "number of seconds" in body["error"]["message"]
    assert body["error"]["type"] == "invalid_request_error"  # OpenAI's shape on /api/v0
    status, body = await call(running, "POST", "/api/v1/models/load",
                              {"model": "tiny", "ttl": ttl})
    assert status == 400
    assert body["error"]["type"] == "invalid_request" and body["error"]["param"] == "ttl"
    assert all(i.state == "stopped" for i in running.service.manager.snapshot())


async def test_v0_chat_refuses_a_model_without_a_chat_template(running) -> None:
    status, body = await call(running, "POST", "/api/v0/chat/completions", {
        "model": "base", "messages": [{"role": "user", "content": "hi"}]})
    assert status == 400
    assert body["error"]["code"] == "chat_not_supported"
    assert "cannot chat" in body["error"]["message"]
    assert all(i.state == "stopped" for i in running.service.manager.snapshot())
    status, body = await call(running, "POST", "/api/v0/completions", {
        "model": "base", "prompt": "the", "max_tokens": 2})
    assert status == 200 and body["choices"][0]["text"] is not None
