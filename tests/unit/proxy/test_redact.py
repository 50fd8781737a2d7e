"""File system paths taken out of error texts for callers on other machines."""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from llamarunner.core.errors import ModelNotFoundError, RunnerFailedError
from llamarunner.proxy.errors import error_middleware, render_openai
from llamarunner.proxy.ollama.errors import ollama_error, render_ollama_port
from llamarunner.proxy.redact import is_local_client, redact_error_response, redact_paths


@pytest.mark.parametrize(("text", "expected"), [
    # POSIX: the file's name stays, its folders go.
    ("failed to load model from /home/alice/models/x.gguf",
     "failed to load model from x.gguf"),
    ("gguf_init_from_file: failed to open GGUF file '/home/alice/models/x.gguf' (No such "
     "file or directory)",
     "gguf_init_from_file: failed to open GGUF file 'x.gguf' (No such file or directory)"),
    ("~/models/x.gguf is missing", "x.gguf is missing"),
    ("(/srv/models/x.gguf).", "(x.gguf)."),
    ("path=/srv/models/x.gguf, then", "path=x.gguf, then"),
    ("loaded CPU backend from /usr/lib/libggml-cpu.so", "loaded CPU backend from libggml-cpu.so"),
    ("error at /src/llama.cpp/ggml.c:123: assert", "error at ggml.c:123: assert"),
    # A folder, or a last part that is no file name, becomes the placeholder.
    ("folder /home/alice/ is empty", "folder <path> is empty"),
    ("no GGUF files in /home/alice/models", "no GGUF files in <path>"),
    ("[Errno 13] Permission denied: '/opt/llama/bin/llama-server'",
     "[Errno 13] Permission denied: '<path>'"),
    # Spaces: inside quotes always; unquoted when the words after it go on as a path.
    ("open '/home/alice/my models/big one.gguf' failed", "open 'big one.gguf' failed"),
    ('open "/home/alice/my models/x.gguf" failed', 'open "x.gguf" failed'),
    ("failed to load /home/alice/my models/x.gguf now", "failed to load x.gguf now"),
    # Windows: drive letters, either slash, UNC shares, and Python's doubled backslashes.
    (r"failed to load model from C:\Users\Alice\models\x.gguf",
     "failed to load model from x.gguf"),
    ('loading "C:/Users/Alice/x.gguf"', 'loading "x.gguf"'),
    (r"failed to load C:\Program Files (x86)\LlamaRunner\models\x.gguf now",
     "failed to load x.gguf now"),
    (r"[WinError 2] The system cannot find the file specified: "
     r"'C:\\Program Files\\LlamaRunner\\llama-server.exe'",
     "[WinError 2] The system cannot find the file specified: 'llama-server.exe'"),
    (r"share \\nas\models\x.gguf is offline", "share x.gguf is offline"),
    (r"'D:\models'", "'<path>'"),
    # Several paths in a start failure's last output lines.
    ("exited while loading (exit code 1); last output:\n"
     "0.00.001 E gguf: failed to open '/a/b/c.gguf'\n0.00.002 E load from /a/b/c.gguf",
     "exited while loading (exit code 1); last output:\n"
     "0.00.001 E gguf: failed to open 'c.gguf'\n0.00.002 E load from c.gguf"),
    # file: URLs are paths too.
    ("open file:///home/alice/x.gguf failed", "open file://x.gguf failed"),
])
def test_paths_are_cut_to_their_file_name(text: str, expected: str) -> None:
    assert redact_paths(text) == expected
    assert redact_paths(expected) == expected  # nothing left to take out


@pytest.mark.parametrize("text", [
    # URLs are not mangled.
    "see https://github.com/ggml-org/llama.cpp/pull/25655",
    "llama-server listens on http://127.0.0.1:8080/v1/models",
    "proxy at http://[::1]:1234/api/v0/models?x=/y/z",
    # Route paths of the APIs are named in messages.
    "no loaded instance 'x'; GET /api/v1/models lists the loaded ones",
    "use /v1/chat/completions instead",
    "'/api/tags'",
    # Slashes in prose, numbers and model names.
    "12 tokens/s, 1/2 done, and/or",
    "a / b",
    "model 'hf.co/bartowski/Qwen-GGUF:Q4_K_M' not found",
    "model library/llama3 not found",
    "failed to load b.gguf for model org/model",
    "request (2427 tokens) exceeds the available context size (256 tokens)",
    "",
])
def test_text_without_paths_is_unchanged(text: str) -> None:
    assert redact_paths(text) == text


