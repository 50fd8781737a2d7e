"""Anthropic's Messages API on both ports, with the real `anthropic` client and llama-server."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import aiohttp
import anthropic
import pytest
from tests.support.both_listeners import BOTH_PORTS, HELLO, MODEL_ARGS, both_ports, models, url_of

KEY = "anthropic-test-key-0123456789"


@pytest.fixture
def running(two_api_service):  # type: ignore[no-untyped-def]
    return two_api_service


def client_for(running, api: str = "lmstudio", key: str = "unused") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url_of(running, api), api_key=key, max_retries=0)


def states(running) -> dict[str, str]:
    return {info.name: info.state for info in running.service.manager.snapshot()}


def assert_anthropic_error(body: Any, etype: str) -> str:
    assert set(body) == {"type", "error"}, body
    assert body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}, body
    assert body["error"]["type"] == etype, body
    assert body["error"]["message"]
    return str(body["error"]["message"])


def sse_events(raw: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) of each server-sent event."""
    events = []
    for block in raw.decode().split("\n\n"):
        name, data = None, []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[len("event:"):].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:"):].strip())
        if name or data:
            events.append((name, "\n".join(data)))
    return events


# --- messages ------------------------------------------------------------------------


@BOTH_PORTS
async def test_messages_with_the_anthropic_sdk(running, api: str) -> None:
    reply = await client_for(running, api).messages.create(
        model="tiny", max_tokens=8, messages=HELLO)
    assert reply.type == "message"
    assert reply.role == "assistant"
    assert reply.content and reply.content[0].type == "text"
    assert reply.content[0].text
    assert reply.stop_reason in ("end_turn", "max_tokens")
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0
    assert states(running) == {"tiny": "ready", "plain": "stopped"}


@BOTH_PORTS
async def test_streamed_messages_with_the_anthropic_sdk(running, api: str) -> None:
    client = client_for(running, api)
    async with client.messages.stream(model="tiny", max_tokens=16, messages=HELLO) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert len(pieces) > 3
    assert "".join(pieces) == final.content[0].text  # type: ignore[union-attr]
    assert final.usage.output_tokens > 0


async def test_raw_stream_is_relayed_event_by_event_and_ends_with_message_stop(running) -> None:
    body = {"model": "tiny", "max_tokens": 8, "stream": True, "messages": HELLO}
    async with aiohttp.ClientSession() as http, http.post(
            url_of(running, "lmstudio") + "/v1/messages", json=body) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/event-stream"
        raw = await resp.read()
    names = [name for name, _ in sse_events(raw)]
    assert names[0] == "message_start"
    assert "content_block_delta" in names
    assert names[-1] == "message_stop"
    assert "error" not in names


@BOTH_PORTS
async def test_count_tokens(running, api: str) -> None:
    client = client_for(running, api)
    short = await client.messages.count_tokens(model="tiny", messages=HELLO)
    long = await client.messages.count_tokens(
        model="tiny", messages=[{"role": "user", "content": "hello world " * 20}])
    assert 0 < short.input_tokens < long.input_tokens


async def test_a_sensible_answer_from_smollm2(
    write_config, start_service, llama_server_bin, smollm2_model
) -> None:
    config = write_config(
        {"smollm2-135m-instruct": {"path": str(smollm2_model),
                                   "args": {"ctx-size": 2048, "threads": 2}}},
        runtime=llama_server_bin, proxies=both_ports())
    running = await start_service(config)
    client = client_for(running, "ollama")
    reply = await client.messages.create(
        model="smollm2-135m-instruct:latest", max_tokens=48, extra_body={"temperature": 0},
        messages=[{"role": "user", "content": "Name three colors."}])
    text = reply.content[0].text.lower()  # type: ignore[union-attr]
    colors = ("red", "blue", "green", "yellow", "orange", "purple", "black", "white", "pink")
    assert any(color in text for color in colors), text
    counted = await client.messages.count_tokens(
        model="smollm2-135m-instruct", messages=[{"role": "user", "content": "Name three colors."}])
    # The prompt as the model sees it: the words plus the chat template's turn markers.
    assert 5 < counted.input_tokens < 100


