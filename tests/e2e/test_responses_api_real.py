"""The OpenAI Responses API, chat templates, LM Studio's `ttl` and Ollama-style model names,
on both ports, with the real `openai` client and llama-server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Any

import aiohttp
import openai
import pytest
from tests.support.both_listeners import BOTH_PORTS, HELLO, both_ports, models, url_of


@pytest.fixture
def running(two_api_service):  # type: ignore[no-untyped-def]
    return two_api_service


def client_for(running, api: str = "lmstudio") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url_of(running, api) + "/v1", api_key="unused",
                              max_retries=0)


def states(running) -> dict[str, str]:
    return {info.name: info.state for info in running.service.manager.snapshot()}


async def wait_for_state(running, name: str, state: str) -> None:
    runner = running.service.manager.runner(name)
    for _ in range(200):
        if runner.state.value == state:
            return
        await asyncio.sleep(0.05)
    assert runner.state.value == state


# --- /v1/responses -----------------------------------------------------------------------


@BOTH_PORTS
async def test_responses_with_the_openai_sdk(running, api: str) -> None:
    reply = await client_for(running, api).responses.create(
        model="tiny", input="hello", max_output_tokens=8)
    assert reply.object == "response"
    assert reply.status == "completed"
    assert reply.output_text
    assert reply.usage is not None and reply.usage.output_tokens > 0
    assert states(running) == {"tiny": "ready", "plain": "stopped"}


@BOTH_PORTS
async def test_streamed_responses_with_the_openai_sdk(running, api: str) -> None:
    stream = await client_for(running, api).responses.create(
        model="tiny", input=[{"role": "user", "content": "hello"}], max_output_tokens=16,
        stream=True)
    events = [event async for event in stream]
    kinds = [event.type for event in events]
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert len(deltas) > 3
    assert "".join(deltas) == events[-1].response.output_text  # type: ignore[union-attr]


async def test_raw_responses_stream_ends_without_an_error_event(running) -> None:
    body = {"model": "tiny", "input": "hello", "max_output_tokens": 8, "stream": True}
    async with aiohttp.ClientSession() as http, http.post(
            url_of(running, "lmstudio") + "/v1/responses", json=body) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/event-stream"
        raw = (await resp.read()).decode()
    names = [line[len("event: "):] for line in raw.splitlines() if line.startswith("event: ")]
    assert names[-1] == "response.completed"
    assert '"error"' not in raw.rsplit("event: response.completed", 1)[1]


async def test_a_sensible_answer_from_smollm2(
    write_config, start_service, llama_server_bin, smollm2_model
) -> None:
    config = write_config(
        {"smollm2-135m-instruct": {"path": str(smollm2_model),
                                   "args": {"ctx-size": 2048, "threads": 2}}},
        runtime=llama_server_bin, proxies=both_ports())
    running = await start_service(config)
    reply = await client_for(running, "lmstudio").responses.create(
        model="smollm2-135m-instruct", input="Name three colors.", max_output_tokens=48,
        temperature=0)
    text = reply.output_text.lower()
    colors = ("red", "blue", "green", "yellow", "orange", "purple", "black", "white", "pink")
    assert any(color in text for color in colors), text


async def test_a_runner_dying_mid_stream_ends_it_with_an_error_the_sdk_raises(
    write_config, start_service, llama_server_bin, tiny_model, plain_model
) -> None:
    config = write_config(models(tiny_model, plain_model, **{"ctx-size": 8192}),
                          runtime=llama_server_bin, proxies=both_ports())
    running = await start_service(config)
    stream = await client_for(running, "ollama").responses.create(
        model="tiny", input="hello", max_output_tokens=8000, stream=True)
    seen: list[str] = []
    with pytest.raises(openai.APIError) as broken:
        async for event in stream:
            seen.append(event.type)
            if len(seen) == 1:
                pid = running.service.manager.runner("tiny").pid
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
    assert "stopped in the middle of the response" in broken.value.message
    assert "response.completed" not in seen


# --- chat templates: chat routes refuse, completion routes serve -----------------------


@BOTH_PORTS
async def test_chat_routes_refuse_a_model_without_a_chat_template(running, api: str) -> None:
    client = client_for(running, api)
    with pytest.raises(openai.BadRequestError) as chat:
        await client.chat.completions.create(model="plain", messages=HELLO, max_tokens=4)
    assert chat.value.code == "chat_not_supported"
    assert "'plain' cannot chat" in chat.value.message
    with pytest.raises(openai.BadRequestError) as responses:
        await client.responses.create(model="plain", input="hello", max_output_tokens=4)
    assert responses.value.code == "chat_not_supported"
    assert states(running)["plain"] == "stopped"  # refused before loading anything
    # Plain text needs no template: text completions serve the same model.
    completion = await client.completions.create(model="plain", prompt="the", max_tokens=4)
    assert completion.choices[0].text is not None
    assert states(running)["plain"] == "ready"


async def test_the_refusal_uses_the_name_the_client_sent(running) -> None:
    async with aiohttp.ClientSession() as http, http.post(
            url_of(running, "ollama") + "/v1/chat/completions",
            json={"model": "PLAIN:latest", "messages": HELLO}) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert "'PLAIN:latest' cannot chat" in error["message"]


# --- ttl --------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", {"messages": HELLO, "max_tokens": 2}),
    ("/v1/completions", {"prompt": "the", "max_tokens": 2}),
    ("/v1/responses", {"input": "hello", "max_output_tokens": 2}),
    ("/v1/embeddings", {"input": "hello"}),
])
async def test_ttl_zero_unloads_the_model_right_after_the_request(
    write_config, start_service, llama_server_bin, tiny_model, plain_model, path: str,
    body: dict[str, Any],
) -> None:
    # An hour of configured TTL; the request's own ttl wins.
    extra = {"embedding": True, "pooling": "mean"} if path == "/v1/embeddings" else {}
    config = write_config(models(tiny_model, plain_model, **extra), runtime=llama_server_bin,
                          proxies=both_ports(), scheduler={"default_ttl": "1h"})
    running = await start_service(config)
    async with aiohttp.ClientSession() as http:
        async with http.post(url_of(running, "lmstudio") + path,
                             json={"model": "tiny", **body}) as resp:
            assert resp.status == 200, await resp.text()
        await wait_for_state(running, "tiny", "ready")
        async with http.post(url_of(running, "lmstudio") + path,
                             json={"model": "tiny", "ttl": 0, **body}) as resp:
            assert resp.status == 200, await resp.text()
    await wait_for_state(running, "tiny", "stopped")


async def test_ttl_replaces_the_configured_ttl_for_the_next_idle_period(running) -> None:
    client = client_for(running, "ollama")
    await client.responses.create(model="tiny", input="hi", max_output_tokens=2,
                                  extra_body={"ttl": 600})
    runner = running.service.manager.runner("tiny")
    assert runner.keep_alive == 600
    await client.completions.create(model="tiny", prompt="a", max_tokens=2)
    assert runner.keep_alive is None  # a request without ttl: the configured one again


@BOTH_PORTS
@pytest.mark.parametrize("ttl", [-1, "300", True, [5]])
async def test_a_bad_ttl_is_refused_before_loading(running, api: str, ttl: Any) -> None:
    client = client_for(running, api)
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2,
                                             extra_body={"ttl": ttl})
    assert refused.value.param == "ttl"
    assert "'ttl' must be a number of seconds" in refused.value.message
    with pytest.raises(openai.BadRequestError):
        await client.responses.create(model="tiny", input="hi", extra_body={"ttl": ttl})
    assert states(running)["tiny"] == "stopped"


# --- /v1/models: Ollama-style names on the Ollama port ----------------------------------


async def test_models_on_the_ollama_port_carry_a_tag_like_ollamas(running) -> None:
    ollama = client_for(running, "ollama")
    listed = (await ollama.models.list()).data
    assert sorted(m.id for m in listed) == ["plain:latest", "tiny:latest"]
    assert {m.owned_by for m in listed} == {"library"}
    one = await ollama.models.retrieve("tiny:latest")
    assert (one.id, one.owned_by, one.object) == ("tiny:latest", "library", "model")
    assert (await ollama.models.retrieve("tiny")).id == "tiny:latest"
    # The listed names work as they are.
    reply = await ollama.chat.completions.create(model="tiny:latest", messages=HELLO,
                                                 max_tokens=2)
    assert reply.choices


async def test_models_on_the_lmstudio_port_keep_bare_names(running) -> None:
    lmstudio = client_for(running, "lmstudio")
    listed = (await lmstudio.models.list()).data
    assert sorted(m.id for m in listed) == ["plain", "tiny"]
    assert {m.owned_by for m in listed} == {"llamarunner"}
    one = await lmstudio.models.retrieve("tiny:latest")
    assert (one.id, one.owned_by) == ("tiny", "llamarunner")
    with pytest.raises(openai.NotFoundError):
        await lmstudio.models.retrieve("no-such-model:latest")


async def test_raw_model_list_on_the_ollama_port(running) -> None:
    async with aiohttp.ClientSession() as http, http.get(
            url_of(running, "ollama") + "/v1/models") as resp:
        assert resp.status == 200
        data = json.loads(await resp.read())
    assert data["object"] == "list"
    assert [entry["id"] for entry in data["data"]] == ["plain:latest", "tiny:latest"]
    assert all(set(entry) == {"id", "object", "created", "owned_by"} for entry in data["data"])
