"""The lean upstream client against a tiny in-process server that plays raw HTTP bytes."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from llamarunner.core.errors import UpstreamError
from llamarunner.proxy.relay import open_upstream
from llamarunner.proxy.upstream import UpstreamPool, parse_head, pool_for

# A script gets each request (head and body as bytes) and the writer; it answers or not.
Script = Callable[[bytes, asyncio.StreamWriter], Any]


class RawServer:
    """Reads whole requests (Content-Length bodies) and hands each to the script."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.reader: asyncio.StreamReader | None = None  # the latest connection's

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                     ) -> None:
        self.connections += 1
        self.reader = reader
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                if await self.script(request, writer) == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Script], RawServer]]:
    servers: list[RawServer] = []

    def start(script: Script) -> RawServer:
        raw = RawServer(script)
        servers.append(raw)
        return raw

    yield start
    for raw in servers:
        if raw.server is not None:
            raw.server.close()


async def started(serve: Callable[[Script], RawServer], script: Script) -> RawServer:
    raw = serve(script)
    raw.server = await asyncio.start_server(raw._serve, "127.0.0.1", 0)
    return raw


def answer(data: bytes, *, close: bool = False) -> Script:
    async def script(_: bytes, writer: asyncio.StreamWriter) -> str | None:
        writer.write(data)
        await writer.drain()
        return "close" if close else None
    return script


OK_JSON = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
           b"Content-Length: 11\r\n\r\n{\"a\": true}")


async def test_a_content_length_body_is_read_and_the_connection_reused(serve: Any) -> None:
    raw = await started(serve, answer(OK_JSON))
    pool = UpstreamPool()
    for _ in range(3):
        resp = await pool.post(raw.base_url, "/x", b'{"q": 1}', {"Authorization": "Bearer k"})
        assert (resp.status, resp.content_type) == (200, "application/json")
        assert await resp.json() == {"a": True}
        resp.close()
    assert raw.connections == 1
    head = raw.requests[0].decode()
    assert head.startswith("POST /x HTTP/1.1\r\n")
    assert "\r\nAuthorization: Bearer k\r\n" in head and head.endswith('\r\n\r\n{"q": 1}')
    assert "\r\nContent-Type: application/json\r\n" in head
    pool.close()


async def test_chunked_pieces_come_as_they_arrive_and_the_ending_is_found(serve: Any) -> None:
    gate = asyncio.Event()

    async def script(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await gate.wait()
        # Two chunks in one write, one split over two writes, an extension, trailers.
        writer.write(b"1;ext=1\r\n \r\n6\r\nworld!\r\n3\r\nab")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"c\r\n0\r\nX-Trailer: 1\r\n\r\n")
        await writer.drain()

    raw = await started(serve, script)
    pool = UpstreamPool()
    resp = await pool.post(raw.base_url, "/s", b"{}", {})
    assert resp.content_type == "text/event-stream"
    assert await resp.content.readany() == b"hello"
    gate.set()
    rest = []
    while chunk := await resp.content.readany():
        rest.append(chunk)
    assert b"".join(rest) == b" world!abc"
    assert rest[0].startswith(b" world!")  # everything that came in one read, in one piece
    resp.close()
    gate.clear()
    # Read to its end: the connection is reused.
    again = await pool.post(raw.base_url, "/s", b"{}", {})
    assert await again.content.readany() == b"hello"
    again.close()  # not read to its end: closed, not reused
    assert raw.connections == 1
    third = await pool.post(raw.base_url, "/s", b"{}", {})
    third.close()
    assert raw.connections == 2
    pool.close()


async def test_connection_close_is_honoured_and_a_body_can_end_with_it(serve: Any) -> None:
    raw = await started(serve, answer(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
        b"[1, 2]", close=True))
    pool = UpstreamPool()
    for _ in range(2):
        resp = await pool.post(raw.base_url, "/x", b"{}", {})
        assert await resp.read() == b"[1, 2]"
        resp.close()
    assert raw.connections == 2


async def test_a_body_cut_short_is_a_payload_error(serve: Any) -> None:
    raw = await started(serve, answer(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ndata\r\n5\r\nab",
        close=True))
    pool = UpstreamPool()
    resp = await pool.post(raw.base_url, "/x", b"{}", {})
    assert await resp.content.readany() == b"dataab"  # all that came, in one piece
    with pytest.raises(aiohttp.ClientPayloadError, match="before the end of the response"):
        await resp.content.readany()


async def test_a_pooled_connection_found_dead_is_retried_on_a_fresh_one(serve: Any) -> None:
    # Like llama-server after a streamed answer: it closes the connection without saying so.
    async def script(_: bytes, writer: asyncio.StreamWriter) -> str:
        writer.write(OK_JSON)
        await writer.drain()
        return "close"

    raw = await started(serve, script)
    pool = UpstreamPool()
    for _ in range(3):
        resp = await pool.post(raw.base_url, "/x", b"{}", {})
        assert await resp.read() == b'{"a": true}'
        await asyncio.sleep(0.01)  # the close may or may not have been seen yet
    assert raw.connections == 3
    assert len(raw.requests) == 3


