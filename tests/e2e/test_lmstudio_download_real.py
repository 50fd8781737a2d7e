"""LM Studio's download API end to end: raw HTTP against the app's LM Studio port, a
loopback Hugging Face hub stand-in (HF_ENDPOINT), and the model chatting on a real
llama-server."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.support.registry_standin import StandIn

REPO = "someone/Tiny-GGUF"
ARGS = {"ctx-size": 512, "threads": 1, "jinja": True}


@pytest.fixture(scope="session")
def tiny_bytes(tiny_model: Path) -> bytes:
    return tiny_model.read_bytes()


@pytest.fixture
async def stand_in(tiny_bytes: bytes, monkeypatch: pytest.MonkeyPatch
                   ) -> AsyncIterator[StandIn]:
    server = await StandIn().start()
    server.add_hub_repo(REPO, {"tiny-Q4_K_M.gguf": tiny_bytes,
                               "README.md": b"a tiny model"})
    monkeypatch.setenv("HF_ENDPOINT", server.base_url)
    yield server
    await server.close()


@pytest.fixture
async def running(write_config, start_service, llama_server_bin, tiny_model):  # type: ignore[no-untyped-def]
    config = write_config(
        {"tiny": {"path": str(tiny_model), "args": ARGS}},
        runtime=llama_server_bin,
        sources={"ollama": {"enabled": False}, "lmstudio": {"enabled": False}},
    )
    return await start_service(config, api="lmstudio")


async def call(running: Any, method: str, path: str, body: Any = None
               ) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.request(
            method, running.base_url + path, json=body) as resp:
        return resp.status, json.loads(await resp.read())


async def until_done(running: Any, job_id: str) -> dict[str, Any]:
    """Poll the job's status as LM Studio clients do, until it is no longer downloading."""
    while True:
        status, body = await call(running, "GET", f"/api/v1/models/download/status/{job_id}")
        assert status == 200, body
        assert body["job_id"] == job_id and "started_at" in body
        if body["status"] != "downloading":
            return body
        assert "bytes_per_second" in body
        await asyncio.sleep(0.05)


async def test_a_download_completes_is_listed_and_chats(
        running: Any, stand_in: StandIn, tiny_bytes: bytes) -> None:
    link = f"https://huggingface.co/{REPO}/blob/main/tiny-Q4_K_M.gguf"
    status, started = await call(running, "POST", "/api/v1/models/download", {"model": link})
    assert status == 200, started
    assert started["status"] in ("downloading", "completed")
    assert started["job_id"].startswith("job_")
    size = len(tiny_bytes)
    assert started["total_size_bytes"] == size

    done = await until_done(running, started["job_id"])
    assert done["status"] == "completed"
    assert (done["total_size_bytes"], done["downloaded_bytes"]) == (size, size)
    assert done["completed_at"] >= done["started_at"]
    key = done["model_key"]
    assert key == f"hf.co/{REPO}:Q4_K_M"

    # Listed by LM Studio's own API, with the file's digest in the store, and it chats.
    _, listed = await call(running, "GET", "/api/v1/models")
    assert key in [m["key"] for m in listed["models"]]
    entry = running.service.library_entries()[key]
    assert entry.digest == hashlib.sha256(tiny_bytes).hexdigest()
    status, reply = await call(running, "POST", "/v1/chat/completions", {
        "model": key, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert status == 200, reply
    assert reply["choices"][0]["message"]["role"] == "assistant"

    # The same model again, by its id and quantization: nothing to do.
    status, again = await call(running, "POST", "/api/v1/models/download",
                               {"model": REPO, "quantization": "Q4_K_M"})
    assert (status, again) == (200, {"status": "already_downloaded"})
    hub_files = [r for r in stand_in.requests if "/resolve/" in r.path]
    assert len(hub_files) == 1


async def test_a_corrupt_download_fails_with_its_error(running: Any,
                                                       stand_in: StandIn) -> None:
    stand_in.faults.corrupt.add("tiny-Q4_K_M.gguf")
    status, started = await call(running, "POST", "/api/v1/models/download",
                                 {"model": f"https://huggingface.co/{REPO}"})
    assert status == 200, started
    failed = await until_done(running, started["job_id"])
    assert failed["status"] == "failed"
    assert "digest mismatch" in failed["error"]
    assert "model_key" not in failed
    _, listed = await call(running, "GET", "/api/v1/models")
    assert [m["key"] for m in listed["models"]] == ["tiny"]


async def test_unknown_jobs_and_bad_requests_get_lmstudio_errors(
        running: Any, stand_in: StandIn) -> None:
    status, body = await call(running, "GET", "/api/v1/models/download/status/job_nope")
    assert status == 404
    assert body["error"]["code"] == "job_not_found" and "job_nope" in body["error"]["message"]

    for bad in ({}, {"model": "qwen3-8b"}, {"model": "https://example.com/a/b"},
                {"model": REPO, "quantization": 4}, {"model": "someone/../x"}):
        status, body = await call(running, "POST", "/api/v1/models/download", bad)
        assert status == 400, (bad, body)
        assert body["error"]["type"] == "invalid_request" and body["error"]["message"]
    status, body = await call(running, "POST", "/api/v1/models/download",
                              {"model": "someone/Nothing-GGUF"})
    assert status == 404 and "was not found" in body["error"]["message"]
    status, body = await call(running, "POST", "/api/v1/models/download",
                              {"model": REPO, "quantization": "Q2_K"})
    assert status == 404 and "Q4_K_M" in body["error"]["message"]
    assert not [r for r in stand_in.requests if "/resolve/" in r.path]
