"""Stand-ins for llama.cpp RPC workers on loopback, and a free port nobody listens on.

`FakeRpcWorker` answers the HELLO handshake as ggml-rpc-server 7.0.0 does (recorded from
the real one: a u64 size of 28, then 7, 0, 0, padding and 24 zero capability bytes), or
misbehaves as other listeners do: never answering, answering HTTP, hanging up at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from types import TracebackType
from typing import Literal

Mode = Literal["rpc", "silent", "http", "hangup"]

HELLO_REQUEST_SIZE = 1 + 8 + 24


def free_port() -> int:
    """A loopback port that nothing listens on (just bound and closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def hello_reply(major: int = 7, minor: int = 0, patch: int = 0) -> bytes:
    return struct.pack("<Q", 28) + bytes([major, minor, patch, 0]) + bytes(24)


class FakeRpcWorker:
    """A listener on 127.0.0.1 that plays an RPC worker (or something else) per `mode`."""

    def __init__(self, mode: Mode = "rpc", *, port: int = 0,
                 version: tuple[int, int, int] = (7, 0, 0)) -> None:
        self.mode = mode
        self.version = version
        self._port = port
        self._server: asyncio.Server | None = None
        self.requests: list[bytes] = []  # what each client sent before we answered
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        """The port it listens on (or listened on, once stopped)."""
        assert self._port, "not started"
        return self._port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> FakeRpcWorker:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self._port)
        self._port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FakeRpcWorker:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if self.mode == "hangup":
                return
            data = b""
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                data = await reader.readexactly(HELLO_REQUEST_SIZE)
            self.requests.append(data)
            if self.mode == "silent":
                await reader.read()  # until the client gives up
                return
            if self.mode == "http":
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")
            else:
                writer.write(hello_reply(*self.version))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
                await reader.read()  # an RPC server waits for the next command
        finally:
            self._writers.discard(writer)
            writer.close()
