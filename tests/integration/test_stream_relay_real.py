"""The streaming relay against a real llama-server, once per API that streams through it.

A client that leaves mid-stream must stop the generation (llama-server logs the cancelled
task and `/slots` shows every slot idle long before the answer could have finished), and a
runner that dies mid-stream must end the stream with the API's own error.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.support.both_listeners import both_ports
from tests.support.tiny_gguf import write_tiny_gguf

from llamarunner.core.events import RunnerLogLine
from llamarunner.service import Service

# Far more tokens than a stream runs before the test cuts it: the tiny model never samples
# its end token, so only the limit or a closed connection can stop it.
LIMIT = 20_000
CONTEXT = 32_768
HI = [{"role": "user", "content": "hello"}]


@dataclass(frozen=True)
class Api:
    """One streaming route, the body that makes it generate LIMIT tokens, and how its client
    reads the last event or line."""

    id: str
    port: str
    path: str
    body: dict[str, Any]
    stream_error: Callable[[bytes], str | None]


def _sse(raw: bytes) -> list[tuple[str | None, str]]:
    events = []
    for block in raw.decode().split("\n\n"):
        name, data = None, []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            events.append((name, "\n".join(data)))
    return events


def openai_error(raw: bytes) -> str | None:
    last = json.loads(_sse(raw)[-1][1])
    error = last.get("error") if isinstance(last, dict) else None
    return error.get("message") if isinstance(error, dict) else None


def anthropic_error(raw: bytes) -> str | None:
    name, data = _sse(raw)[-1]
    last = json.loads(data)
    if name != "error":
        return None
    assert last["type"] == "error" and last["error"]["type"] == "api_error", last
    return str(last["error"]["message"])


def ollama_error(raw: bytes) -> str | None:
    last = json.loads(raw.splitlines()[-1])
    return last["error"] if isinstance(last.get("error"), str) else None


APIS = [
    Api("openai-chat", "lmstudio", "/v1/chat/completions",
        {"model": "tiny", "messages": HI, "max_tokens": LIMIT, "stream": True}, openai_error),
    Api("openai-completions", "ollama", "/v1/completions",
        {"model": "tiny", "prompt": "hello", "max_tokens": LIMIT, "stream": True},
        openai_error),
    Api("responses", "lmstudio", "/v1/responses",
        {"model": "tiny", "input": "hello", "max_output_tokens": LIMIT, "stream": True},
        openai_error),
    Api("anthropic", "ollama", "/v1/messages",
        {"model": "tiny", "messages": HI, "max_tokens": LIMIT, "stream": True},
        anthropic_error),
    Api("ollama-chat", "ollama", "/api/chat",
        {"model": "tiny", "messages": HI, "options": {"num_predict": LIMIT}}, ollama_error),
    Api("ollama-generate", "ollama", "/api/generate",
        {"model": "tiny", "prompt": "hello", "options": {"num_predict": LIMIT}},
        ollama_error),
    Api("lmstudio-v0", "lmstudio", "/api/v0/chat/completions",
        {"model": "tiny", "messages": HI, "max_tokens": LIMIT, "stream": True}, openai_error),
]
EACH_API = pytest.mark.parametrize("api", APIS, ids=[api.id for api in APIS])


@pytest.fixture(scope="module")
def long_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a training context long enough for LIMIT tokens."""
    return write_tiny_gguf(tmp_path_factory.mktemp("long") / "tiny.gguf", name="tiny",
                           context_length=CONTEXT)


@pytest.fixture
async def service(write_config, start_service, llama_server_bin, long_model) -> Service:  # type: ignore[no-untyped-def]
    config = write_config(
        {"tiny": {"path": str(long_model),
                  "args": {"ctx-size": CONTEXT, "threads": 1, "jinja": True}}},
        runtime=llama_server_bin, proxies=both_ports())
    running = await start_service(config)
    result: Service = running.service
    return result


class RunnerLog:
    """The lines llama-server prints, as the Service publishes them."""

    def __init__(self, service: Service) -> None:
        self.lines: list[str] = []
        service.events.subscribe(self._on_event)

    def _on_event(self, event: object) -> None:
        if isinstance(event, RunnerLogLine):
            self.lines.append(event.line)

    async def wait_for(self, pattern: str) -> re.Match[str]:
        regex = re.compile(pattern)
        for _ in range(600):
            for line in self.lines:
                if match := regex.search(line):
                    return match
            await asyncio.sleep(0.05)
        raise AssertionError(f"llama-server never printed {pattern!r}: {self.lines[-10:]}")


def url_of_service(service: Service, port: str) -> str:
    return f"http://127.0.0.1:{service.listeners.bound_port(port)}"


async def slots_idle(service: Service) -> list[dict[str, Any]]:
    runner = service.manager.runner("tiny")
    assert runner is not None
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            async with http.get(runner.base_url + "/slots",
                                headers=runner.auth_headers) as response:
                slots: list[dict[str, Any]] = await response.json()
            if not any(slot["is_processing"] for slot in slots):
                return slots
            await asyncio.sleep(0.05)
    raise AssertionError(f"a slot is still generating: {slots}")


@EACH_API
async def test_a_client_leaving_mid_stream_stops_the_generation(
        service: Service, api: Api) -> None:
    log = RunnerLog(service)
    await service.manager.load("tiny")
    async with aiohttp.ClientSession() as http:
        response = await http.post(url_of_service(service, api.port) + api.path, json=api.body)
        assert response.status == 200
        assert await response.content.readany()  # the stream has begun
        response.close()  # the client goes away
    runner = service.manager.runner("tiny")
    assert runner is not None
    for _ in range(200):
        if runner.inflight == 0:
            break
        await asyncio.sleep(0.05)
    assert runner.inflight == 0
    # llama-server saw the connection close: it cancelled the task and freed the slot
    # after a small part of the LIMIT tokens it was asked for.
    await log.wait_for(r"cancel task")
    released = await log.wait_for(r"stop processing: n_tokens = (\d+)")
    assert int(released.group(1)) < LIMIT
    await slots_idle(service)
    assert runner.state.value == "ready"


@EACH_API
async def test_a_runner_killed_mid_stream_ends_it_with_the_apis_error(
        service: Service, api: Api) -> None:
    await service.manager.load("tiny")
    runner = service.manager.runner("tiny")
    assert runner is not None and runner.pid is not None
    async with aiohttp.ClientSession() as http, http.post(
            url_of_service(service, api.port) + api.path, json=api.body) as response:
        assert response.status == 200
        raw = await response.content.readany()
        os.kill(runner.pid, signal.SIGKILL)
        raw += await response.read()
    message = api.stream_error(raw)
    assert message is not None, raw[-300:]
    assert message.startswith("llama-server for model 'tiny' stopped in the middle of the "
                              "response")
    for _ in range(100):
        if runner.state.value == "failed":
            break
        await asyncio.sleep(0.05)
    assert runner.state.value == "failed" and runner.inflight == 0
