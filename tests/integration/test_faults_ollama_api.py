"""Runner faults as each API's clients see them: /v1 on both ports, Ollama NDJSON, LM Studio v0."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from llamarunner.runner.state import RunnerState
from llamarunner.service import Service

BOTH_PORTS = {
    "ollama": {"enabled": True, "host": "127.0.0.1", "port": 0},
    "lmstudio": {"enabled": True, "host": "127.0.0.1", "port": 0},
}


@dataclass(frozen=True)
class Api:
    """One streaming generation endpoint, on one port, and how its errors look."""

    id: str
    port: str  # which listener serves it
    path: str
    shape: str  # "openai" ({"error": {...}}) or "ollama" ({"error": "..."})
    stream_format: str  # "sse" or "ndjson"

    def body(self, model: str, *, stream: bool = True, text: str = "hi") -> dict[str, Any]:
        if self.path == "/api/generate":
            return {"model": model, "prompt": text, "stream": stream}
        return {"model": model, "messages": [{"role": "user", "content": text}],
                "stream": stream}


APIS = [
    Api("v1-lmstudio-port", "lmstudio", "/v1/chat/completions", "openai", "sse"),
    Api("v1-ollama-port", "ollama", "/v1/chat/completions", "openai", "sse"),
    Api("ollama-chat", "ollama", "/api/chat", "ollama", "ndjson"),
    Api("ollama-generate", "ollama", "/api/generate", "ollama", "ndjson"),
    Api("lmstudio-v0", "lmstudio", "/api/v0/chat/completions", "openai", "sse"),
]


def base_url(service: Service, port: str) -> str:
    return f"http://127.0.0.1:{service.listeners.bound_port(port)}"


def error_message(api: Api, body: bytes) -> str:
    data = json.loads(body)
    if api.shape == "ollama":
        assert isinstance(data["error"], str), data
        return str(data["error"])
    assert set(data["error"]) == {"message", "type", "param", "code"}, data
    return str(data["error"]["message"])


def last_stream_error(api: Api, body: bytes) -> str | None:
    """The in-stream error an API ends a broken stream with, in its own format."""
    if api.stream_format == "ndjson":
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        last = lines[-1] if lines else {}
        return last.get("error") if isinstance(last.get("error"), str) else None
    events = [e for e in body.split(b"\n\n") if e.strip()]
    if not events or not events[-1].startswith(b"data: {"):
        return None
    err = json.loads(events[-1][len(b"data: "):]).get("error")
    return err.get("message") if isinstance(err, dict) else None


async def request(url: str, body: dict[str, Any]) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http, http.post(url, json=body) as resp:
        return resp.status, await resp.read()


async def wait_state(service: Service, model: str, state: RunnerState) -> None:
    runner = service.manager.runner(model)
    assert runner is not None
    for _ in range(100):
        if runner.state is state:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"runner stayed {runner.state}, expected {state}")


@pytest.mark.parametrize("api", APIS, ids=[a.id for a in APIS])
async def test_a_crash_mid_stream_reaches_the_client_within_a_second_and_restarts(
    api: Api, write_config, start_service, fake_bin
) -> None:
    args = {"fault-crash-mid-stream": 3, "fault-chunk-interval": 0.02}
    config = write_config({"m": {"path": str(fake_bin), "args": args}}, runtime=fake_bin,
                          proxies=BOTH_PORTS)
    service = (await start_service(config)).service
    url = base_url(service, api.port) + api.path
    await service.manager.load("m")  # time the crash, not the load
    started = time.monotonic()
    status, body = await request(url, api.body("m"))
    assert time.monotonic() - started < 1.0
    assert status == 200  # the stream had begun; the error is its last event/line
    message = last_stream_error(api, body)
    assert message is not None and "stopped in the middle" in message
    await wait_state(service, "m", RunnerState.FAILED)
    runner = service.manager.runner("m")
    assert runner is not None and runner.last_error is not None
    assert runner.last_error.exit_code == 137
    assert any("load_model" in line for line in runner.last_error.tail)  # its output tail
    # The next request starts it again (it crashes again three tokens in, by design).
    status, _ = await request(url, api.body("m", stream=False))
    assert status == 200
    assert runner.state is RunnerState.READY


@pytest.mark.parametrize("upstream_status", [400, 503])
@pytest.mark.parametrize("api", APIS, ids=[a.id for a in APIS])
async def test_upstream_errors_keep_their_status_in_each_apis_shape(
    api: Api, upstream_status: int, write_config, start_service, fake_bin
) -> None:
    args = {"fault-http-status": upstream_status}
    config = write_config({"m": {"path": str(fake_bin), "args": args}}, runtime=fake_bin,
                          proxies=BOTH_PORTS)
    service = (await start_service(config)).service
    for stream in (True, False):
        status, body = await request(base_url(service, api.port) + api.path,
                                     api.body("m", stream=stream))
        assert status == upstream_status, body  # never a 200 stream with raw bytes inside
        message = error_message(api, body)
        assert ("context" in message) if upstream_status == 400 else ("HTTP 503" in message)


@pytest.mark.parametrize("api", APIS, ids=[a.id for a in APIS])
async def test_a_child_that_never_answers_fails_with_504_and_is_disconnected(
    api: Api, write_config, start_service, fake_bin, tmp_path: Path
) -> None:
    log = tmp_path / "disconnects.log"
    args = {"fault-first-token-delay": 0.8, "fault-chunk-interval": 0.05,
            "fault-log-disconnects": str(log)}
    config = write_config({"m": {"path": str(fake_bin), "args": args}}, runtime=fake_bin,
                          proxies=BOTH_PORTS, scheduler={"first_token_timeout": "300ms"})
    service = (await start_service(config)).service
    await service.manager.load("m")
    started = time.monotonic()
    status, body = await request(base_url(service, api.port) + api.path, api.body("m"))
    assert 0.25 < time.monotonic() - started < 1.5
    assert status == 504
    message = error_message(api, body)
    assert "produced no output for 300ms" in message
    assert "scheduler.first_token_timeout" in message
    runner = service.manager.runner("m")
    assert runner is not None and runner.inflight == 0
    # The fake notices the closed connection when its late first token cannot be written.
    for _ in range(100):
        if log.exists() and log.read_text().strip():
            break
        await asyncio.sleep(0.05)
    assert log.read_text().strip()
