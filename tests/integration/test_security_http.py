"""Listener guards over real HTTP: Host check, CORS, API key, body limits, no paths leaked."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.integration.test_headless_cli import free_port, launch, write

KEY = "test-key-0123456789abcdef"
ORIGIN = "http://localhost:3000"
EVIL_ORIGIN = "https://attacker.example"


def both_proxies() -> dict[str, Any]:
    return {"ollama": {"enabled": True, "host": "127.0.0.1", "port": 0},
            "lmstudio": {"enabled": True, "host": "127.0.0.1", "port": 0}}


class Ports:
    def __init__(self, service: Any) -> None:
        self.service = service
        self.ollama = f"http://127.0.0.1:{service.listeners.bound_port('ollama')}"
        self.lmstudio = f"http://127.0.0.1:{service.listeners.bound_port('lmstudio')}"

    def port(self, name: str) -> int:
        return int(self.service.listeners.bound_port(name))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(trust_env=False) as session:
        yield session


@pytest.fixture
def serve(write_config, start_service, fake_bin):  # type: ignore[no-untyped-def]
    async def start(security: dict[str, Any] | None = None, **extra: Any) -> Ports:
        models = extra.pop("models", {"m": {"path": str(fake_bin)}})
        if security is not None:
            extra["security"] = security
        config = write_config(models, runtime=fake_bin, proxies=both_proxies(), **extra)
        return Ports((await start_service(config)).service)

    return start


async def call(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
               ) -> tuple[int, Any, Any]:
    async with http.request(method, url, **kwargs) as resp:
        raw = await resp.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        return resp.status, body, resp.headers


def chat(model: str = "m", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


def is_ollama_error(body: Any) -> bool:
    return isinstance(body, dict) and isinstance(body.get("error"), str)


def is_openai_error(body: Any) -> bool:
    return isinstance(body, dict) and isinstance(body.get("error"), dict) \
        and {"message", "type", "param", "code"} <= body["error"].keys()


# --- Host (DNS rebinding) -------------------------------------------------------------


async def test_rebound_host_is_refused_on_both_ports(serve, http) -> None:
    ports = await serve()
    bad = {"Host": "attacker.example:11434"}
    status, body, _ = await call(http, "GET", ports.ollama + "/api/tags", headers=bad)
    assert status == 403 and is_ollama_error(body)
    status, body, _ = await call(http, "GET", ports.ollama + "/v1/models", headers=bad)
    assert status == 403 and is_openai_error(body)
    status, body, _ = await call(http, "GET", ports.lmstudio + "/v1/models", headers=bad)
    assert status == 403 and is_openai_error(body)
    # The names a local client uses still work.
    for host in ("localhost:1", "127.0.0.1", "[::1]:11434"):
        status, _, _ = await call(http, "GET", ports.ollama + "/api/tags", headers={"Host": host})
        assert status == 200, host


async def test_configured_host_names_pass(serve, http) -> None:
    ports = await serve({"allowed_hosts": ["my-pc.local"]})
    status, _, _ = await call(http, "GET", ports.lmstudio + "/v1/models",
                              headers={"Host": "my-pc.local:1234"})
    assert status == 200


# --- CORS ---------------------------------------------------------------------------


def preflight(origin: str) -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-stainless-lang"}


@pytest.mark.parametrize("port", ["ollama", "lmstudio"])
async def test_preflight_from_an_allowed_origin(serve, http, port: str) -> None:
    ports = await serve()
    base = getattr(ports, port)
    status, _, headers = await call(http, "OPTIONS", base + "/v1/chat/completions",
                                    headers=preflight(ORIGIN))
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in headers["Access-Control-Allow-Methods"]
    allowed = headers["Access-Control-Allow-Headers"].lower()
    for name in ("authorization", "content-type", "user-agent", "accept",
                 "x-requested-with", "x-stainless-lang", "x-stainless-retry-count"):
        assert name in allowed
    assert int(headers["Access-Control-Max-Age"]) > 0


@pytest.mark.parametrize("port", ["ollama", "lmstudio"])
async def test_preflight_from_another_origin_gets_no_allow_header(serve, http, port) -> None:
    ports = await serve()
    status, _, headers = await call(http, "OPTIONS", getattr(ports, port) + "/api/chat",
                                    headers=preflight(EVIL_ORIGIN))
    assert status == 403
    assert "Access-Control-Allow-Origin" not in headers


async def test_allowed_origin_header_on_plain_and_streamed_answers(serve, http) -> None:
    ports = await serve({"cors_origins": ["chrome-extension://*"]})
    origin = {"Origin": "chrome-extension://abcdef"}
    status, _, headers = await call(http, "GET", ports.lmstudio + "/v1/models", headers=origin)
    assert status == 200 and headers["Access-Control-Allow-Origin"] == origin["Origin"]
    status, body, headers = await call(http, "POST", ports.lmstudio + "/v1/chat/completions",
                                       json=chat(stream=True), headers=origin)
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    assert headers["Access-Control-Allow-Origin"] == origin["Origin"]
    status, _, headers = await call(http, "POST", ports.ollama + "/api/chat",
                                    json=chat(stream=True), headers={"Origin": ORIGIN})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == ORIGIN
    # A foreign page cannot make us act, even with a request that needs no preflight.
    status, body, headers = await call(http, "POST", ports.ollama + "/api/chat",
                                       data=json.dumps(chat()),
                                       headers={"Origin": EVIL_ORIGIN,
                                                "Content-Type": "text/plain"})
    assert status == 403 and is_ollama_error(body)
    assert "Access-Control-Allow-Origin" not in headers


# --- API key --------------------------------------------------------------------------


async def test_key_protects_both_apis_streams_included(serve, http) -> None:
    ports = await serve({"api_key": KEY})
    good = {"Authorization": f"Bearer {KEY}"}
    wrong = {"Authorization": "Bearer not-the-key-at-all-000"}
    for headers in ({}, wrong):
        status, body, resp_headers = await call(http, "GET", ports.lmstudio + "/v1/models",
                                                headers=headers)
        assert status == 401 and resp_headers["WWW-Authenticate"] == "Bearer"
        assert body["error"]["type"] == "invalid_request_error"
        assert body["error"]["code"] == "invalid_api_key" and body["error"]["param"] is None
        status, body, _ = await call(http, "GET", ports.ollama + "/api/tags", headers=headers)
        assert (status, body) == (401, {"error": "unauthorized"})
        status, body, _ = await call(http, "GET", ports.ollama + "/v1/models", headers=headers)
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        status, _, _ = await call(http, "POST", ports.lmstudio + "/v1/chat/completions",
                                  json=chat(stream=True), headers=headers)
        assert status == 401
        status, _, _ = await call(http, "POST", ports.ollama + "/api/chat",
                                  json=chat(stream=True), headers=headers)
        assert status == 401
        status, _, _ = await call(http, "GET", ports.lmstudio + "/api/v0/models",
                                  headers=headers)
        assert status == 401
    status, _, _ = await call(http, "GET", ports.lmstudio + "/v1/models", headers=good)
    assert status == 200
    status, raw, _ = await call(http, "POST", ports.lmstudio + "/v1/chat/completions",
                                json=chat(stream=True), headers=good)
    assert status == 200 and raw.rstrip().endswith(b"data: [DONE]")
    status, raw, _ = await call(http, "POST", ports.ollama + "/api/chat",
                                json=chat(stream=True), headers=good)
    assert status == 200 and b'"done":true' in raw.replace(b" ", b"")


async def test_health_checks_stay_open(serve, http) -> None:
    ports = await serve({"api_key": KEY})
    for method, url in (("GET", ports.ollama + "/"), ("HEAD", ports.ollama + "/"),
                        ("GET", ports.ollama + "/api/version"),
                        ("HEAD", ports.ollama + "/api/version"),
                        ("GET", ports.lmstudio + "/")):
        status, _, _ = await call(http, method, url)
        assert status == 200, (method, url)


async def test_key_set_while_running_applies_at_once(serve, http) -> None:
    ports = await serve()
    port = ports.port("lmstudio")
    assert (await call(http, "GET", ports.lmstudio + "/v1/models"))[0] == 200
    await ports.service.update_config(
        lambda data: data.setdefault("security", {}).update(api_key=KEY))
    assert ports.port("lmstudio") == port  # no rebind needed
    assert (await call(http, "GET", ports.lmstudio + "/v1/models"))[0] == 401
    status, _, _ = await call(http, "GET", ports.lmstudio + "/v1/models",
                              headers={"Authorization": f"Bearer {KEY}"})
    assert status == 200


# --- body limits ----------------------------------------------------------------------


async def raw_request(port: int, head: bytes, body: bytes = b"", wait: float = 10.0
                      ) -> tuple[int, dict[str, Any], float]:
    """Send `head` and part of a body, then stall; the status, JSON body and seconds taken."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), wait)
        headers: dict[str, str] = {}
        while (line := await asyncio.wait_for(reader.readline(), wait)) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        payload = await asyncio.wait_for(
            reader.readexactly(int(headers["content-length"])), wait)
        return int(status_line.split()[1]), json.loads(payload), loop.time() - started
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):  # the server closed it first
            await writer.wait_closed()


