"""A model split over RPC workers: each is probed before llama-server starts (fake server).

A worker that does not answer fails the request at once with a 503 naming it, in each
API's own error shape; nothing is spawned, other models keep working, and the next
request checks again.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import aiohttp
import pytest
from tests.support.both_listeners import both_ports
from tests.support.rpc_worker import FakeRpcWorker, free_port

from llamarunner.rpc.probe import WorkerState

HI = [{"role": "user", "content": "hi"}]


async def post(base_url: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(base_url + path, json=body) as resp:
        raw = await resp.read()
        return resp.status, json.loads(raw.splitlines()[0]) if raw.strip() else None


def url(running: Any, api: str) -> str:
    return f"http://127.0.0.1:{running.service.listeners.bound_port(api)}"


@pytest.fixture
async def split(write_config, start_service, fake_bin, tmp_path):  # type: ignore[no-untyped-def]
    """`split` over a live fake worker and a port nobody listens on; `plain` without rpc."""
    worker = await FakeRpcWorker().start()
    dead = f"127.0.0.1:{free_port()}"
    record = tmp_path / "argv.json"
    config = write_config(
        {"split": {"path": str(fake_bin), "rpc": [worker.address, dead],
                   "args": {"fault-record-argv": str(record)}},
         "plain": {"path": str(fake_bin)}},
        runtime=fake_bin, proxies=both_ports())
    running = await start_service(config)
    yield running, worker, dead, record
    await worker.stop()


# Each API's shape for the error, from the body it answers with.
SHAPES = [
    ("lmstudio", "/v1/chat/completions", {"model": "split", "messages": HI},
     lambda body: (body["error"]["code"], body["error"]["message"])),
    ("ollama", "/v1/chat/completions", {"model": "split", "messages": HI, "stream": True},
     lambda body: (body["error"]["code"], body["error"]["message"])),
    ("lmstudio", "/api/v0/chat/completions", {"model": "split", "messages": HI},
     lambda body: (body["error"]["code"], body["error"]["message"])),
    ("lmstudio", "/api/v1/models/load", {"model": "split"},
     lambda body: (body["error"]["code"], body["error"]["message"])),
    ("ollama", "/api/chat", {"model": "split", "messages": HI},
     lambda body: ("rpc_worker_unavailable", body["error"])),
    ("ollama", "/api/generate", {"model": "split", "prompt": "hi", "stream": False},
     lambda body: ("rpc_worker_unavailable", body["error"])),
    ("ollama", "/v1/messages", {"model": "split", "messages": HI, "max_tokens": 8},
     lambda body: ("rpc_worker_unavailable" if body["error"]["type"] == "api_error"
                   else body["error"]["type"], body["error"]["message"])),
]


@pytest.mark.parametrize(("api", "path", "body", "read"), SHAPES,
                         ids=[f"{api}{path}" for api, path, _b, _r in SHAPES])
async def test_a_dead_worker_is_a_503_naming_it_in_each_api_s_shape(
        split, api: str, path: str, body: dict[str, Any], read: Any) -> None:  # type: ignore[no-untyped-def]
    running, worker, dead, record = split
    status, answer = await post(url(running, api), path, body)
    assert status == 503, answer
    code, message = read(answer)
    assert code == "rpc_worker_unavailable"
    assert f"RPC worker {dead} is down (connection refused" in message
    assert "llamarunner worker" in message
    assert worker.address not in message  # the live one is not blamed
    assert not record.exists()  # no llama-server was started


async def test_nothing_starts_other_models_work_and_the_next_request_checks_again(
        split) -> None:  # type: ignore[no-untyped-def]
    running, worker, dead, record = split
    service = running.service
    status, _ = await post(running.base_url, "/v1/chat/completions",
                           {"model": "split", "messages": HI})
    assert status == 503
    info = next(i for i in service.manager.snapshot() if i.name == "split")
    assert info.state == "failed" and info.pid is None
    assert info.last_error is not None and dead in info.last_error
    states = {s.address: s.state for s in service.rpc_workers()}
    assert states == {worker.address: WorkerState.UP, dead: WorkerState.DOWN}
    # The app lives on.
    status, _ = await post(running.base_url, "/v1/chat/completions",
                           {"model": "plain", "messages": HI})
    assert status == 200
    # The worker comes up: the next request starts the model, split over both.
    port = int(dead.rpartition(":")[2])
    async with FakeRpcWorker(port=port):
        status, _ = await post(running.base_url, "/v1/chat/completions",
                               {"model": "split", "messages": HI})
        assert status == 200
        argv = json.loads(record.read_text())["argv"]
        assert argv[argv.index("--rpc") + 1] == f"{worker.address},{dead}"
        runner = service.manager.runner("split")
        assert runner is not None
        described = list(runner.describe_argv())
        assert described[described.index("--rpc") + 1] == f"{worker.address},{dead}"
        assert {s.address: s.state for s in service.rpc_workers()}[dead] is WorkerState.UP


async def test_a_worker_that_is_not_rpc_or_busy_is_named_too(
        write_config, start_service, fake_bin) -> None:  # type: ignore[no-untyped-def]
    async with FakeRpcWorker("http") as web, FakeRpcWorker("silent") as silent:
        config = write_config({"split": {"path": str(fake_bin),
                                         "rpc": [web.address, silent.address]}},
                              runtime=fake_bin)
        running = await start_service(config)
        status, body = await post(running.base_url, "/v1/chat/completions",
                                  {"model": "split", "messages": HI})
    assert status == 503
    message = body["error"]["message"]
    assert f"{web.address} is not-rpc (it answered, but not as a llama.cpp RPC worker" in message
    assert f"{silent.address} is busy" in message


async def test_the_workers_of_every_model_are_listed_with_their_models(
        write_config, start_service, fake_bin) -> None:  # type: ignore[no-untyped-def]
    async with FakeRpcWorker() as shared:
        config = write_config({"a": {"path": str(fake_bin), "rpc": [shared.address]},
                               "b": {"path": str(fake_bin), "rpc": [shared.address]},
                               "c": {"path": str(fake_bin)}}, runtime=fake_bin,
                              scheduler={"max_loaded_models": 2})
        running = await start_service(config)
        statuses = await running.service.refresh_rpc_workers()
        assert [(s.address, s.state, s.models) for s in statuses] == [
            (shared.address, WorkerState.UP, ("a", "b"))]
        # Loaded, `a` holds the worker: `b` is refused by name rather than left to hang
        # (a real worker would not answer b's llama-server while it serves a's).
        status, _ = await post(running.base_url, "/v1/chat/completions",
                               {"model": "a", "messages": HI})
        assert status == 200
        status, body = await post(running.base_url, "/v1/chat/completions",
                                  {"model": "b", "messages": HI})
        assert status == 503
        assert "in use by model 'a' of this app" in body["error"]["message"]
        # With room for one model only, `a` is unloaded first and `b` gets the worker.
        await running.service.apply_config(dataclasses.replace(
            running.service.config, scheduler=dataclasses.replace(
                running.service.config.scheduler, max_loaded_models=1)))
        status, _ = await post(running.base_url, "/v1/chat/completions",
                               {"model": "b", "messages": HI})
        assert status == 200
