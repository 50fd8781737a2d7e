"""Named API keys, model scopes and rate limits, on every API, with the real clients."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import ollama
import openai
import pytest
from tests.support.both_listeners import MODEL_ARGS, both_ports, url_of

ALICE = "alice-key-0123456789abcdef"  # every model, no limits
BOB = "bob-key-0123456789abcdef00"  # only `tiny`
CAROL = "carol-key-0123456789abcdef"  # 6 generated tokens a minute
DAVE = "dave-key-0123456789abcdef0"  # 3 requests a minute
SINGLE = "single-key-0123456789abcdef"  # the unnamed security.api_key
KEYS = [
    {"name": "alice", "key": ALICE},
    {"name": "bob", "key": BOB, "models": ["tiny"]},
    {"name": "carol", "key": CAROL, "tokens_per_minute": 6},
    {"name": "dave", "key": DAVE, "requests_per_minute": 3},
]
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def running(write_config, start_service, llama_server_bin, tiny_model, tiny_model_b):  # type: ignore[no-untyped-def]
    config = write_config(
        {"tiny": {"path": str(tiny_model), "args": MODEL_ARGS},
         "tiny-b": {"path": str(tiny_model_b), "args": MODEL_ARGS, "alias": ["b-alias"]}},
        runtime=llama_server_bin, proxies=both_ports(),
        security={"api_key": SINGLE, "api_keys": KEYS})
    return await start_service(config)


def openai_client(running: Any, key: str, api: str = "lmstudio") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url_of(running, api) + "/v1", api_key=key,
                              max_retries=0)


async def get(url: str, key: str | None = None, header: str = "Authorization"
              ) -> tuple[int, Any, dict[str, str]]:
    headers = {}
    if key is not None:
        headers[header] = f"Bearer {key}" if header == "Authorization" else key
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None), dict(resp.headers)


async def post(url: str, body: dict[str, Any], key: str | None = None,
               header: str = "Authorization") -> tuple[int, Any, dict[str, str]]:
    headers = {}
    if key is not None:
        headers[header] = f"Bearer {key}" if header == "Authorization" else key
    async with aiohttp.ClientSession() as http, http.post(url, json=body,
                                                           headers=headers) as resp:
        return resp.status, await resp.json(content_type=None), dict(resp.headers)


# --- authentication -----------------------------------------------------------------------


async def test_every_key_works_as_bearer_and_as_x_api_key(running) -> None:
    base = url_of(running, "lmstudio")
    for key in (ALICE, BOB, CAROL, DAVE, SINGLE):
        assert (await get(base + "/v1/models", key))[0] == 200
        assert (await get(base + "/v1/models", key, header="X-Api-Key"))[0] == 200
    listed = await openai_client(running, ALICE).models.list()
    assert {m.id for m in listed.data} == {"tiny", "tiny-b"}
    reply = await anthropic.AsyncAnthropic(base_url=base, api_key=ALICE, max_retries=0
                                           ).messages.create(model="tiny", max_tokens=4,
                                                             messages=HI)  # type: ignore[arg-type]
    assert reply.content


async def test_a_wrong_or_missing_key_is_401_in_each_apis_shape(running) -> None:
    lms, oll = url_of(running, "lmstudio"), url_of(running, "ollama")
    status, body, headers = await get(lms + "/v1/models", "wrong-key-0123456789abcdef")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert headers["WWW-Authenticate"] == "Bearer"
    status, body, _ = await get(oll + "/api/tags")  # loopback, but keys are configured
    assert status == 401 and body == {"error": "unauthorized"}
    status, body, _ = await post(lms + "/v1/messages", {"model": "tiny", "max_tokens": 4,
                                                        "messages": HI}, "nope" * 5,
                                 header="X-Api-Key")
    assert status == 401 and body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        await openai_client(running, "x" * 20).models.list()
    with pytest.raises(ollama.ResponseError) as caught:
        await ollama.AsyncClient(host=oll).list()
    assert caught.value.status_code == 401
    # The health checks stay open.
    assert (await get(oll + "/api/version"))[0] == 200
    assert (await get(lms + "/"))[0] == 200


# --- scopes ---------------------------------------------------------------------------------


async def test_a_scoped_key_sees_only_its_models_everywhere(running) -> None:
    lms, oll = url_of(running, "lmstudio"), url_of(running, "ollama")
    assert [m.id for m in (await openai_client(running, BOB).models.list()).data] == ["tiny"]
    tags = await ollama.AsyncClient(host=oll, headers={"Authorization": f"Bearer {BOB}"}
                                    ).list()
    assert [m.model for m in tags.models] == ["tiny:latest"]
    assert [m["id"] for m in (await get(lms + "/api/v0/models", BOB))[1]["data"]] == ["tiny"]
    assert [m["key"] for m in (await get(lms + "/api/v1/models", BOB))[1]["models"]] == [
        "tiny"]
    # Another key sees both.
    assert len((await get(lms + "/api/v0/models", ALICE))[1]["data"]) == 2


async def test_a_scoped_key_gets_404_or_403_for_other_models(running) -> None:
    lms, oll = url_of(running, "lmstudio"), url_of(running, "ollama")
    with pytest.raises(openai.NotFoundError) as caught:
        await openai_client(running, BOB).chat.completions.create(model="tiny-b",
                                                                  messages=HI)  # type: ignore[arg-type]
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):  # by alias too
        await openai_client(running, BOB, "ollama").chat.completions.create(
            model="b-alias", messages=HI)  # type: ignore[arg-type]
    status, body, _ = await post(oll + "/api/chat", {"model": "tiny-b", "messages": HI},
                                 BOB)
    assert status == 404 and "not found" in body["error"]
    status, body, _ = await post(oll + "/api/show", {"model": "tiny-b"}, BOB)
    assert status == 404
    status, body, _ = await post(lms + "/v1/messages", {"model": "tiny-b", "max_tokens": 4,
                                                        "messages": HI}, BOB)
    assert status == 404 and body["error"]["type"] == "not_found_error"
    status, body, _ = await post(lms + "/api/v0/chat/completions",
                                 {"model": "tiny-b", "messages": HI}, BOB)
    assert status == 403 and body["error"]["code"] == "model_not_allowed"
    assert "bob" in body["error"]["message"]
    states = {info.name: info.state for info in running.service.manager.snapshot()}
    assert states["tiny-b"] == "stopped"  # nothing loaded for a refused request


# --- rate limits ----------------------------------------------------------------------------


async def test_requests_per_minute_is_429_with_retry_after_in_each_shape(running) -> None:
    lms, oll = url_of(running, "lmstudio"), url_of(running, "ollama")
    for _ in range(3):
        assert (await get(lms + "/v1/models", DAVE))[0] == 200
    status, body, headers = await get(lms + "/v1/models", DAVE)
    assert status == 429 and 1 <= int(headers["Retry-After"]) <= 60
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert body["error"]["type"] == "requests"
    assert "dave" in body["error"]["message"] and DAVE not in body["error"]["message"]
    status, body, headers = await get(oll + "/api/tags", DAVE)
    assert status == 429 and isinstance(body["error"], str) and "Retry-After" in headers
    status, body, headers = await post(lms + "/v1/messages", {"model": "tiny", "max_tokens": 2,
                                                              "messages": HI}, DAVE)
    assert status == 429 and body["error"]["type"] == "rate_limit_error"
    with pytest.raises(openai.RateLimitError):
        await openai_client(running, DAVE).models.list()
    # Other keys are not held back by dave.
    assert (await get(lms + "/v1/models", ALICE))[0] == 200


async def test_tokens_per_minute_counts_what_llama_server_generated(running) -> None:
    client = openai_client(running, CAROL)
    reply = await client.chat.completions.create(model="tiny", messages=HI,  # type: ignore[arg-type]
                                                 max_tokens=8, temperature=1.0)
    assert reply.usage is not None and reply.usage.completion_tokens >= 6
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="tiny", messages=HI, max_tokens=2)  # type: ignore[arg-type]
    assert caught.value.body["type"] == "tokens"  # type: ignore[index]
    assert caught.value.response.headers["Retry-After"]


async def test_streamed_tokens_count_too(running) -> None:
    client = openai_client(running, CAROL, "ollama")
    stream = await client.chat.completions.create(model="tiny", messages=HI, max_tokens=8,  # type: ignore[arg-type]
                                                  stream=True)
    chunks = [chunk async for chunk in stream]
    assert chunks
    with pytest.raises(openai.RateLimitError):
        await client.models.list()


async def test_anonymous_clients_can_be_limited_by_address(write_config, start_service,
                                                           llama_server_bin, tiny_model) -> None:
    config = write_config({"tiny": {"path": str(tiny_model), "args": MODEL_ARGS}},
                          runtime=llama_server_bin, proxies=both_ports(),
                          security={"client_requests_per_minute": 2})
    running = await start_service(config)
    url = url_of(running, "ollama") + "/api/tags"
    assert [(await get(url))[0] for _ in range(3)] == [200, 200, 429]
    # The health check is never counted nor refused.
    assert (await get(url_of(running, "ollama") + "/api/version"))[0] == 200


async def test_key_names_are_logged_and_keys_never(running, caplog: pytest.LogCaptureFixture
                                                   ) -> None:
    caplog.set_level(logging.DEBUG)
    lms = url_of(running, "lmstudio")
    await openai_client(running, ALICE).chat.completions.create(model="tiny", messages=HI,  # type: ignore[arg-type]
                                                                max_tokens=2)
    await get(lms + "/v1/models", "wrong-key-0123456789abcdef")
    for _ in range(4):
        await get(lms + "/v1/models", DAVE)
    text = "\n".join(record.getMessage() for record in caplog.records)
    for secret in (ALICE, BOB, CAROL, DAVE, SINGLE, "wrong-key-0123456789abcdef"):
        assert secret not in text


def test_config_round_trip_keeps_the_keys(tmp_path: Path) -> None:
    from llamarunner.config import parse_config

    config = parse_config({"security": {"api_keys": KEYS}})
    again = parse_config(config.to_dict())
    assert again.security.api_keys == config.security.api_keys
    assert "key=" not in repr(config.security.api_keys)  # the secret is not in reprs