def post_head(path: str, length: int) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


async def test_too_large_content_length_is_refused_before_the_body(serve) -> None:
    ports = await serve({"max_body_bytes": 4096})
    status, body, took = await raw_request(ports.port("ollama"), post_head("/api/chat", 4097))
    assert status == 413 and is_ollama_error(body) and took < 5
    assert "4096" in body["error"]
    status, body, _ = await raw_request(ports.port("lmstudio"),
                                        post_head("/v1/chat/completions", 10**9))
    assert status == 413 and is_openai_error(body)


async def test_chunked_body_over_the_limit_is_413_in_the_api_shape(serve, http) -> None:
    ports = await serve({"max_body_bytes": 4096})

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b" " * 2048

    status, body, _ = await call(http, "POST", ports.ollama + "/api/chat", data=chunks())
    assert status == 413 and is_ollama_error(body)
    status, body, _ = await call(http, "POST", ports.lmstudio + "/v1/completions",
                                 data=chunks())
    assert status == 413 and is_openai_error(body)


async def test_a_stalled_upload_times_out(serve) -> None:
    ports = await serve({"body_timeout": "500ms"})
    status, body, took = await raw_request(ports.port("lmstudio"),
                                           post_head("/v1/chat/completions", 100), b'{"mod')
    assert status == 408 and is_openai_error(body)
    assert 0.4 < took < 5
    status, body, _ = await raw_request(ports.port("ollama"), post_head("/api/generate", 100),
                                        b'{"mod')
    assert status == 408 and is_ollama_error(body)


