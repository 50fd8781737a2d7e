"""An unexpected failure in a route is a 500 in the API's shape, with nothing leaked."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from llamarunner.proxy.errors import error_middleware, render_openai
from llamarunner.proxy.ollama.errors import render_ollama_port


async def _broken(_request: web.Request) -> web.Response:
    raise RuntimeError("secret detail from /home/user/models/x.gguf")


async def test_a_bug_is_500_without_its_details() -> None:
    for render, path, shape in ((render_openai, "/v1/chat/completions", "openai"),
                                (render_ollama_port, "/api/chat", "ollama")):
        app = web.Application(middlewares=[error_middleware(render)])
        app.router.add_post(path, _broken)
        async with TestClient(TestServer(app)) as client:
            resp = await client.post(path, json={})
            body = await resp.json()
        assert resp.status == 500
        if shape == "openai":
            assert body["error"]["message"] == "internal server error"
            assert body["error"]["type"] == "server_error"
        else:
            assert body == {"error": "internal server error"}
        assert "secret" not in str(body)