async def test_a_reused_connection_dying_before_the_answer_is_retried_once(serve: Any) -> None:
    # The close arrives only after our request went out on the kept connection.
    calls = 0

    async def script(_: bytes, writer: asyncio.StreamWriter) -> str | None:
        nonlocal calls
        calls += 1
        if calls == 2:
            return "close"  # read the request, then hang up without a byte
        writer.write(OK_JSON)
        await writer.drain()
        return None

    raw = await started(serve, script)
    pool = UpstreamPool()
    first = await pool.post(raw.base_url, "/x", b"{}", {})
    await first.read()
    second = await pool.post(raw.base_url, "/x", b"{}", {})
    assert await second.read() == b'{"a": true}'
    assert (raw.connections, calls) == (2, 3)
    pool.close()


async def test_a_fresh_connection_closed_without_an_answer_is_not_retried(serve: Any) -> None:
    raw = await started(serve, lambda _r, _w: asyncio.sleep(0, "close"))
    pool = UpstreamPool()
    with pytest.raises(aiohttp.ServerDisconnectedError, match="without answering"):
        await pool.post(raw.base_url, "/x", b"{}", {})
    assert raw.connections == 1


async def test_bytes_then_a_close_are_never_retried(serve: Any) -> None:
    raw = await started(serve, answer(b"HTTP/1.1 200 OK\r\nContent-Le", close=True))
    pool = UpstreamPool()
    with pytest.raises(aiohttp.ServerDisconnectedError, match="middle of its response"):
        await pool.post(raw.base_url, "/x", b"{}", {})
    assert raw.connections == 1


class Owner:
    """Stands in for the service's aiohttp session: what a pool goes with."""


def lease(base_url: str, timeout: float = math.inf) -> Any:
    return SimpleNamespace(base_url=base_url, headers={"Authorization": "Bearer k"},
                           first_token_timeout=timeout, runner=SimpleNamespace(name="m"),
                           remote=None)


async def test_open_upstream_reports_an_unreachable_runner() -> None:
    probe = await asyncio.start_server(lambda _r, _w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    owner = Owner()
    with pytest.raises(UpstreamError, match="cannot reach llama-server for model 'm'"):
        await open_upstream(owner, lease(f"http://127.0.0.1:{port}"), "/x", b"{}")  # type: ignore[arg-type]


async def test_the_watchdog_closes_a_silent_runners_connection(serve: Any) -> None:
    hung_up = asyncio.Event()

    async def silent(_: bytes, __: asyncio.StreamWriter) -> str:
        assert raw.reader is not None
        assert await raw.reader.read() == b""  # nothing sent until our side closed
        hung_up.set()
        return "close"

    raw = await started(serve, silent)
    owner = Owner()
    with pytest.raises(UpstreamError, match="produced no output"):
        await open_upstream(owner, lease(raw.base_url, 0.05), "/x", b"{}")  # type: ignore[arg-type]
    await asyncio.wait_for(hung_up.wait(), 5)  # how llama-server learns to stop
    assert pool_for(owner)._idle == {}


@pytest.mark.parametrize(("head", "status", "headers"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2", 200, {"content-length": "2"}),
    (b"HTTP/1.1 404 Not Found\r\nX-A:b", 404, {"x-a": "b"}),
    (b"HTTP/1.0 200 OK", 200, {"connection": "close"}),
    (b"HTTP/1.0 200 OK\r\nConnection: keep-alive", 200, {"connection": "keep-alive"}),
])
def test_parse_head(head: bytes, status: int, headers: dict[str, str]) -> None:
    assert parse_head(head) == (status, headers)


def test_parse_head_rejects_what_is_not_http() -> None:
    with pytest.raises(aiohttp.ClientError, match="not an HTTP/1 status line"):
        parse_head(b"SSH-2.0-OpenSSH")


@pytest.mark.parametrize("url", ["https://127.0.0.1:1", "http://127.0.0.1", "127.0.0.1:5"])
def test_a_runner_address_must_be_plain_http_with_a_port(url: str) -> None:
    with pytest.raises(ValueError, match="must be http://host:port"):
        UpstreamPool().target(url)


def test_the_client_works_on_uvloop_as_the_headless_app_runs() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> bytes:
        raw = RawServer(answer(OK_JSON))
        raw.server = await asyncio.start_server(raw._serve, "127.0.0.1", 0)
        pool = UpstreamPool()
        try:
            resp = await pool.post(raw.base_url, "/x", b"{}", {})
            return await resp.read()
        finally:
            pool.close()
            raw.server.close()

    assert uvloop.run(main()) == b'{"a": true}'