# --- network binds --------------------------------------------------------------------


def test_cli_refuses_a_network_address_without_a_key(tmp_path: Path) -> None:
    port = free_port()
    # Bound only if the check were missing; no traffic goes to it either way.
    config = write(tmp_path / "config.json", {
        "proxies": {"ollama": {"enabled": False},
                    "lmstudio": {"host": "0.0.0.0", "port": port}},
    })
    app = launch(config, tmp_path)
    _, err = app.communicate(timeout=30)
    assert app.returncode == 3, err
    assert "LM Studio / OpenAI API" in err and f"0.0.0.0:{port}" in err
    assert "security.api_key" in err and str(config) in err


def test_cli_refuses_a_key_variable_that_is_not_set(tmp_path: Path) -> None:
    config = write(tmp_path / "config.json", {
        "proxies": {"ollama": {"enabled": False}, "lmstudio": {"port": free_port()}},
        "security": {"api_key_env": "LR_TEST_UNSET_KEY_VARIABLE"},
    })
    app = launch(config, tmp_path)
    _, err = app.communicate(timeout=30)
    assert app.returncode == 3, err
    assert "LR_TEST_UNSET_KEY_VARIABLE" in err and "not set" in err


# --- no file system paths in answers --------------------------------------------------


@pytest.fixture
def secret_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "secret-folder-name"
    folder.mkdir()
    return folder


def assert_no_paths(bodies: list[tuple[str, object]], *paths: Path) -> None:
    for what, body in bodies:
        text = body if isinstance(body, str | bytes) else json.dumps(body)
        text = text.decode() if isinstance(text, bytes) else text
        for path in paths:
            assert str(path) not in text, f"{what} echoes {path}: {text}"
        assert "secret-folder-name" not in text, f"{what}: {text}"


