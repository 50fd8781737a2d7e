"""/api/show of a pulled model with the official `ollama` client: the system prompt,
license and parameters of its manifest, as Ollama reports them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import ollama
import pytest
from tests.support.registry_standin import StandIn


@pytest.fixture
async def stand_in() -> AsyncIterator[StandIn]:
    server = await StandIn().start()
    yield server
    await server.close()


@pytest.fixture(scope="session")
def tiny_bytes(tiny_model: Path) -> bytes:
    return tiny_model.read_bytes()


@pytest.fixture
async def running(write_config, start_service, llama_server_bin, tiny_model):  # type: ignore[no-untyped-def]
    config = write_config(
        {"tiny": {"path": str(tiny_model), "args": {"ctx-size": 512, "threads": 1}}},
        runtime=llama_server_bin,
        proxies={"ollama": {"enabled": True, "host": "127.0.0.1", "port": 0},
                 "lmstudio": {"enabled": False, "port": 0}},
        sources={"ollama": {"enabled": False}, "lmstudio": {"enabled": False}},
    )
    return await start_service(config, api="ollama")


async def test_show_reports_a_pulled_models_system_license_and_parameters(
        running: Any, stand_in: StandIn, tiny_bytes: bytes) -> None:
    stand_in.add_model("library/pirate", "latest", tiny_bytes, system="You are a pirate.",
                       params={"temperature": 0.25, "num_ctx": 1024, "stop": ["<|user|>"]},
                       license="MIT License\nCopyright someone")
    name = f"{stand_in.host}/library/pirate"
    client = ollama.AsyncClient(host=running.base_url)
    await client.pull(name, insecure=True)

    shown = await client.show(name)
    assert shown.license == "MIT License\nCopyright someone"
    assert shown.parameters is not None
    assert shown.parameters.splitlines() == [
        "temperature                   0.25",
        "num_ctx                       1024",
        'stop                          "<|user|>"',
    ]
    assert shown.modelfile is not None
    for line in ('SYSTEM """You are a pirate."""', "PARAMETER temperature 0.25",
                 "PARAMETER num_ctx 1024", "PARAMETER stop <|user|>",
                 'LICENSE """MIT License\nCopyright someone"""'):
        assert line in shown.modelfile
    async with aiohttp.ClientSession() as http, http.post(
            running.base_url + "/api/show", json={"model": name}) as resp:
        raw = json.loads(await resp.read())
    assert raw["system"] == "You are a pirate."

    # A configured model has none of them.
    plain = await client.show("tiny")
    assert plain.license == "" and "SYSTEM" not in (plain.modelfile or "")
    async with aiohttp.ClientSession() as http, http.post(
            running.base_url + "/api/show", json={"model": "tiny"}) as resp:
        assert "system" not in json.loads(await resp.read())
