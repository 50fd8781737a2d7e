"""Probing an RPC worker: a real handshake, and every other kind of listener (or none)."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Any

import pytest
from tests.support.rpc_worker import FakeRpcWorker, free_port, hello_reply

from llamarunner.rpc import probe as probe_module
from llamarunner.rpc.probe import (
    WorkerState,
    hello_request,
    parse_hello_reply,
    probe_worker,
    split_address,
)


def test_hello_request_is_ggml_s_wire_format() -> None:
    # ggml-rpc.cpp: | cmd (1 byte) | size (u64 LE) | rpc_msg_hello_req (24 zero bytes) |
    assert hello_request() == bytes([14]) + struct.pack("<Q", 24) + bytes(24)


@pytest.mark.parametrize(
    ("data", "version"),
    [(hello_reply(7, 0, 0), (7, 0, 0)), (hello_reply(7, 2, 5) + b"extra", (7, 2, 5))],
)
def test_hello_reply_parses(data: bytes, version: tuple[int, int, int]) -> None:
    assert parse_hello_reply(data) == version


@pytest.mark.parametrize("data", [b"", b"\x1c\x00", b"HTTP/1.1 400 Bad Request\r\n\r\n",
                                  struct.pack("<Q", 3) + bytes([3, 0, 0]),  # protocol v3
                                  hello_reply()[:20]])
def test_anything_else_is_not_a_hello_reply(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_hello_reply(data)


@pytest.mark.parametrize(
    ("address", "parts"),
    [("10.0.0.5:50052", ("10.0.0.5", 50052)), ("gpu-box:1", ("gpu-box", 1)),
     ("[::1]:50052", ("::1", 50052))],
)
def test_split_address(address: str, parts: tuple[str, int]) -> None:
    assert split_address(address) == parts


@pytest.mark.parametrize("address", ["10.0.0.5", "host:", ":50052", "host:0", "host:70000",
                                     "host:port"])
def test_split_address_refuses(address: str) -> None:
    with pytest.raises(ValueError):
        split_address(address)


async def test_a_worker_that_answers_hello_is_up_and_the_probe_hangs_up() -> None:
    async with FakeRpcWorker() as worker:
        started = time.time()
        result = await probe_worker(worker.address)
        assert result.state is WorkerState.UP and result.up
        assert result.version == "7.0.0"
        assert result.reason == "RPC protocol 7.0.0"
        assert result.checked_at >= started - 1
        assert worker.requests == [hello_request()]
        # An RPC server serves nobody else while a client is connected: we must have left.
        for _ in range(100):
            if not worker._writers:
                break
            await asyncio.sleep(0.01)
        assert not worker._writers


async def test_another_major_version_is_up_with_a_warning() -> None:
    async with FakeRpcWorker(version=(3, 0, 0)) as worker:
        result = await probe_worker(worker.address)
    assert result.state is WorkerState.UP
    assert result.version == "3.0.0"
    assert "7.x" in result.reason and "refuses" in result.reason


async def test_a_closed_port_is_down_at_once() -> None:
    port = free_port()
    started = time.monotonic()
    result = await probe_worker(f"127.0.0.1:{port}")
    assert time.monotonic() - started < 1
    assert result.state is WorkerState.DOWN
    assert result.reason == f"connection refused: nothing listens on port {port} there"


async def test_a_web_server_is_not_an_rpc_worker() -> None:
    async with FakeRpcWorker("http") as worker:
        result = await probe_worker(worker.address)
    assert result.state is WorkerState.NOT_RPC
    assert "not as a llama.cpp RPC worker" in result.reason


async def test_a_listener_that_hangs_up_is_not_an_rpc_worker() -> None:
    async with FakeRpcWorker("hangup") as worker:
        result = await probe_worker(worker.address)
    assert result.state is WorkerState.NOT_RPC
    assert "closed the connection without answering" in result.reason


async def test_a_silent_listener_is_busy_after_the_timeout() -> None:
    async with FakeRpcWorker("silent") as worker:
        started = time.monotonic()
        result = await probe_worker(worker.address, 0.3)
        elapsed = time.monotonic() - started
    assert 0.2 < elapsed < 2
    assert result.state is WorkerState.BUSY
    assert "serves one at a time" in result.reason


async def test_without_handshake_a_connection_is_enough() -> None:
    async with FakeRpcWorker("silent") as worker:
        result = await probe_worker(worker.address, handshake=False)
        await asyncio.sleep(0.05)
        assert worker.requests == [b""]  # connected, sent nothing, hung up
    assert result.state is WorkerState.BUSY


async def test_no_connection_in_time_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    async def never(*_args: Any, **_kwargs: Any) -> Any:
        await asyncio.sleep(3600)

    monkeypatch.setattr(probe_module.asyncio, "open_connection", never)
    started = time.monotonic()
    result = await probe_worker("10.0.0.5:50052", 0.2)
    assert time.monotonic() - started < 1
    assert result.state is WorkerState.DOWN
    assert result.reason.startswith("no connection within 0.2s")


async def test_an_unknown_host_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    async def unknown(*_args: Any, **_kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(probe_module.asyncio, "open_connection", unknown)
    result = await probe_worker("gpu-box:50052")
    assert result.state is WorkerState.DOWN
    assert result.reason == "cannot resolve host 'gpu-box' (Name or service not known)"


async def test_a_malformed_address_is_down_not_raised() -> None:
    result = await probe_worker("gpu-box")
    assert result.state is WorkerState.DOWN and "host:port" in result.reason
