"""The tiny model split over two real RPC workers on loopback, with the real clients.

One worker is `llamarunner worker` itself, the other ggml-rpc-server run directly; the
model's llama-server gets `--rpc A,B` and places its layers on them. A dead worker fails
the next start with a 503 naming it, in OpenAI's shape and in Ollama's; other models keep
working.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import ollama
import openai
import psutil
import pytest
from tests.support.both_listeners import MODEL_ARGS, both_ports, url_of
from tests.support.rpc_worker import free_port

from llamarunner.rpc.probe import WorkerState, probe_worker
from llamarunner.runtime.rpc_server import find_rpc_server

pytestmark = pytest.mark.skipif(os.name == "nt", reason="signals and process groups")

HI = [{"role": "user", "content": "hello"}]
READY_S = 30.0


class Worker:
    """One RPC worker process on 127.0.0.1 and everything it printed."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port
        self.lines: list[str] = []
        self._reader = asyncio.ensure_future(self._read())

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())

    async def until(self, text: str) -> str:
        for _ in range(int(READY_S / 0.05)):
            found = next((line for line in self.lines if text in line), None)
            if found is not None:
                return found
            if self.process.returncode is not None:
                break
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {text!r} from the worker; it printed: {self.lines}")

    async def until_up(self) -> None:
        for _ in range(int(READY_S / 0.05)):
            if (await probe_worker(self.address, 1.0)).state is WorkerState.UP:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.address} never answered; it printed: {self.lines}")

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
        code = await asyncio.wait_for(self.process.wait(), 15)
        await self._reader
        return code


async def start_command_worker(port: int) -> Worker:
    """`llamarunner worker` itself, as a user runs it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llamarunner", "worker", "--port", str(port), "--threads", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    return Worker(process, port)


async def start_binary_worker(port: int) -> Worker:
    """ggml-rpc-server run directly, as `llamarunner worker` runs it."""
    process = await asyncio.create_subprocess_exec(
        str(find_rpc_server()), "-H", "127.0.0.1", "-p", str(port), "-t", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    return Worker(process, port)


@pytest.fixture
async def workers(llama_server_bin: Path) -> AsyncIterator[tuple[Worker, Worker]]:
    del llama_server_bin  # the RPC server is found beside it
    a = await start_command_worker(free_port())
    b = await start_binary_worker(free_port())
    try:
        await a.until("is ready on")
        await b.until_up()
        yield a, b
    finally:
        for worker in (a, b):
            await worker.stop(signal.SIGKILL if worker is b else signal.SIGTERM)


@pytest.fixture
async def split_service(write_config, start_service, llama_server_bin, tiny_model,
                        tiny_model_b, workers):  # type: ignore[no-untyped-def]
    a, b = workers
    config = write_config(
        {"tiny": {"path": str(tiny_model), "rpc": [a.address, b.address],
                  # -lv 4: llama-server logs where each buffer went (RPC0[host:port]...).
                  "args": {**MODEL_ARGS, "log-verbosity": 4}},
         "plain": {"path": str(tiny_model_b), "args": MODEL_ARGS}},
        runtime=llama_server_bin, proxies=both_ports())
    return await start_service(config), a, b


def _openai(running: Any, api: str = "lmstudio") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url_of(running, api)}/v1", api_key="none",
                              max_retries=0)


async def test_split_over_two_workers_answers_and_a_dead_worker_is_named(
        split_service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    running, a, b = split_service
    service = running.service
    client = _openai(running)
    reply = await client.chat.completions.create(model="tiny", messages=HI, max_tokens=8,
                                                 temperature=0)
    assert reply.choices[0].message.content
    runner = service.manager.runner("tiny")
    assert runner is not None
    argv = list(runner.describe_argv())
    assert argv[argv.index("--rpc") + 1] == f"{a.address},{b.address}"
    # The layers really went to the workers, not to this process's CPU backend.
    log = (tmp_path / "runners" / "tiny.log").read_text()
    assert f"RPC0[{a.address}] model buffer size" in log
    assert f"using device RPC1 ({b.address})" in log

    # Both workers listed, each used by `tiny`; busy while its llama-server holds them.
    statuses = {s.address: s for s in await service.refresh_rpc_workers()}
    assert set(statuses) == {a.address, b.address}
    assert all(s.models == ("tiny",) for s in statuses.values())
    assert statuses[b.address].state is WorkerState.BUSY
    assert "in use by model 'tiny'" in (statuses[b.address].reason or "")

    # B dies; the model is unloaded; the next start is refused at once, naming B.
    await b.stop(signal.SIGKILL)
    await service.manager.unload("tiny")
    with pytest.raises(openai.APIStatusError) as info:
        await client.chat.completions.create(model="tiny", messages=HI, max_tokens=8)
    error = info.value
    assert error.status_code == 503
    assert isinstance(error.body, dict) and error.body["code"] == "rpc_worker_unavailable"
    assert f"RPC worker {b.address} is down (connection refused" in error.message
    assert a.address not in error.message.split("To fix")[0]
    # The same, in Ollama's shape, through the official client on the Ollama port.
    with pytest.raises(ollama.ResponseError) as ollama_info:
        await ollama.AsyncClient(host=url_of(running, "ollama")).chat(
            model="tiny", messages=HI, options={"num_predict": 8})
    assert ollama_info.value.status_code == 503
    assert f"RPC worker {b.address} is down" in ollama_info.value.error
    assert {s.address: s.state for s in service.rpc_workers()}[b.address] is WorkerState.DOWN

    # The app lives on: another model answers on both ports.
    reply = await client.chat.completions.create(model="plain", messages=HI, max_tokens=4)
    assert reply.choices[0].message.content
    answer = await ollama.AsyncClient(host=url_of(running, "ollama")).chat(
        model="plain", messages=HI, options={"num_predict": 4})
    assert answer.message.content


async def test_a_worker_that_dies_under_a_loaded_model(
        split_service) -> None:  # type: ignore[no-untyped-def]
    running, a, b = split_service
    service = running.service
    client = _openai(running)
    reply = await client.chat.completions.create(model="tiny", messages=HI, max_tokens=4)
    assert reply.choices[0].message.content
    await b.stop(signal.SIGKILL)
    # llama-server aborts on its next use of the worker: that request fails...
    with pytest.raises(openai.APIError):
        await client.chat.completions.create(model="tiny", messages=HI, max_tokens=4)
    runner = service.manager.runner("tiny")
    assert runner is not None
    for _ in range(200):
        if runner.state.value == "failed":
            break
        await asyncio.sleep(0.05)
    assert runner.state.value == "failed"
    assert runner.last_error is not None
    assert f"split over the RPC workers {a.address}, {b.address}" in runner.last_error.message
    # ...and the next one is refused before anything starts, naming the dead worker.
    with pytest.raises(openai.APIStatusError) as info:
        await client.chat.completions.create(model="tiny", messages=HI, max_tokens=4)
    assert info.value.status_code == 503
    assert f"RPC worker {b.address} is down" in info.value.message


async def test_the_worker_command_stops_cleanly_on_sigterm(llama_server_bin: Path) -> None:
    del llama_server_bin
    worker = await start_command_worker(free_port())
    ready = await worker.until("is ready on")
    child = int(ready.split("(pid ")[1].split(")")[0])
    assert psutil.Process(child).name() == "ggml-rpc-server"
    assert (await probe_worker(worker.address)).state is WorkerState.UP
    assert await worker.stop(signal.SIGTERM) == 0
    assert worker.lines[-1] == "llamarunner worker: stopped"
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    assert (await probe_worker(worker.address)).state is WorkerState.DOWN
