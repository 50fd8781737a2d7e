"""Two app instances on loopback, one the peer of the other, with the real clients.

Instance B runs `tiny` and `shared`; instance A runs its own `shared` and has B as the peer
"box". A lists B's `tiny`, keeps its own `shared` under that name and offers B's as
`box/shared`; requests for B's models go to B through A, streamed as B streams them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import ollama
import openai
import pytest
from tests.support.both_listeners import MODEL_ARGS, both_ports, url_of

from llamarunner.config import ConfigStore
from llamarunner.service import Service

PEER_KEY = "peer-secret-7f3a"


def _config(folder: Path, runtime: Path, models: dict[str, Any], **extra: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "proxies": both_ports(),
        "runtimes": {"default": {"path": str(runtime)}},
        "models": models,
        "model_dirs": [str(folder / "no-models-here")],
        "scheduler": {"load_timeout": "30s", "stop_grace": "2s"},
        **extra,
    }
    path = folder / "config.json"
    path.write_text(json.dumps(data, indent=2))
    return path


async def _start(config: Path) -> Service:
    service = Service(ConfigStore(config), runner_log_dir=config.parent / "runners",
                      metadata_cache_file=config.parent / "gguf-metadata.json")
    errors = await service.start()
    assert not errors, errors
    return service


class _Pair:
    def __init__(self, a: Service, b: Service) -> None:
        self.a = a
        self.b = b

    def url(self, which: str, api: str = "lmstudio") -> str:
        service = self.a if which == "a" else self.b
        return f"http://127.0.0.1:{service.listeners.bound_port(api)}"

    def runner_states(self, which: str) -> dict[str, str]:
        service = self.a if which == "a" else self.b
        return {info.name: info.state for info in service.manager.snapshot()}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def pair(tmp_path: Path, llama_server_bin: Path, tiny_model: Path,
               tiny_model_b: Path):  # type: ignore[no-untyped-def]
    b_config = _config(tmp_path / "b", llama_server_bin, {
        "tiny": {"path": str(tiny_model), "args": MODEL_ARGS},
        "shared": {"path": str(tiny_model_b), "args": MODEL_ARGS},
    }, security={"api_key": PEER_KEY})
    b = await _start(b_config)
    a_config = _config(tmp_path / "a", llama_server_bin, {
        "shared": {"path": str(tiny_model_b), "args": MODEL_ARGS},
    }, peers={"box": {"url": f"http://127.0.0.1:{b.listeners.bound_port('lmstudio')}/v1",
                      "api_key": PEER_KEY}})
    a = await _start(a_config)
    try:
        await a.refresh_peers()
        yield _Pair(a, b)
    finally:
        await a.stop()
        await b.stop()


def _openai(pair: _Pair, api: str = "lmstudio") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=pair.url("a", api) + "/v1", api_key="unused",
                              max_retries=0)


async def test_the_peers_models_are_listed_next_to_the_local_ones(pair: _Pair) -> None:
    models = {m.id: m for m in (await _openai(pair).models.list()).data}
    assert set(models) == {"shared", "tiny", "box/shared"}
    assert models["shared"].owned_by == "llamarunner"
    assert models["tiny"].owned_by == "peer box"
    assert models["box/shared"].owned_by == "peer box"
    assert models["tiny"].model_extra == {"peer": "box", "available": True}

    tags = await ollama.AsyncClient(host=pair.url("a", "ollama")).list()
    by_name = {m.model: m for m in tags.models}
    assert {"shared:latest", "tiny:latest", "box/shared:latest"} <= set(by_name)
    raw = await _get_json(pair.url("a", "ollama") + "/api/tags")
    tiny = next(m for m in raw["models"] if m["name"] == "tiny:latest")
    assert tiny["remote_model"] == "tiny"
    assert tiny["remote_host"] == pair.url("b")
    assert tiny["available"] is True

    v0 = await _get_json(pair.url("a") + "/api/v0/models")
    listed = {m["id"]: m for m in v0["data"]}
    assert listed["tiny"]["peer"] == "box" and listed["tiny"]["state"] == "not-loaded"
    assert "peer" not in listed["shared"]
    v1 = await _get_json(pair.url("a") + "/api/v1/models")
    assert {m["key"] for m in v1["models"]} >= {"tiny", "box/shared"}

    # The library's view: where each comes from.
    assert pair.a.peer_status("tiny") is not None
    assert pair.a.peer_status("shared") is None


async def test_requests_for_peer_models_run_on_the_peer(pair: _Pair) -> None:
    client = _openai(pair)
    reply = await client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=8)
    assert reply.choices[0].message.role == "assistant"
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    assert pair.runner_states("b")["tiny"] == "ready"
    assert "tiny" not in pair.runner_states("a")

    # The peer's copy of a name the local library also has, chosen on purpose.
    await client.chat.completions.create(
        model="box/shared", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert pair.runner_states("b")["shared"] == "ready"
    assert pair.runner_states("a")["shared"] == "stopped"
    # And the plain name stays the local one.
    await client.chat.completions.create(
        model="shared", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert pair.runner_states("a")["shared"] == "ready"


async def test_a_peer_model_streams_through_the_relay(pair: _Pair) -> None:
    stream = await _openai(pair).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "count to ten"}], max_tokens=24,
        stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta
             and c.choices[0].delta.content]
    assert len(texts) > 1
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)
    assert chunks[-1].usage is not None

    completion = await _openai(pair).completions.create(model="tiny", prompt="Once",
                                                         max_tokens=6)
    assert completion.choices[0].text is not None


async def test_the_ollama_api_is_converted_for_peer_models(pair: _Pair) -> None:
    client = ollama.AsyncClient(host=pair.url("a", "ollama"))
    reply = await client.chat(model="tiny", messages=[{"role": "user", "content": "hello"}],
                              options={"num_predict": 8})
    assert reply.message.role == "assistant"
    assert reply.done and reply.eval_count and reply.eval_count > 0
    parts = [part async for part in await client.chat(
        model="tiny", messages=[{"role": "user", "content": "hello"}],
        options={"num_predict": 12}, stream=True)]
    assert len(parts) > 2 and parts[-1].done
    generated = await client.generate(model="box/shared", prompt="Once upon",
                                      options={"num_predict": 6})
    assert generated.done and generated.response is not None
    shown = await client.show("tiny")
    assert "completion" in (shown.capabilities or [])
    # The Ollama port's own OpenAI route names them with a tag, still owned by the peer.
    models = {m.id: m for m in (await _openai(pair, "ollama").models.list()).data}
    assert models["tiny:latest"].owned_by == "peer box"


async def test_the_anthropic_api_reaches_peer_models_too(pair: _Pair) -> None:
    client = anthropic.AsyncAnthropic(base_url=pair.url("a"), api_key="unused", max_retries=0)
    message = await client.messages.create(
        model="tiny", max_tokens=8, messages=[{"role": "user", "content": "hello"}])
    assert message.role == "assistant" and message.usage.output_tokens > 0
    assert pair.runner_states("b")["tiny"] == "ready"


async def test_cancelling_a_streamed_peer_request_ends_it_on_the_peer(pair: _Pair) -> None:
    url = pair.url("a") + "/v1/chat/completions"
    body = {"model": "tiny", "messages": [{"role": "user", "content": "go"}],
            "max_tokens": 100000, "stream": True}
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        assert resp.status == 200
        await resp.content.readany()
    # The peer's slot is free again: its llama-server stops generating for a gone client.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        busy = await _slots_busy(pair)
        if not busy:
            break
        await asyncio.sleep(0.2)
    assert not await _slots_busy(pair)


async def _slots_busy(pair: _Pair) -> bool:
    runner = pair.b.manager.runner("tiny")
    assert runner is not None
    async with aiohttp.ClientSession() as session, session.get(
            runner.base_url + "/slots", headers=dict(runner.auth_headers)) as resp:
        slots = await resp.json()
    return any(slot.get("is_processing") for slot in slots)


async def test_a_peer_that_goes_down_is_named_and_local_models_go_on(
        pair: _Pair, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await pair.b.stop()
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        await _openai(pair).chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=4)
    assert time.monotonic() - started < 6
    assert caught.value.status_code == 503
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "peer_unavailable"
    assert "peer 'box'" in error["message"]

    with pytest.raises(ollama.ResponseError) as ollama_caught:
        await ollama.AsyncClient(host=pair.url("a", "ollama")).chat(
            model="tiny", messages=[{"role": "user", "content": "hello"}])
    assert ollama_caught.value.status_code == 503
    assert "peer 'box'" in ollama_caught.value.error

    models = {m.id: m for m in (await _openai(pair).models.list()).data}
    assert models["tiny"].model_extra == {"peer": "box", "available": False}
    # A's own model does not care.
    reply = await _openai(pair).chat.completions.create(
        model="shared", messages=[{"role": "user", "content": "hello"}], max_tokens=4)
    assert reply.choices[0].message.role == "assistant"
    # The key A uses for the peer never shows in its log.
    assert PEER_KEY not in caplog.text


async def test_a_wrong_key_for_the_peer_is_a_502_that_names_the_setting(
        tmp_path: Path, llama_server_bin: Path, pair: _Pair) -> None:
    config = _config(tmp_path / "c", llama_server_bin, {}, peers={"box": {
        "url": pair.url("b") + "/v1", "api_key": "wrong", "models": ["tiny"]}})
    c = await _start(config)
    try:
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:"
                                    f"{c.listeners.bound_port('lmstudio')}/v1",
                                    api_key="unused", max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert caught.value.status_code == 502
        assert "peers.box.api_key" in str(caught.value.body)
        assert "wrong" not in json.dumps(caught.value.body)
    finally:
        await c.stop()


async def test_a_configured_model_of_an_unreachable_peer_fails_fast(
        tmp_path: Path, llama_server_bin: Path) -> None:
    port = _free_port()
    config = _config(tmp_path / "d", llama_server_bin, {}, peers={"gone": {
        "url": f"http://127.0.0.1:{port}/v1", "models": ["ghost"]}})
    d = await _start(config)
    try:
        await d.refresh_peers()
        base = f"http://127.0.0.1:{d.listeners.bound_port('lmstudio')}"
        listed = await _get_json(base + "/v1/models")
        assert listed["data"][0]["id"] == "ghost"
        assert listed["data"][0]["available"] is False
        async with aiohttp.ClientSession() as session, session.post(
                base + "/v1/chat/completions",
                json={"model": "ghost", "messages": [{"role": "user", "content": "x"}]}
        ) as resp:
            assert resp.status == 503
            error = (await resp.json())["error"]
        assert f"127.0.0.1:{port}" in error["message"]
        assert "peer 'gone'" in error["message"]
        # llama-server's own endpoints are not there on a peer: a clear 400.
        ollama_base = url_of(_Running(d), "ollama")
        async with aiohttp.ClientSession() as session, session.post(
                ollama_base + "/api/generate",
                json={"model": "ghost", "prompt": "x", "raw": True, "stream": False}
        ) as resp:
            assert resp.status == 400
            assert "OpenAI API" in (await resp.json())["error"]
    finally:
        await d.stop()


async def test_a_model_added_on_the_peer_shows_after_a_refresh(
        pair: _Pair, tiny_model: Path) -> None:
    def add(data: dict[str, Any]) -> None:
        data["models"]["late"] = {"path": str(tiny_model), "args": MODEL_ARGS}

    await pair.b.update_config(add)
    await pair.a.refresh_peers()
    ids = {m.id for m in (await _openai(pair).models.list()).data}
    assert "late" in ids


async def test_a_peer_model_cannot_be_deleted_or_copied_here(pair: _Pair) -> None:
    client = ollama.AsyncClient(host=pair.url("a", "ollama"))
    with pytest.raises(ollama.ResponseError) as refused:
        await client.delete("tiny")
    assert refused.value.status_code == 403 and "peer 'box'" in refused.value.error
    with pytest.raises(ollama.ResponseError) as not_copied:
        await client.copy("tiny", "mine")
    assert not_copied.value.status_code == 400 and "peer 'box'" in not_copied.value.error
    assert pair.runner_states("b").get("tiny") != "ready"  # nothing was loaded for it


class _Running:
    def __init__(self, service: Service) -> None:
        self.service = service


async def _get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()
