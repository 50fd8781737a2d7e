"""A user with Ollama and LM Studio models on disk starts with no config and sees them all."""

from __future__ import annotations

import json
import os
from pathlib import Path

import aiohttp
import ollama
import openai
import pytest
from tests.support.stores import FakeLMStudio, FakeOllamaStore
from tests.support.tiny_gguf import write_tiny_gguf


@pytest.fixture
async def library(tmp_path: Path, write_config, start_service, llama_server_bin, tiny_model):
    home = Path(os.environ["HOME"])  # an empty home per test (tests/conftest.py)
    store = FakeOllamaStore(Path(os.environ["OLLAMA_MODELS"]))
    store.add_model("llama3.2", "3b", tiny_model)
    other = write_tiny_gguf(tmp_path / "other.gguf", seed=5)  # a different blob
    store.add_model("tiny", "q4", other, namespace="someone")
    lmstudio = FakeLMStudio(home)
    lmstudio.add_model("bartowski", "Phi-4-GGUF", ["Phi-4-Q4_K_M.gguf"])
    own = tmp_path / "data" / "models"
    own.mkdir(parents=True)
    write_tiny_gguf(own / "My-Model.gguf", seed=3)
    # No models and no model_dirs: only discovery; the runtime is the real llama-server.
    config = write_config({}, runtime=llama_server_bin, model_dirs=[],
                          proxies={"ollama": {"enabled": True, "port": 0},
                                   "lmstudio": {"enabled": True, "port": 0}})
    running = await start_service(config, api="ollama")
    lm_port = running.service.listeners.bound_port("lmstudio")
    return running, f"http://127.0.0.1:{lm_port}", store


EXPECTED = {"llama3.2:3b", "someone/tiny:q4", "phi-4", "my-model"}


async def test_every_source_is_listed_on_every_api(library) -> None:
    running, lm_url, store = library
    tags = await ollama.AsyncClient(host=running.base_url).list()
    shown = {m.model.removesuffix(":latest") for m in tags.models}
    assert shown == EXPECTED
    llama = next(m for m in tags.models if m.model == "llama3.2:3b")
    manifest = store.manifests / "registry.ollama.ai" / "library" / "llama3.2" / "3b"
    assert llama.digest == store.model_layer(manifest).digest.removeprefix("sha256:")
    assert llama.details.family == "llama"
    async with aiohttp.ClientSession() as http:
        async with http.get(lm_url + "/v1/models") as resp:
            v1 = {m["id"] for m in (await resp.json())["data"]}
        async with http.get(lm_url + "/api/v0/models") as resp:
            v0 = {m["id"]: m for m in (await resp.json())["data"]}
    assert v1 == EXPECTED
    assert set(v0) == EXPECTED
    assert v0["phi-4"]["publisher"] == "bartowski"
    assert all(m["compatibility_type"] == "gguf" for m in v0.values())


@pytest.mark.parametrize("model", sorted(EXPECTED))
async def test_chat_with_any_discovered_model(library, model: str) -> None:
    _, lm_url, _ = library
    client = openai.AsyncOpenAI(base_url=lm_url + "/v1", api_key="x", max_retries=0)
    reply = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert reply.choices[0].message.content is not None


async def test_store_models_are_never_deleted(library) -> None:
    running, _, store = library
    with pytest.raises(ollama.ResponseError) as refused:
        await ollama.AsyncClient(host=running.base_url).delete("llama3.2:3b")
    assert refused.value.status_code == 403
    assert "ollama rm" in str(refused.value)
    assert list(store.blobs.iterdir())


async def test_per_model_settings_for_a_discovered_model(library) -> None:
    running, _, _ = library
    config_path = running.service.store.path

    def give_context(data: dict) -> None:
        data["models"]["llama3.2:3b"] = {"args": {"ctx-size": 1024}, "ttl": "1m"}

    await running.service.update_config(give_context)
    shown = await ollama.AsyncClient(host=running.base_url).show("llama3.2:3b")
    assert shown.modelinfo["llama.context_length"] == 1024
    assert "path" not in json.loads(config_path.read_text())["models"]["llama3.2:3b"]
