"""The body guard in front of every route: what reaches the handler, what is refused."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from llamarunner.config.schema import SecurityConfig
from llamarunner.core.errors import LlamaRunnerError
from llamarunner.proxy.security import install_security

Serve = Callable[..., Awaitable[str]]


def render(request: web.Request, status: int, message: str,
           exc: LlamaRunnerError | None) -> web.Response:
    return web.json_response({"error": message}, status=status)


def unauthorized(request: web.Request, message: str) -> web.Response:
    return web.json_response({"error": message}, status=401)


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response({"size": len(body), "text": body.decode("utf-8", "replace")})


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[TestServer] = []

    async def start(limit: int, *, app_limit: int = 1 << 20) -> str:
        security = SecurityConfig(max_body_bytes=limit, body_timeout=5.0)
        app = web.Application(client_max_size=app_limit)
        install_security(app, render, unauthorized, (), settings=lambda request: security)
        app.router.add_post("/echo", echo)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/echo"))

    yield start
    for server in servers:
        await server.close()


async def post(url: str, data: object, headers: dict[str, str] | None = None,
               ) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession(trust_env=False) as http, \
            http.post(url, data=data, headers=headers or {}) as resp:
        return resp.status, json.loads(await resp.read())


async def test_a_whole_small_body_reaches_the_handler_as_sent(serve: Serve) -> None:
    url = await serve(1024)
    sent = json.dumps({"model": "m", "messages": [{"role": "user", "content": "héllo"}]})
    status, body = await post(url, sent.encode())
    assert status == 200 and body == {"size": len(sent.encode()), "text": sent}


async def test_a_body_at_the_limit_passes_and_one_byte_more_does_not(serve: Serve) -> None:
    url = await serve(1024)
    assert (await post(url, b"x" * 1024))[0] == 200
    status, body = await post(url, b"x" * 1025)
    assert status == 413 and "1024 bytes" in str(body["error"])


async def test_a_compressed_body_is_measured_after_inflating(serve: Serve) -> None:
    # 3 KiB of zeros compress to a few dozen bytes: the length on the wire passes, the
    # body the handler would see does not.
    url = await serve(2048)
    headers = {"Content-Encoding": "gzip"}
    status, body = await post(url, gzip.compress(b"0" * 3072), headers)
    assert status == 413 and "security.max_body_bytes" in str(body["error"])
    status, body = await post(url, gzip.compress(b"0" * 2000), headers)
    assert status == 200 and body["size"] == 2000


async def test_a_limit_above_the_apps_own_cap_still_admits_bodies_up_to_it(
    serve: Serve,
) -> None:
    url = await serve(64 * 1024, app_limit=16 * 1024)
    status, body = await post(url, b"y" * (32 * 1024))
    assert status == 200 and body["size"] == 32 * 1024


async def test_a_chunked_body_is_read_under_the_limit(serve: Serve) -> None:
    async def chunks(n: int) -> AsyncIterator[bytes]:
        for _ in range(n):
            yield b"z" * 256
            await asyncio.sleep(0)

    url = await serve(1024)
    status, body = await post(url, chunks(3))
    assert status == 200 and body["size"] == 768
    status, _ = await post(url, chunks(8))
    assert status == 413
