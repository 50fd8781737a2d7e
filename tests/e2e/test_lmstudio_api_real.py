"""LM Studio's REST API (/api/v0, /api/v1) on a real llama-server, raw and via the openai SDK."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import openai
import psutil
import pytest

from llamarunner.proxy.ollama.stream import DONE, parse_sse_lines

ARGS = {"ctx-size": 512, "threads": 1, "jinja": True}
LM_FIELDS = {"stats", "model_info", "runtime"}
STOP_REASONS = {"eosFound", "maxPredictedTokensReached", "contextLengthReached",
                "stopStringFound", "toolCalls"}


@pytest.fixture
async def running(write_config, start_service, llama_server_bin, tiny_model, tiny_model_b):
    config = write_config(
        {
            "tiny": {"path": str(tiny_model), "args": ARGS},
            "embedder": {"path": str(tiny_model_b),
                         "args": {**ARGS, "embedding": True, "pooling": "mean"}},
        },
        runtime=llama_server_bin,
    )
    return await start_service(config)


def sdk(running) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=running.base_url + "/api/v0", api_key="lm-studio",
                              max_retries=0)


async def call(running, method: str, path: str, body: Any = None, *,
               data: bytes | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.request(
        method, running.base_url + path, json=body, data=data
    ) as resp:
        return resp.status, await resp.json(content_type=None)


async def stream_events(running, path: str, body: dict[str, Any]) -> list[bytes]:
    async with aiohttp.ClientSession() as http, http.post(
        running.base_url + path, json={**body, "stream": True}
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        raw = await resp.read()
    payloads, rest = parse_sse_lines(raw, final=True)
    assert rest == b""
    return payloads


def check_lm_fields(body: dict[str, Any], *, context: int = 512) -> None:
    stats = body["stats"]
    assert set(stats) == {"tokens_per_second", "time_to_first_token", "generation_time",
                          "stop_reason"}
    assert stats["tokens_per_second"] > 0
    assert 0 < stats["time_to_first_token"] <= stats["generation_time"]
    assert stats["stop_reason"] in STOP_REASONS
    assert body["model_info"] == {"arch": "llama", "quant": "F32", "format": "gguf",
                                  "context_length": context}
    runtime = body["runtime"]
    assert runtime["name"].startswith("llama.cpp-") and runtime["version"]
    assert runtime["supported_formats"] == ["gguf"]


async def v0_entries(running) -> dict[str, dict[str, Any]]:
    status, body = await call(running, "GET", "/api/v0/models")
    assert status == 200 and body["object"] == "list"
    return {entry["id"]: entry for entry in body["data"]}


# --- /api/v0/models -------------------------------------------------------------------------


async def test_v0_models_describe_every_model(running) -> None:
    entries = await v0_entries(running)
    assert sorted(entries) == ["embedder", "tiny"]
    assert entries["tiny"] == {
        "id": "tiny", "object": "model", "type": "llm", "publisher": "local", "arch": "llama",
        "compatibility_type": "gguf", "quantization": "F32", "state": "not-loaded",
        "max_context_length": 256, "capabilities": ["tool_use"],
    }
    assert entries["embedder"]["type"] == "embeddings"
    assert entries["embedder"]["capabilities"] == []


async def test_v0_model_by_id_and_unknown_id(running) -> None:
    status, entry = await call(running, "GET", "/api/v0/models/TINY")  # any case, like /v1
    assert status == 200 and entry["id"] == "tiny" and entry["state"] == "not-loaded"
    status, body = await call(running, "GET", "/api/v0/models/nope")
    assert status == 404
    assert body == {"error": {"message": "model 'nope' not found",
                              "type": "invalid_request_error", "param": "model",
                              "code": "model_not_found"}}


# --- /api/v0 completions --------------------------------------------------------------------


async def test_v0_chat_with_the_sdk_loads_the_model_and_reports_stats(running) -> None:
    assert (await v0_entries(running))["tiny"]["state"] == "not-loaded"
    reply = await sdk(running).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=8)
    assert reply.choices[0].message.role == "assistant"
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    extra = reply.model_extra or {}
    check_lm_fields(extra)
    if reply.choices[0].finish_reason == "length":
        assert extra["stats"]["stop_reason"] == "maxPredictedTokensReached"
    loaded = (await v0_entries(running))["tiny"]
    assert loaded["state"] == "loaded" and loaded["loaded_context_length"] == 512


async def test_v0_chat_streams_with_the_sdk(running) -> None:
    stream = await sdk(running).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=8,
        stream=True)
    chunks = [chunk async for chunk in stream]
    assert len(chunks) > 3
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    annotated = [c for c in chunks if set(c.model_extra or {}) >= LM_FIELDS]
    assert annotated == [chunks[-1]]
    check_lm_fields(chunks[-1].model_extra or {})


async def test_v0_raw_stream_annotates_only_the_last_event(running) -> None:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 6, "stream_options": {"include_usage": True}}
    payloads = await stream_events(running, "/api/v0/chat/completions", body)
    assert payloads[-1] == DONE
    events = [json.loads(p) for p in payloads[:-1]]
    assert all(not LM_FIELDS & set(e) for e in events[:-1])
    last = events[-1]
    assert last["choices"] == [] and last["usage"]["completion_tokens"] > 0
    check_lm_fields(last)


async def test_v0_text_completions_stream_and_not(running) -> None:
    reply = await sdk(running).completions.create(model="tiny", prompt="the", max_tokens=4)
    assert reply.choices[0].text is not None
    check_lm_fields(reply.model_extra or {})
    payloads = await stream_events(running, "/api/v0/completions",
                                   {"model": "tiny", "prompt": "the", "max_tokens": 4})
    last = json.loads(payloads[-2])
    assert last["object"] == "text_completion"
    check_lm_fields(last)
    assert last["stats"]["stop_reason"] == "maxPredictedTokensReached"


async def test_v0_embeddings(running) -> None:
    result = await sdk(running).embeddings.create(model="embedder", input=["hello", "the"])
    assert len(result.data) == 2 and len(result.data[0].embedding) == 64
    assert (await v0_entries(running))["embedder"]["state"] == "loaded"
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk(running).embeddings.create(model="tiny", input="hello")
    assert "does not serve embeddings" in str(refused.value)


async def test_v0_errors_keep_the_openai_shape(running) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await sdk(running).chat.completions.create(
            model="nope", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.code == "model_not_found"
    status, body = await call(running, "POST", "/api/v0/chat/completions", data=b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    status, body = await call(running, "POST", "/api/v0/completions", {"prompt": "x"})
    assert status == 400 and body["error"]["param"] == "model"
    assert all(i.state == "stopped" for i in running.service.manager.snapshot())


# --- /api/v1 --------------------------------------------------------------------------------


async def v1_entries(running) -> dict[str, dict[str, Any]]:
    status, body = await call(running, "GET", "/api/v1/models")
    assert status == 200
    return {entry["key"]: entry for entry in body["models"]}


async def test_v1_models_list(running, tiny_model) -> None:
    entries = await v1_entries(running)
    tiny = entries["tiny"]
    assert tiny["type"] == "llm" and tiny["format"] == "gguf"
    assert tiny["display_name"] == "tiny" and tiny["architecture"] == "llama"
    assert tiny["quantization"] == {"name": "F32", "bits_per_weight": 32}
    assert tiny["size_bytes"] == tiny_model.stat().st_size
    assert tiny["loaded_instances"] == [] and tiny["max_context_length"] == 256
    assert tiny["capabilities"] == {"vision": False, "trained_for_tool_use": True}
    assert entries["embedder"]["type"] == "embedding"
    assert "capabilities" not in entries["embedder"]


async def test_v1_load_with_a_context_then_unload(running) -> None:
    status, loaded = await call(running, "POST", "/api/v1/models/load",
                                {"model": "tiny", "config": {"context_length": 1024},
                                 "echo_load_config": True})
    assert status == 200
    assert loaded["instance_id"] == "tiny"
    assert loaded["load_config"]["context_length"] == 1024
    assert loaded["load_time_seconds"] > 0
    tiny = (await v1_entries(running))["tiny"]
    assert tiny["loaded_instances"] == [{"id": "tiny", "config": {"context_length": 1024}}]
    assert (await v0_entries(running))["tiny"]["loaded_context_length"] == 1024

    # A chat afterwards keeps the loaded context (it asks for no load settings).
    reply = await sdk(running).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert (reply.model_extra or {})["model_info"]["context_length"] == 1024

    # Older clients put context_length at the top level: the model is reloaded with it.
    status, again = await call(running, "POST", "/api/v1/models/load",
                               {"model": "tiny", "context_length": 768,
                                "echo_load_config": True})
    assert status == 200 and again["load_config"]["context_length"] == 768
    pid = running.service.manager.runner("tiny").pid
    assert pid is not None and psutil.pid_exists(pid)

    status, body = await call(running, "POST", "/api/v1/models/unload",
                              {"instance_id": "tiny"})
    assert status == 200 and body == {"instance_id": "tiny"}
    assert not psutil.pid_exists(pid)
    assert (await v1_entries(running))["tiny"]["loaded_instances"] == []
    assert (await v0_entries(running))["tiny"]["state"] == "not-loaded"

    status, body = await call(running, "POST", "/api/v1/models/unload",
                              {"instance_id": "tiny"})
    assert status == 404
    assert body["error"]["type"] == "model_not_found"
    assert body["error"]["param"] == "instance_id"


async def test_v1_load_of_a_loaded_model_is_instant_and_unload_takes_a_model_key(
        running) -> None:
    status, first = await call(running, "POST", "/api/v1/models/load",
                               {"model": "tiny", "echo_load_config": True})
    assert status == 200 and first["load_config"]["context_length"] == 512
    status, second = await call(running, "POST", "/api/v1/models/load", {"model": "tiny"})
    assert status == 200 and second["load_time_seconds"] == 0
    status, body = await call(running, "POST", "/api/v1/models/unload", {"model": "tiny"})
    assert status == 200 and body == {"instance_id": "tiny"}


@pytest.mark.parametrize("path,body,status,kind,param", [
    ("/api/v1/models/load", {"model": "nope"}, 404, "model_not_found", "model"),
    ("/api/v1/models/load", {}, 400, "invalid_request", "model"),
    ("/api/v1/models/load", {"model": "tiny", "config": {"context_length": "big"}}, 400,
     "invalid_request", "context_length"),
    ("/api/v1/models/load", {"model": "tiny", "config": 5}, 400, "invalid_request", "config"),
    ("/api/v1/models/load", [1], 400, "invalid_request", None),
    ("/api/v1/models/unload", {}, 400, "invalid_request", "instance_id"),
    ("/api/v1/models/unload", {"instance_id": "nope"}, 404, "model_not_found", "instance_id"),
])
async def test_v1_errors_use_lm_studios_shape(running, path, body, status, kind,
                                              param) -> None:
    got_status, got = await call(running, "POST", path, body)
    assert got_status == status
    error = got["error"]
    assert error["type"] == kind and error["message"]
    assert error.get("param") == param
    assert all(i.state == "stopped" for i in running.service.manager.snapshot())


async def test_llama_server_errors_keep_their_status(running) -> None:
    prompt = " ".join(["hello world"] * 600)  # far beyond the 512-token context
    status, body = await call(running, "POST", "/api/v0/completions",
                              {"model": "tiny", "prompt": prompt, "max_tokens": 2})
    assert status == 400
    assert body["error"]["type"] == "exceed_context_size_error"
    assert set(body["error"]) == {"message", "type", "param", "code"}


async def test_client_disconnect_mid_stream_frees_the_slot(
    write_config, start_service, llama_server_bin, tiny_model
) -> None:
    config = write_config({"tiny": {"path": str(tiny_model),
                                    "args": {**ARGS, "ctx-size": 8192}}},
                          runtime=llama_server_bin)
    running = await start_service(config)
    body = {"model": "tiny", "prompt": "the", "max_tokens": 8000, "stream": True,
            "ignore_eos": True}
    async with aiohttp.ClientSession() as http:
        resp = await http.post(running.base_url + "/api/v0/completions", json=body)
        assert resp.status == 200
        await resp.content.readline()  # the first event has arrived
        resp.close()  # the client goes away mid-stream
    runner = running.service.manager.runner("tiny")
    for _ in range(40):
        if runner.inflight == 0:
            break
        await asyncio.sleep(0.05)
    assert runner.inflight == 0
    reply = await sdk(running).completions.create(model="tiny", prompt="a", max_tokens=2)
    assert reply.choices and (reply.model_extra or {})["stats"]