# --- errors in Anthropic's shape -------------------------------------------------------


@BOTH_PORTS
async def test_unknown_model_is_not_found_error(running, api: str) -> None:
    client = client_for(running, api)
    with pytest.raises(anthropic.NotFoundError) as missing:
        await client.messages.create(model="no-such-model", max_tokens=8, messages=HELLO)
    message = assert_anthropic_error(missing.value.body, "not_found_error")
    assert "no-such-model" in message
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.count_tokens(model="no-such-model", messages=HELLO)
    assert set(states(running).values()) == {"stopped"}


@BOTH_PORTS
async def test_a_model_without_a_chat_template_is_refused_before_loading(running, api: str
                                                                         ) -> None:
    client = client_for(running, api)
    with pytest.raises(anthropic.BadRequestError) as refused:
        await client.messages.create(model="plain", max_tokens=8, messages=HELLO)
    message = assert_anthropic_error(refused.value.body, "invalid_request_error")
    assert "'plain' cannot chat" in message and "chat_template" in message
    with pytest.raises(anthropic.BadRequestError):
        await client.messages.count_tokens(model="plain", messages=HELLO)
    async with client.messages.stream(model="tiny", max_tokens=2, messages=HELLO) as stream:
        await stream.get_final_message()  # the refusal left the other model working
    assert states(running) == {"tiny": "ready", "plain": "stopped"}


