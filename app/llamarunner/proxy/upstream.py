"""A lean HTTP/1.1 client for POSTs to our own llama-server children on loopback.

Every proxied request goes through here, so it does the least that is correct: one
asyncio Protocol per keep-alive connection, a request written in one call, the status
line and headers parsed once, and a body read straight from the connection's buffer
(Content-Length, chunked, or up to the close). aiohttp's general-purpose client cost
about twice as much CPU per request for the same work. Health checks and other GETs stay
on aiohttp.

Failures are raised as aiohttp's exception classes (ClientConnectionError,
ServerDisconnectedError, ClientPayloadError) so callers treat both clients alike.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final, Protocol, cast

import aiohttp

# llama-server drops idle keep-alive connections after 5 s; reuse ours only sooner.
IDLE_REUSE_S: Final = 4.0
CONNECT_TIMEOUT_S: Final = 10.0
# A status line and headers longer than this are not llama-server's.
_MAX_HEAD: Final = 64 * 1024
# Stop reading from the socket while this much body waits for a slow consumer.
_HIGH_WATER: Final = 1024 * 1024


class UpstreamResponse(Protocol):
    """What the relays use of an upstream answer; aiohttp's ClientResponse has it too."""

    @property
    def status(self) -> int: ...

    @property
    def content_type(self) -> str: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def content(self) -> BodyReader: ...

    async def read(self) -> bytes: ...

    def close(self) -> None: ...


class BodyReader(Protocol):
    async def readany(self) -> bytes: ...


class _Connection(asyncio.Protocol):
    """One keep-alive connection: received bytes wait in `buf` for the response reader."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.closed = False
        self.error: Exception | None = None
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have the methods without being asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def more(self) -> bool:
        """Wait for more bytes; False when the connection has ended and none will come."""
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        if self.closed:
            return False
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None
        return bool(self.buf) or not self.closed

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _StaleConnectionError(Exception):
    """A reused connection ended before any byte of the answer: the request can go again."""


JSON: Final = "application/json"


class UpstreamPool:
    """Keep-alive connections to the children, per (host, port)."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._targets: dict[str, tuple[str, int]] = {}

    def target(self, base_url: str) -> tuple[str, int]:
        """(host, port) of an `http://host:port` base URL, parsed once per runner."""
        found = self._targets.get(base_url)
        if found is None:
            scheme, _, hostport = base_url.partition("://")
            host, _, port = hostport.rstrip("/").rpartition(":")
            if scheme != "http" or not host or not port.isdigit():
                raise ValueError(f"a runner address must be http://host:port, not {base_url!r}")
            found = self._targets[base_url] = (host.strip("[]"), int(port))
        return found

    async def post(self, base_url: str, path: str, body: bytes,
                   headers: Mapping[str, str], content_type: str = JSON) -> Response:
        """POST `body` (JSON unless told) and return once the status line and headers are in.

        A pooled connection that turns out closed before any byte of the answer came is
        retried once on a fresh connection; once answer bytes came, nothing is retried.
        """
        host, port = self.target(base_url)
        request = _request_head(host, port, path, len(body), headers, content_type) + body
        conn = self._take_idle((host, port))
        if conn is not None:
            try:
                return await self._exchange(conn, (host, port), request, reused=True)
            except _StaleConnectionError:
                pass
        conn = await self._connect(host, port)
        return await self._exchange(conn, (host, port), request, reused=False)

    async def _exchange(self, conn: _Connection, key: tuple[str, int], request: bytes,
                        *, reused: bool) -> Response:
        try:
            assert conn.transport is not None
            conn.transport.write(request)
            status, headers = await _read_head(conn, reused=reused)
            return Response(self, conn, key, status, headers)
        except BaseException:
            # Cancellation (the first-byte watchdog, a client gone) closes the socket:
            # that is how llama-server learns to drop the task.
            conn.close()
            raise

    def _take_idle(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle:
            conn = idle.pop()
            if not conn.closed and not conn.buf and now - conn.idle_since < IDLE_REUSE_S:
                return conn
            conn.close()
        return None

    async def _connect(self, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                _, conn = await loop.create_connection(_Connection, host, port)
        except TimeoutError:
            raise aiohttp.ClientConnectionError(
                f"connecting to {host}:{port} took over {CONNECT_TIMEOUT_S:g} s") from None
        except OSError as exc:
            raise aiohttp.ClientConnectionError(
                f"cannot connect to {host}:{port}: {exc.strerror or exc}") from exc
        return conn

    def give_back(self, key: tuple[str, int], conn: _Connection) -> None:
        conn.idle_since = asyncio.get_running_loop().time()
        self._idle.setdefault(key, []).append(conn)

    def close(self) -> None:
        """Close every idle connection (ones in use close when their answer ends)."""
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


def _request_head(host: str, port: int, path: str, length: int,
                  headers: Mapping[str, str], content_type: str = JSON) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}",
             f"Content-Type: {content_type}", f"Content-Length: {length}"]
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_head(conn: _Connection, *, reused: bool) -> tuple[int, dict[str, str]]:
    while True:
        end = conn.buf.find(b"\r\n\r\n")
        if end >= 0:
            break
        if len(conn.buf) > _MAX_HEAD:
            raise aiohttp.ClientConnectionError(
                "llama-server sent response headers over 64 KiB")
        if not await conn.more():
            if not conn.buf:
                if reused:
                    raise _StaleConnectionError
                raise aiohttp.ServerDisconnectedError(
                    "llama-server closed the connection without answering")
            raise aiohttp.ServerDisconnectedError(
                "llama-server closed the connection in the middle of its response headers")
    head = bytes(conn.buf[:end])
    del conn.buf[:end + 4]
    return parse_head(head)


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status code and headers (names lower-cased) of a response head without its CRLFCRLF."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise aiohttp.ServerDisconnectedError(f"not an HTTP/1 status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    if parts[0] == "HTTP/1.0":
        headers["connection"] = "close"  # unless the server says keep-alive below
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