def request_from(peer: str | None, path: str = "/api/chat",
                 headers: dict[str, str] | None = None) -> web.Request:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (peer, 50000) if name == "peername" and peer is not None else default)
    return make_mocked_request("POST", path, headers=headers, transport=transport)


@pytest.mark.parametrize(("peer", "headers", "local"), [
    ("127.0.0.1", {}, True),
    ("127.8.9.10", {}, True),
    ("::1", {}, True),
    ("::ffff:127.0.0.1", {}, True),
    ("192.0.2.7", {}, False),
    ("10.0.0.5", {}, False),
    ("fe80::1%eth0", {}, False),
    ("::ffff:192.0.2.7", {}, False),
    (None, {}, False),
    # Relayed by a reverse proxy on this machine: the client is elsewhere.
    ("127.0.0.1", {"X-Forwarded-For": "203.0.113.9"}, False),
    ("127.0.0.1", {"Forwarded": "for=203.0.113.9"}, False),
    ("127.0.0.1", {"X-Real-IP": "203.0.113.9"}, False),
])
def test_only_a_loopback_peer_without_a_proxy_is_local(
    peer: str | None, headers: dict[str, str], local: bool
) -> None:
    assert is_local_client(request_from(peer, headers=headers)) is local


FAILURE = RunnerFailedError(
    "m", "llama-server exited while loading", exit_code=1,
    tail=["E llama_model_load: error loading model: failed to load model from "
          "/home/alice/secret/x.gguf"],
)


async def run_middleware(render: Any, request: web.Request, exc: Exception
                         ) -> tuple[int, Any]:
    async def handler(_: web.Request) -> web.StreamResponse:
        raise exc

    response = await error_middleware(render)(request, handler)
    assert isinstance(response, web.Response) and isinstance(response.body, bytes)
    return response.status, json.loads(response.body)


@pytest.mark.parametrize(("render", "path"), [
    (render_ollama_port, "/api/chat"),
    (render_ollama_port, "/v1/chat/completions"),
    (render_openai, "/v1/chat/completions"),
    (render_openai, "/api/v0/chat/completions"),
])
async def test_a_remote_caller_gets_the_error_without_paths(render: Any, path: str) -> None:
    status, body = await run_middleware(render, request_from("192.0.2.7", path), FAILURE)
    assert status == 502
    message = body["error"] if isinstance(body["error"], str) else body["error"]["message"]
    assert "/home/alice" not in message and "secret" not in message
    assert "failed to load model from x.gguf" in message
    assert "llama-server for model 'm' failed" in message


async def test_the_local_user_gets_the_full_text() -> None:
    status, body = await run_middleware(render_ollama_port, request_from("127.0.0.1"),
                                        FAILURE)
    assert status == 502 and "/home/alice/secret/x.gguf" in body["error"]
    _, body = await run_middleware(render_openai, request_from("::1", "/v1/models"), FAILURE)
    assert "/home/alice/secret/x.gguf" in body["error"]["message"]


async def test_returned_error_answers_are_redacted_too_and_the_rest_kept() -> None:
    async def handler(_: web.Request) -> web.StreamResponse:
        return web.json_response({"error": {
            "code": 400, "message": "cannot read '/home/alice/grammar.gbnf'",
            "type": "invalid_request_error", "n_ctx": 256}}, status=400)

    request = request_from("192.0.2.7", "/v1/chat/completions")
    response = await error_middleware(render_openai)(request, handler)
    assert isinstance(response, web.Response) and isinstance(response.body, bytes)
    assert json.loads(response.body) == {"error": {
        "code": 400, "message": "cannot read 'grammar.gbnf'",
        "type": "invalid_request_error", "n_ctx": 256}}


def test_only_error_answers_are_touched() -> None:
    remote = request_from("192.0.2.7")
    ok = web.json_response({"path": "/home/alice/x.gguf"})
    redact_error_response(remote, ok)
    assert isinstance(ok.body, bytes) and b"/home/alice" in ok.body
    missing = ollama_error(ModelNotFoundError("m").message, 404)
    before = missing.body
    redact_error_response(remote, missing)
    assert missing.body == before  # nothing to take out: the body is left as it was
    text = web.Response(status=500, text="/home/alice/x.gguf")
    redact_error_response(remote, text)
    assert text.text == "/home/alice/x.gguf"  # not JSON: no error text of ours