@BOTH_PORTS
@pytest.mark.parametrize(("path", "body", "etype", "status"), [
    ("/v1/messages", b"{not json", "invalid_request_error", 400),
    ("/v1/messages", b"", "invalid_request_error", 400),
    ("/v1/messages", b"[1, 2]", "invalid_request_error", 400),
    ("/v1/messages", json.dumps({"max_tokens": 8, "messages": HELLO}).encode(),
     "invalid_request_error", 400),
    ("/v1/messages/count_tokens", json.dumps({"model": 7, "messages": HELLO}).encode(),
     "invalid_request_error", 400),
    ("/v1/messages/no-such-route", b"{}", "not_found_error", 404),
])
async def test_malformed_requests(running, api: str, path: str, body: bytes, etype: str,
                                  status: int) -> None:
    async with aiohttp.ClientSession() as http, http.post(
            url_of(running, api) + path, data=body,
            headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == status
        assert_anthropic_error(await resp.json(), etype)


@BOTH_PORTS
async def test_get_on_messages_is_405_in_anthropic_shape(running, api: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(
            url_of(running, api) + "/v1/messages") as resp:
        assert resp.status == 405
        assert_anthropic_error(await resp.json(), "invalid_request_error")


@BOTH_PORTS
async def test_x_api_key_is_checked_and_refusals_are_authentication_errors(
    write_config, start_service, llama_server_bin, tiny_model, plain_model, api: str
) -> None:
    config = write_config(models(tiny_model, plain_model), runtime=llama_server_bin,
                          proxies=both_ports(), security={"api_key": KEY})
    running = await start_service(config)
    reply = await client_for(running, api, KEY).messages.create(
        model="tiny", max_tokens=4, messages=HELLO)
    assert reply.content
    with pytest.raises(anthropic.AuthenticationError) as refused:
        await client_for(running, api, "wrong-key-0123456789").messages.create(
            model="tiny", max_tokens=4, messages=HELLO)
    assert "incorrect API key" in assert_anthropic_error(refused.value.body,
                                                         "authentication_error")
    url = url_of(running, api)
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/v1/messages/count_tokens",
                             json={"model": "tiny", "messages": HELLO}) as resp:
            assert resp.status == 401
            message = assert_anthropic_error(await resp.json(), "authentication_error")
            assert "x-api-key" in message and "Authorization: Bearer" in message
        # The same key in Anthropic's header opens every other route of the port too.
        async with http.get(url + "/v1/models", headers={"x-api-key": KEY}) as resp:
            assert resp.status == 200
        async with http.get(url + "/v1/models", headers={"x-api-key": "wrong"}) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "invalid_api_key"  # OpenAI's
        async with http.get(url + "/v1/models",
                            headers={"Authorization": f"Bearer {KEY}"}) as resp:
            assert resp.status == 200
        own = "/api/tags" if api == "ollama" else "/api/v0/models"
        async with http.get(url + own, headers={"X-API-KEY": KEY}) as resp:
            assert resp.status == 200


@BOTH_PORTS
async def test_a_body_over_the_limit_is_request_too_large(
    write_config, start_service, llama_server_bin, tiny_model, plain_model, api: str
) -> None:
    config = write_config(models(tiny_model, plain_model), runtime=llama_server_bin,
                          proxies=both_ports(), security={"max_body_bytes": 4096})
    running = await start_service(config)
    big = [{"role": "user", "content": "hello " * 2000}]
    with pytest.raises(anthropic.RequestTooLargeError) as refused:
        await client_for(running, api).messages.create(model="tiny", max_tokens=4,
                                                       messages=big)
    assert "security.max_body_bytes" in assert_anthropic_error(refused.value.body,
                                                               "request_too_large")
    assert states(running)["tiny"] == "stopped"


async def test_a_full_queue_is_rate_limit_error_with_retry_after(
    write_config, start_service, llama_server_bin, tiny_model, plain_model
) -> None:
    # With no room in the queue, a request for a model that is not loaded is refused.
    config = write_config(models(tiny_model, plain_model), runtime=llama_server_bin,
                          proxies=both_ports(), scheduler={"max_queue": 0})
    running = await start_service(config)
    async with aiohttp.ClientSession() as http, http.post(
            url_of(running, "ollama") + "/v1/messages",
            json={"model": "tiny", "max_tokens": 4, "messages": HELLO}) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "1"
        assert_anthropic_error(await resp.json(), "rate_limit_error")


async def test_a_runner_that_cannot_start_is_api_error(
    write_config, start_service, llama_server_bin, tmp_path
) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)  # a header that promises what is not there
    config = write_config({"broken": {"path": str(broken), "args": MODEL_ARGS}},
                          runtime=llama_server_bin, proxies=both_ports())
    running = await start_service(config)
    with pytest.raises(anthropic.InternalServerError) as failed:
        await client_for(running, "lmstudio").messages.create(
            model="broken", max_tokens=4, messages=HELLO)
    assert failed.value.status_code == 502
    message = assert_anthropic_error(failed.value.body, "api_error")
    assert "llama-server for model 'broken' failed" in message


async def test_a_runner_dying_mid_stream_ends_it_with_an_anthropic_error_event(
    write_config, start_service, llama_server_bin, tiny_model, plain_model
) -> None:
    config = write_config(models(tiny_model, plain_model, **{"ctx-size": 8192}),
                          runtime=llama_server_bin, proxies=both_ports())
    running = await start_service(config)
    body = {"model": "tiny", "max_tokens": 8000, "stream": True, "messages": HELLO}
    async with aiohttp.ClientSession() as http, http.post(
            url_of(running, "ollama") + "/v1/messages", json=body) as resp:
        assert resp.status == 200
        first = await resp.content.readline()  # the stream has begun
        pid = running.service.manager.runner("tiny").pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        raw = first + await resp.read()
    events = sse_events(raw)
    assert events[0][0] == "message_start"
    name, data = events[-1]
    assert name == "error", events[-3:]
    message = assert_anthropic_error(json.loads(data), "api_error")
    assert "stopped in the middle of the response" in message
    assert all(name != "message_stop" for name, _ in events)