_NO_BODY: Final = frozenset({204, 304})


class Response:
    """An answer from llama-server; its body is read from the connection as asked for.

    The connection goes back to the pool when the body has been read to its end and the
    server did not say `Connection: close`; `close()` before that closes it.
    """

    def __init__(self, pool: UpstreamPool, conn: _Connection, key: tuple[str, int],
                 status: int, headers: dict[str, str]) -> None:
        self.status = status
        self.headers: Mapping[str, str] = headers
        self._pool = pool
        self._conn: _Connection | None = conn
        self._key = key
        self._keep_alive = headers.get("connection", "").lower() != "close"
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self._left = -1  # body bytes still to come; -1 = up to the close
        self._chunk_left = 0  # chunked: data bytes left in the current chunk
        self._chunk_crlf = False  # chunked: the CRLF after a chunk's data is due
        self._done = False
        length = headers.get("content-length")
        if status in _NO_BODY or 100 <= status < 200:
            self._left = 0
        elif self._chunked:
            pass
        elif length is not None and length.isdigit():
            self._left = int(length)
        else:
            self._keep_alive = False  # the body ends with the connection
        if self._left == 0:
            self._finish()

    @property
    def content_type(self) -> str:
        value = self.headers.get("content-type")
        if not value:
            return "application/octet-stream"
        return value.partition(";")[0].strip().lower()

    @property
    def content(self) -> Response:
        return self

    async def readany(self) -> bytes:
        """The body bytes that have arrived (waiting for some); b"" at the end of the body."""
        while not self._done:
            conn = self._conn
            assert conn is not None
            data = self._take(conn)
            if data or self._done:
                return data
            if conn.closed:  # nothing more will come, and what is here is not enough
                if self._left < 0 and not self._chunked:
                    self._finish()  # a body that ends with the connection
                    return b""
                self._abandon()
                raise aiohttp.ClientPayloadError(
                    "llama-server closed the connection before the end of the response")
            await conn.more()
        return b""

    async def iter_any(self) -> AsyncIterator[bytes]:
        while chunk := await self.readany():
            yield chunk

    async def read(self) -> bytes:
        parts = []
        while chunk := await self.readany():
            parts.append(chunk)
        return b"".join(parts)

    async def json(self) -> Any:
        return json.loads(await self.read())

    def close(self) -> None:
        if not self._done:
            self._abandon()

    release = close

    def _take(self, conn: _Connection) -> bytes:
        if self._chunked:
            return self._take_chunked(conn.buf)
        buf = conn.buf
        if self._left < 0:
            data = bytes(buf)
            buf.clear()
            return data
        n = min(self._left, len(buf))
        data = bytes(buf[:n])
        del buf[:n]
        self._left -= n
        if self._left == 0:
            self._finish()
        return data

    def _take_chunked(self, buf: bytearray) -> bytes:
        """Decode every chunk (or part of one) in `buf` into one piece of body."""
        out: list[bytes] = []
        pos = 0
        size = len(buf)
        while True:
            if self._chunk_left:
                n = min(self._chunk_left, size - pos)
                if n == 0:
                    break
                out.append(bytes(buf[pos:pos + n]))
                pos += n
                self._chunk_left -= n
                if self._chunk_left:
                    break
                self._chunk_crlf = True
            if self._chunk_crlf:
                if size - pos < 2:
                    break
                if buf[pos:pos + 2] != b"\r\n":
                    raise self._bad_chunk("no CRLF after a chunk")
                pos += 2
                self._chunk_crlf = False
            end = buf.find(b"\r\n", pos)
            if end < 0:
                if size - pos > 1024:
                    raise self._bad_chunk("a chunk size line over 1 KiB")
                break
            line = bytes(buf[pos:end]).partition(b";")[0].strip()
            try:
                chunk_size = int(line, 16)
            except ValueError:
                raise self._bad_chunk(f"chunk size {line[:20]!r}") from None
            if chunk_size:
                pos = end + 2
                self._chunk_left = chunk_size
                continue
            # The last chunk: then trailer lines (skipped) up to an empty one.
            line_start = end + 2
            line_end = buf.find(b"\r\n", line_start)
            while line_end > line_start:
                line_start = line_end + 2
                line_end = buf.find(b"\r\n", line_start)
            if line_end < 0:
                break  # wait for the rest of the ending
            del buf[:line_end + 2]
            self._finish()
            return b"".join(out)
        del buf[:pos]
        return b"".join(out)

    def _bad_chunk(self, what: str) -> aiohttp.ClientPayloadError:
        self._abandon()
        return aiohttp.ClientPayloadError(f"llama-server sent a malformed chunked body: {what}")

    def _finish(self) -> None:
        self._done = True
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._keep_alive and not conn.closed and not conn.buf:
            self._pool.give_back(self._key, conn)
        else:
            conn.close()

    def _abandon(self) -> None:
        self._done = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


_pools: weakref.WeakKeyDictionary[object, UpstreamPool] = weakref.WeakKeyDictionary()


def pool_for(owner: object) -> UpstreamPool:
    """The connection pool that goes with `owner` (the service's aiohttp session)."""
    pool = _pools.get(owner)
    if pool is None:
        pool = _pools[owner] = UpstreamPool()
    return pool