async def test_error_answers_never_echo_paths(serve, http, fake_bin, tiny_model,
                                              secret_dir) -> None:
    folder = secret_dir / "models"
    folder.mkdir()
    shutil.copy(tiny_model, folder / "mine.gguf")
    ports = await serve(models={"m": {"path": str(fake_bin)},
                                "gone": {"path": str(secret_dir / "gone.gguf")}},
                        model_dirs=[str(folder)])
    o, lm = ports.ollama, ports.lmstudio
    answers: list[tuple[str, object]] = []
    probes: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", o + "/api/chat", {"json": chat("nope")}),
        ("POST", o + "/api/show", {"json": {"model": "nope"}}),
        ("POST", o + "/api/generate", {"json": {"model": "gone", "prompt": "a"}}),
        ("POST", lm + "/v1/chat/completions", {"json": chat("gone")}),
        ("POST", lm + "/api/v0/chat/completions", {"json": chat("gone")}),
        ("POST", lm + "/api/v1/models/load", {"json": {"model": "gone"}}),
        ("POST", lm + "/api/v1/models/load", {"json": {"model": "m",
                                                       "context_length": "big"}}),
        ("POST", lm + "/v1/chat/completions", {"data": b"{not json"}),
        ("POST", o + "/api/chat", {"json": {"model": 7}}),
        ("POST", o + "/api/chat", {"json": chat("m", options={"num_ctx": "x"})}),
        ("DELETE", o + "/api/delete", {"json": {"model": "mine"}}),  # not ours to delete
        ("POST", o + "/api/copy", {"json": {"source": "nope", "destination": "x"}}),
        ("GET", lm + "/v1/models/nope", {}),
        ("GET", lm + "/api/v0/models/nope", {}),
    ]
    for method, url, kwargs in probes:
        status, body, _ = await call(http, method, url, **kwargs)
        assert status >= 400, (method, url, status, body)
        answers.append((f"{method} {url}", body))
    assert_no_paths(answers, secret_dir, fake_bin.parent, folder)


async def test_missing_runtime_error_does_not_echo_its_path(serve, http, fake_bin,
                                                            secret_dir) -> None:
    runtime = secret_dir / "bin" / "llama-server"
    ports = await serve(models={"m": {"path": str(fake_bin), "runtime": "mine"}},
                        runtimes={"default": {"path": str(fake_bin)},
                                  "mine": {"path": str(runtime)}})
    answers = []
    for url in (ports.ollama + "/api/chat", ports.lmstudio + "/v1/chat/completions"):
        status, body, _ = await call(http, "POST", url, json=chat("m"))
        assert status == 503
        answers.append((url, body))
    assert_no_paths(answers, secret_dir)


async def test_rejected_copy_does_not_echo_the_config_path(serve, http, write_config,
                                                           tmp_path) -> None:
    ports = await serve()
    status, body, _ = await call(http, "POST", ports.ollama + "/api/copy",
                                 json={"source": "m", "destination": "bad/name"})
    assert status == 400
    assert_no_paths([("copy", body)], tmp_path)



def network_address() -> str | None:
    """This machine's address on its default route, as other machines reach it; None when
    it has only loopback. Connecting a UDP socket sends nothing, it only picks the route."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("192.0.2.1", 9))  # TEST-NET-1: never answered, never needed
        address = str(sock.getsockname()[0])
        if not ipaddress.ip_address(address).is_loopback:
            return address
    return None


async def test_a_start_failure_reaches_other_machines_without_paths(
    write_config, start_service, fake_bin, tiny_model, secret_dir
) -> None:
    address = network_address()
    if address is None:
        pytest.skip("this machine has no address besides loopback")
    model = secret_dir / "models" / "broken.gguf"
    model.parent.mkdir()
    shutil.copy(tiny_model, model)
    network = {"enabled": True, "host": "0.0.0.0", "port": 0}
    config = write_config({"broken": {"path": str(model), "args": {"fault-exit-on-start": 1}}},
                          runtime=fake_bin, security={"api_key": KEY},
                          proxies={"ollama": network, "lmstudio": dict(network)})
    service = (await start_service(config)).service
    ports = {name: service.listeners.bound_port(name) for name in ("ollama", "lmstudio")}
    probes = [("ollama", "/api/chat", chat("broken")),
              ("ollama", "/api/generate", {"model": "broken", "prompt": "hi"}),
              ("ollama", "/v1/chat/completions", chat("broken")),
              ("lmstudio", "/v1/chat/completions", chat("broken")),
              ("lmstudio", "/api/v0/chat/completions", chat("broken")),
              ("lmstudio", "/api/v1/models/load", {"model": "broken"})]
    auth = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession(trust_env=False) as http:
        for port, path, body in probes:
            status, remote, _ = await call(http, "POST", f"http://{address}:{ports[port]}{path}",
                                           json=body, headers=auth)
            assert status >= 500, (path, remote)
            text = json.dumps(remote)
            assert_no_paths([(path, remote)], secret_dir)
            # The output lines are still there, with the file's name in place of its path.
            assert "broken.gguf" in text and "failed to load model" in text, text
            # From this machine itself the same failure names the file in full.
            _, local, _ = await call(http, "POST", f"http://127.0.0.1:{ports[port]}{path}",
                                     json=body, headers=auth)
            assert str(model) in json.dumps(local), local
