"""The OpenAI-compatible API on a real llama-server with generated tiny models."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import openai
import psutil
import pytest

from llamarunner.core.events import RunnerStateChanged

MODEL_ARGS = {"ctx-size": 512, "threads": 1, "jinja": True}


def tiny_models(tiny_model: Path, tiny_model_b: Path, **extra_b: object) -> dict[str, object]:
    return {
        "tiny": {"path": str(tiny_model), "args": MODEL_ARGS},
        "tiny-b": {"path": str(tiny_model_b), "args": {**MODEL_ARGS, **extra_b}},
    }


@pytest.fixture
async def running(write_config, start_service, llama_server_bin, tiny_model, tiny_model_b):
    config = write_config(tiny_models(tiny_model, tiny_model_b), runtime=llama_server_bin)
    return await start_service(config)


def client_for(running) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=running.base_url + "/v1", api_key="unused", max_retries=0)


async def test_models_lists_every_configured_model_loaded_or_not(running) -> None:
    client = client_for(running)
    models = await client.models.list()
    ids = sorted(m.id for m in models.data)
    assert ids == ["tiny", "tiny-b"]
    for model in models.data:
        assert model.object == "model"
        assert model.owned_by == "llamarunner"
        assert model.created > 0
    assert all(info.state == "stopped" for info in running.service.manager.snapshot())


async def test_chat_with_the_openai_sdk_starts_the_runner(running) -> None:
    client = client_for(running)
    reply = await client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=8
    )
    assert reply.choices[0].message.role == "assistant"
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    states = {i.name: i.state for i in running.service.manager.snapshot()}
    assert states == {"tiny": "ready", "tiny-b": "stopped"}


async def test_streamed_chat_arrives_in_several_chunks(running) -> None:
    client = client_for(running)
    stream = await client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=16,
        stream=True,
    )
    chunks = [chunk async for chunk in stream]
    assert len(chunks) > 3
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text


async def test_text_completions(running) -> None:
    client = client_for(running)
    reply = await client.completions.create(model="tiny", prompt="the", max_tokens=8)
    assert reply.choices[0].text is not None
    assert reply.usage is not None and reply.usage.completion_tokens > 0


async def test_raw_http_chat_relays_llama_server_json(running) -> None:
    async with aiohttp.ClientSession() as http:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4}
        async with http.post(running.base_url + "/v1/chat/completions", json=body) as resp:
            assert resp.status == 200
            data = await resp.json()
    assert data["object"] == "chat.completion"
    assert "timings" in data  # llama-server's own fields pass through untouched


async def test_embeddings_need_the_embedding_flag(
    write_config, start_service, llama_server_bin, tiny_model, tiny_model_b
) -> None:
    models = tiny_models(tiny_model, tiny_model_b, embedding=True, pooling="mean")
    running = await start_service(write_config(models, runtime=llama_server_bin))
    client = client_for(running)
    result = await client.embeddings.create(model="tiny-b", input=["hello", "the"])
    assert len(result.data) == 2
    assert len(result.data[0].embedding) == 64
    with pytest.raises(openai.BadRequestError) as refused:
        await client.embeddings.create(model="tiny", input="hello")
    assert "does not serve embeddings" in str(refused.value)


async def test_switching_models_swaps_the_runner(running) -> None:
    client = client_for(running)
    await client.completions.create(model="tiny", prompt="a", max_tokens=2)
    first_pid = running.service.manager.runner("tiny").pid
    await client.completions.create(model="tiny-b", prompt="a", max_tokens=2)
    states = {i.name: i.state for i in running.service.manager.snapshot()}
    assert states == {"tiny": "stopped", "tiny-b": "ready"}
    assert first_pid is not None and not psutil.pid_exists(first_pid)
    await client.completions.create(model="tiny", prompt="a", max_tokens=2)
    assert {i.name: i.state for i in running.service.manager.snapshot()} == {
        "tiny": "ready", "tiny-b": "stopped"}


async def test_idle_model_is_unloaded_after_its_ttl(
    write_config, start_service, llama_server_bin, tiny_model, tiny_model_b
) -> None:
    models = tiny_models(tiny_model, tiny_model_b)
    models["tiny"]["ttl"] = "1s"  # type: ignore[index]
    running = await start_service(write_config(models, runtime=llama_server_bin))
    client = client_for(running)
    await client.completions.create(model="tiny", prompt="a", max_tokens=2)
    runner = running.service.manager.runner("tiny")
    pid = runner.pid
    assert runner.state.value == "ready"
    for _ in range(60):
        await asyncio.sleep(0.1)
        if runner.state.value == "stopped":
            break
    assert runner.state.value == "stopped"
    assert pid is not None and not psutil.pid_exists(pid)


async def test_ten_concurrent_cold_requests_spawn_one_server(running) -> None:
    starts: list[str] = []
    running.service.events.subscribe(
        lambda e: starts.append(e.model)
        if isinstance(e, RunnerStateChanged) and e.state == "starting" else None
    )
    client = client_for(running)
    replies = await asyncio.gather(*[
        client.completions.create(model="tiny", prompt="a", max_tokens=2) for _ in range(10)
    ])
    assert len(replies) == 10
    assert starts == ["tiny"]


async def test_client_disconnect_mid_stream_frees_the_slot(
    write_config, start_service, llama_server_bin, tiny_model, tiny_model_b
) -> None:
    models = tiny_models(tiny_model, tiny_model_b)
    models["tiny"]["args"] = {**MODEL_ARGS, "ctx-size": 8192}  # type: ignore[index]
    running = await start_service(write_config(models, runtime=llama_server_bin))
    body = {"model": "tiny", "prompt": "the", "max_tokens": 8000, "stream": True,
            "ignore_eos": True}
    async with aiohttp.ClientSession() as http:
        resp = await http.post(running.base_url + "/v1/completions", json=body)
        assert resp.status == 200
        await resp.content.readline()  # the first event has arrived
        resp.close()  # the client goes away mid-stream
    runner = running.service.manager.runner("tiny")
    for _ in range(20):
        if runner.inflight == 0:
            break
        await asyncio.sleep(0.05)
    assert runner.inflight == 0
    # The slot is free again: a new request is answered at once.
    reply = await client_for(running).completions.create(model="tiny", prompt="a",
                                                          max_tokens=2)
    assert reply.choices


async def test_errors_use_the_openai_shape(running) -> None:
    client = client_for(running)
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert missing.value.code == "model_not_found"
    async with aiohttp.ClientSession() as http:
        async with http.post(running.base_url + "/v1/chat/completions",
                             data=b"{not json") as resp:
            assert resp.status == 400
            error = (await resp.json())["error"]
            assert set(error) == {"message", "type", "param", "code"}
        async with http.post(running.base_url + "/v1/chat/completions",
                             json={"messages": []}) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["param"] == "model"
    assert all(i.state == "stopped" for i in running.service.manager.snapshot())


async def test_missing_runtime_names_model_runtime_and_fix(
    write_config, start_service, tiny_model, tmp_path
) -> None:
    config = write_config({"tiny": {"path": str(tiny_model)}},
                          runtime=tmp_path / "nowhere" / "llama-server")
    running = await start_service(config)
    async with aiohttp.ClientSession() as http:
        body = {"model": "tiny", "prompt": "a"}
        async with http.post(running.base_url + "/v1/completions", json=body) as resp:
            assert resp.status == 503
            error = (await resp.json())["error"]
    assert "tiny" in error["message"] and "'default'" in error["message"]
    assert "llamarunner runtime install" in error["message"]
    assert json.dumps(error)  # plain JSON, no traceback


async def test_proxy_settings_in_the_environment_are_ignored(
    monkeypatch, write_config, start_service, llama_server_bin, tiny_model, tiny_model_b
) -> None:
    # A proxy that does not exist: any request routed through it would fail.
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    running = await start_service(write_config(tiny_models(tiny_model, tiny_model_b),
                                               runtime=llama_server_bin))
    async with aiohttp.ClientSession(trust_env=False) as http, http.post(
        running.base_url + "/v1/completions",
        json={"model": "tiny", "prompt": "a", "max_tokens": 2},
    ) as resp:
        assert resp.status == 200
