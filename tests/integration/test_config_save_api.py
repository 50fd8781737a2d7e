"""Ollama's /api/copy and /api/delete write config.json: never over what the user wrote.

A real Service with the real llama-server configured (nothing is loaded: copy and delete
only change the config), driven through raw HTTP and the official `ollama` client.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import ollama
import pytest

BROKEN = b'{\n  "models": {\n    "tiny": {"path": "/x.gguf",}\n  }\n}\n'


# File operations are plain functions: microseconds each, done between requests.
def read(path: Path) -> bytes:
    return path.read_bytes()


def write(path: Path, raw: bytes) -> None:
    path.write_bytes(raw)


@pytest.fixture
async def running(write_config: Any, start_service: Any, llama_server_bin: Path,
                  tiny_model: Path) -> Any:
    config = write_config(
        {"tiny": {"path": str(tiny_model), "args": {"ctx-size": 256}}},
        runtime=llama_server_bin,
        proxies={"ollama": {"enabled": True, "host": "127.0.0.1", "port": 0},
                 "lmstudio": {"enabled": False, "port": 0}})
    return await start_service(config, api="ollama")


async def post(running: Any, method: str, path: str, body: object) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.request(
            method, running.base_url + path, json=body) as resp:
        return resp.status, await resp.json() if resp.status != 200 else None


async def test_copy_with_a_config_that_does_not_parse_is_refused_and_leaves_it(
        running: Any) -> None:
    path: Path = running.service.store.path
    write(path, BROKEN)
    status, body = await post(running, "POST", "/api/copy",
                              {"source": "tiny", "destination": "tiny-copy"})
    assert status == 409
    assert set(body) == {"error"}
    assert f"{path}:3:" in body["error"] and "invalid JSON" in body["error"]
    assert "Not saved" in body["error"]
    assert read(path) == BROKEN
    # The official client sees a plain error with the status and the message.
    with pytest.raises(ollama.ResponseError) as info:
        await ollama.AsyncClient(host=running.base_url).copy("tiny", "tiny-copy")
    assert info.value.status_code == 409
    assert "invalid JSON" in info.value.error
    assert read(path) == BROKEN


async def test_delete_with_a_config_that_does_not_validate_is_refused(running: Any) -> None:
    path: Path = running.service.store.path
    data = json.loads(read(path))
    data["scheduler"]["max_queue"] = "many"
    invalid = json.dumps(data, indent=2).encode()
    write(path, invalid)
    status, body = await post(running, "DELETE", "/api/delete", {"model": "tiny"})
    assert status == 409
    assert "scheduler.max_queue" in body["error"] and "Not saved" in body["error"]
    assert read(path) == invalid
    assert "tiny" in running.service.config.models


async def test_a_hand_edit_just_before_a_copy_stays(running: Any) -> None:
    path: Path = running.service.store.path
    data = json.loads(read(path))
    data["scheduler"]["max_queue"] = 3
    data["_note"] = "edited by hand"
    write(path, json.dumps(data, indent=4).encode())
    status, _ = await post(running, "POST", "/api/copy",
                           {"source": "tiny", "destination": "tiny-copy"})
    assert status == 200
    text = read(path).decode()
    saved = json.loads(text)
    assert "tiny-copy" in saved["models"]
    assert saved["scheduler"]["max_queue"] == 3 and saved["_note"] == "edited by hand"
    assert text.startswith('{\n    "proxies"')  # the user's indent, too
    assert running.service.config.scheduler.max_queue == 3
