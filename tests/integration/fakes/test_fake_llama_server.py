"""The fake llama-server against the recorded real one, and every fault switch it offers."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from tests.fakes.fake_llama_server import chunk_texts, parse_args
from tests.fakes.runtime import FAKE_SERVER, fake_runtime

RECORDED = Path(__file__).resolve().parents[2] / "data" / "llama_server"
HOST = "127.0.0.1"
CHAT = {"model": "whatever", "messages": [{"role": "user", "content": "hello world"}]}
LOG_LINE = re.compile(r"^\d+\.\d{2}\.\d{3}\.\d{3} [IWE] \S")


# ---------------------------------------------------------------------------------------
# harness


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Fake:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10,
                headers: dict[str, str] | None = None) -> Response:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            sent = {"Content-Type": "application/json"} if data else {}
            conn.request(method, path, body=data, headers={**sent, **(headers or {})})
            resp = conn.getresponse()
            return Response(resp.status, dict(resp.getheaders()), resp.read())
        finally:
            conn.close()

    def wait_status(self, status: int, timeout: float = 10) -> Response:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"fake exited {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError):
                resp = self.request("GET", "/health", timeout=1)
                if resp.status == status:
                    return resp
            time.sleep(0.01)
        raise AssertionError(f"/health never answered {status}:\n{self.log()}")

    def wait_exit(self, timeout: float = 5) -> int:
        return self.proc.wait(timeout)


StartFake = Callable[..., Fake]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def start_fake(tmp_path: Path) -> Iterator[StartFake]:
    """Start fakes through the runtime wrapper, each in its own process group; kill all."""
    runtime = fake_runtime(tmp_path / "runtime")
    started: list[Fake] = []

    def start(*args: str, wait_ready: bool = True, env: dict[str, str] | None = None) -> Fake:
        port = free_port()
        log_path = tmp_path / f"fake-{len(started)}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [str(runtime), "-m", str(tmp_path / "model.gguf"), "--host", HOST,
                 "--port", str(port), *args],
                stdout=log, stderr=log, start_new_session=True,
                env={**os.environ, **env} if env else None,
            )
        fake = Fake(proc, port, log_path)
        started.append(fake)
        if wait_ready:
            fake.wait_status(200)
        return fake

    yield start
    for fake in started:
        # The group goes too: it holds any grandchild the fake forked.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(fake.proc.pid, signal.SIGKILL)
        fake.proc.wait()


def recorded(name: str) -> bytes:
    return (RECORDED / name).read_bytes()


def recorded_json(name: str) -> Any:
    return json.loads(recorded(name))


def shape(value: Any) -> Any:
    """Keys (in order) and value kinds, so payloads compare without their data."""
    if isinstance(value, dict):
        return [(k, shape(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def sse_events(body: bytes) -> list[Any]:
    """The ``data:`` payloads of an SSE body, ``"[DONE]"`` kept as a string."""
    events = []
    for block in body.split(b"\n\n"):
        if block.strip():
            assert block.startswith(b"data: "), block
            data = block[len(b"data: "):].decode()
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def stream_shapes(events: list[Any]) -> list[Any]:
    """Shapes with runs of identical shapes collapsed: N content events count as one."""
    out: list[Any] = []
    for event in events:
        s = shape(event)
        if not out or out[-1] != s:
            out.append(s)
    return out


# ---------------------------------------------------------------------------------------
# the wrapper and the command line


def test_wrapper_execs_so_the_spawned_pid_is_the_fake(
    start_fake: StartFake, tmp_path: Path
) -> None:
    record = tmp_path / "argv.json"
    args = ["--fault-record-argv", str(record), "-ngl", "99", "--jinja"]
    fake = start_fake(*args)
    data = json.loads(record.read_text())
    assert data["pid"] == fake.proc.pid
    assert data["argv"] == ["-m", str(tmp_path / "model.gguf"), "--host", HOST,
                            "--port", str(fake.port), *args]
    assert data["grandchild_pid"] is None
    assert psutil.Process(fake.proc.pid).cmdline()[1] == str(FAKE_SERVER)


def test_wrapper_is_an_executable_sh_script(tmp_path: Path) -> None:
    wrapper = fake_runtime(tmp_path / "rt", name="llama-server")
    assert wrapper == tmp_path / "rt" / "llama-server"
    assert os.access(wrapper, os.X_OK)
    assert wrapper.read_text().startswith("#!/bin/sh\nexec ")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--host", "0.0.0.0", "--port", "9"], {"host": "0.0.0.0", "port": 9}),
        (["-m", "a.gguf", "-a", "nick"], {"model": "a.gguf", "model_name": "nick"}),
        (["--model=b.gguf", "--ctx-size=512"], {"model_name": "b.gguf", "n_ctx": 512}),
        (["-ngl", "-1", "-fa", "on", "--jinja", "-c", "64"], {"n_ctx": 64}),
        (["--no-webui", "--embeddings", "--pooling", "mean"],
         {"embedding": True, "pooling": "mean"}),
        (["--fault-exit-on-start"], {"exit_on_start": 1}),
        (["--fault-exit-on-start", "3", "--port", "5"], {"exit_on_start": 3, "port": 5}),
        (["--fault-exit-on-start", "--jinja"], {"exit_on_start": 1}),
        (["--fault-crash-mid-stream", "2", "--fault-chunks", "4"],
         {"crash_mid_stream": 2, "chunks": 4}),
        (["--fault-slow-health", "1.5", "--fault-first-token-delay", "0.25"],
         {"slow_health": 1.5, "first_token_delay": 0.25}),
        (["--fault-chunk-interval", "0.1", "--fault-http-status", "500"],
         {"chunk_interval": 0.1, "http_status": 500}),
        (["--fault-ignore-sigterm", "--fault-never-healthy", "--fault-fork-grandchild"],
         {"ignore_sigterm": True, "never_healthy": True, "fork_grandchild": True}),
        (["--cache-type-k", "q8_0", "--mlock", "--temp", "0.7"],
         {"ignored": ["--cache-type-k", "q8_0", "--mlock", "--temp", "0.7"]}),
    ],
)
def test_parse_args_types_known_options_and_skips_the_rest(
    argv: list[str], expected: dict[str, Any]
) -> None:
    opts = parse_args(argv)
    assert {key: getattr(opts, key) for key in expected} == expected


@pytest.mark.parametrize(
    ("env", "argv", "keys"),
    [
        ({}, [], []),
        ({"LLAMA_API_KEY": "a,b"}, [], ["a", "b"]),
        ({}, ["--api-key", "c"], ["c"]),
        ({"LLAMA_API_KEY": "a"}, ["--api-key=c", "--jinja"], ["a", "c"]),  # they add up
    ],
)
def test_api_keys_come_from_the_environment_and_the_command_line(
    env: dict[str, str], argv: list[str], keys: list[str]
) -> None:
    assert parse_args(argv, env=env).api_keys == keys


def test_a_bad_value_for_a_known_option_exits_1(start_fake: StartFake) -> None:
    fake = start_fake("--fault-chunks", "many", wait_ready=False)
    assert fake.wait_exit() == 1
    assert "invalid value for argument --fault-chunks" in fake.log()


# ---------------------------------------------------------------------------------------
# lifecycle like the real server


def test_health_is_503_while_loading_then_200_with_the_recorded_bodies(
    start_fake: StartFake,
) -> None:
    fake = start_fake("--fault-slow-health", "1.0", wait_ready=False)
    loading = fake.wait_status(503)
    assert loading.body == recorded("health_loading.json")
    assert loading.headers["Connection"] == "close"
    # Every other endpoint waits for the model too.
    assert fake.request("GET", "/v1/models").body == recorded("health_loading.json")
    assert fake.request("POST", "/v1/chat/completions", CHAT).status == 503
    ready = fake.wait_status(200, timeout=5)
    assert ready.body == recorded("health_ready.json")
    progress = [line for line in fake.log().splitlines() if "loading tensors" in line]
    assert len(progress) >= 3  # one every 0.2 s for a second


def test_startup_log_looks_like_llama_servers(start_fake: StartFake) -> None:
    fake = start_fake("--alias", "tiny")
    lines = fake.log().splitlines()
    real = recorded("stderr_startup.txt").decode().splitlines()
    assert all(LOG_LINE.match(line) for line in lines), lines
    assert all(LOG_LINE.match(line) for line in real)
    for marker in ("llama_server: initializing", "load_model: loading model",
                   "llama_server: model loaded"):
        assert any(marker in line for line in real)
        assert any(marker in line for line in lines), marker
    assert any(f"listening on http://{HOST}:{fake.port}" in line for line in lines)


def test_sigterm_exits_0_after_cleaning_up_like_the_real_server(start_fake: StartFake) -> None:
    fake = start_fake()
    fake.proc.send_signal(signal.SIGTERM)
    assert fake.wait_exit() == recorded_json("responses_meta.json")["sigterm_exit_code"] == 0
    assert "cleaning up before exit" in fake.log().splitlines()[-1]


def test_sigint_exits_0(start_fake: StartFake) -> None:
    fake = start_fake()
    fake.proc.send_signal(signal.SIGINT)
    assert fake.wait_exit() == 0


def test_a_taken_port_fails_like_the_real_server(start_fake: StartFake) -> None:
    first = start_fake()
    second = subprocess.run(
        [sys.executable, str(FAKE_SERVER), "--host", HOST, "--port", str(first.port)],
        capture_output=True, text=True, timeout=10, check=False,
    )
    assert second.returncode == 1
    assert "couldn't bind HTTP server socket" in second.stderr


# ---------------------------------------------------------------------------------------
# payloads against the recordings


def test_chat_matches_the_recorded_shape_and_headers(start_fake: StartFake) -> None:
    fake = start_fake("--alias", "tiny")
    resp = fake.request("POST", "/v1/chat/completions", {**CHAT, "max_tokens": 8})
    real = recorded_json("chat.json")
    assert resp.status == 200
    assert shape(resp.json()) == shape(real)
    body = resp.json()
    # Like the real one, the model is the server's own name, not the requested one.
    assert body["model"] == "tiny"
    assert body["choices"][0]["message"]["content"] == "".join(chunk_texts(8))
    assert body["usage"]["completion_tokens"] == body["timings"]["predicted_n"] == 8
    real_headers = recorded_json("responses_meta.json")["chat.json"]["headers"]
    assert sorted(resp.headers) == sorted(real_headers)
    assert resp.headers["Content-Type"] == real_headers["Content-Type"]


def test_model_name_defaults_to_the_model_path_as_given(start_fake: StartFake) -> None:
    fake = start_fake()
    body = fake.request("POST", "/v1/chat/completions", CHAT).json()
    assert body["model"].endswith("model.gguf")
    assert fake.request("GET", "/v1/models").json()["data"][0]["id"] == body["model"]


@pytest.mark.parametrize(
    ("recording", "extra"),
    [
        ("chat_stream.sse", {}),
        ("chat_stream_usage.sse", {"stream_options": {"include_usage": True}}),
    ],
)
def test_streamed_chat_matches_the_recorded_events(
    start_fake: StartFake, recording: str, extra: dict[str, Any]
) -> None:
    fake = start_fake()
    resp = fake.request("POST", "/v1/chat/completions",
                        {**CHAT, "stream": True, "max_tokens": 8, **extra})
    assert resp.status == 200
    events = sse_events(resp.body)
    real = sse_events(recorded(recording))
    assert stream_shapes(events) == stream_shapes(real)
    assert len(events) == len(real)  # role, 8 tokens, finish (, usage), [DONE]
    assert events[-1] == "[DONE]"
    assert "".join(e["choices"][0]["delta"].get("content") or ""
                   for e in events[:-1] if e["choices"]) == "".join(chunk_texts(8))
    real_headers = recorded_json("responses_meta.json")[recording]["headers"]
    assert resp.headers == real_headers


def test_completions_match_the_recorded_shapes(start_fake: StartFake) -> None:
    fake = start_fake()
    body = {"prompt": "hello world", "max_tokens": 8}
    plain = fake.request("POST", "/v1/completions", body)
    assert shape(plain.json()) == shape(recorded_json("completions.json"))
    assert plain.json()["choices"][0]["text"] == "".join(chunk_texts(8))
    streamed = fake.request("POST", "/v1/completions", {**body, "stream": True})
    events = sse_events(streamed.body)
    real = sse_events(recorded("completions_stream.sse"))
    assert stream_shapes(events) == stream_shapes(real)
    assert len(events) == len(real)


def test_native_completion_has_the_recorded_top_level_keys(start_fake: StartFake) -> None:
    fake = start_fake()
    body = fake.request("POST", "/completion", {"prompt": "hello", "n_predict": 8}).json()
    assert list(body) == list(recorded_json("completion_native.json"))
    assert body["content"] == "".join(chunk_texts(8))
    streamed = fake.request("POST", "/completion",
                            {"prompt": "hello", "n_predict": 2, "stream": True})
    events = sse_events(streamed.body)
    assert [e["stop"] for e in events] == [False, False, True]  # no [DONE] here


def test_models_and_props_have_the_recorded_keys(start_fake: StartFake) -> None:
    fake = start_fake("--alias", "tiny", "-c", "256")
    models = fake.request("GET", "/v1/models").json()
    real_models = recorded_json("models.json")
    assert shape(models) == shape(real_models)
    assert models["data"][0]["meta"] == real_models["data"][0]["meta"]
    props = fake.request("GET", "/props").json()
    real_props = recorded_json("props.json")
    assert list(props) == list(real_props)
    assert props["default_generation_settings"]["n_ctx"] == 256


def test_unknown_paths_answer_the_recorded_404(start_fake: StartFake) -> None:
    fake = start_fake()
    resp = fake.request("GET", "/no/such/path")
    assert (resp.status, resp.body) == (404, recorded("not_found.txt"))


def test_a_key_in_the_environment_guards_every_route_but_health(start_fake: StartFake) -> None:
    key = "fake-key-0123456789"
    fake = start_fake(env={"LLAMA_API_KEY": key})
    assert fake.request("GET", "/health").status == 200
    for method, path in (("GET", "/v1/models"), ("GET", "/props"), ("GET", "/no/such/path"),
                         ("POST", "/v1/chat/completions"), ("POST", "/completion"),
                         ("POST", "/no/such/path")):
        body = {**CHAT, "prompt": "hi"} if method == "POST" else None
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-Api-Key": "wrong"}):
            resp = fake.request(method, path, body, headers=headers)
            assert (resp.status, resp.body) == (401, recorded("error_unauthorized.json")), \
                (method, path, headers)
            assert resp.headers["Connection"] == "close"
    for headers in ({"Authorization": f"Bearer {key}"}, {"X-Api-Key": key}):
        assert fake.request("GET", "/v1/models", headers=headers).status == 200
        assert fake.request("POST", "/v1/chat/completions", CHAT, headers=headers).status == 200
    log = fake.log()
    assert "unauthorized: Invalid API Key" in log
    assert "no API key is set" not in log and key not in log


def test_embeddings_need_the_flag_like_the_real_server(start_fake: StartFake) -> None:
    off = start_fake()
    resp = off.request("POST", "/v1/embeddings", {"input": "hello"})
    assert (resp.status, resp.body) == (501, recorded("embeddings_disabled.json"))

    none = start_fake("--embedding", "--pooling", "none")
    resp = none.request("POST", "/v1/embeddings", {"input": "hello"})
    assert (resp.status, resp.body) == (400, recorded("embeddings_pooling_none.json"))

    on = start_fake("--embeddings", "--pooling", "mean")
    resp = on.request("POST", "/v1/embeddings", {"input": ["hello world", "the cat"]})
    real = recorded_json("embeddings.json")
    assert shape(resp.json()) == shape(real)
    vectors = [d["embedding"] for d in resp.json()["data"]]
    assert [len(v) for v in vectors] == [len(d["embedding"]) for d in real["data"]]
    assert abs(sum(x * x for x in vectors[0]) - 1) < 1e-6
    again = on.request("POST", "/v1/embeddings", {"input": "hello world"}).json()
    assert again["data"][0]["embedding"] == vectors[0]  # deterministic


def test_max_tokens_and_fault_chunks_decide_the_length(start_fake: StartFake) -> None:
    default = start_fake()

    def chat(fake: Fake, **extra: Any) -> tuple[str, str]:
        choice = fake.request("POST", "/v1/chat/completions", {**CHAT, **extra}).json()
        return choice["choices"][0]["message"]["content"], choice["choices"][0]["finish_reason"]

    assert chat(default) == ("".join(chunk_texts(8)), "stop")
    assert chat(default, max_tokens=3) == ("".join(chunk_texts(3)), "length")
    assert chat(default, max_tokens=20) == ("".join(chunk_texts(20)), "length")
    five = start_fake("--fault-chunks", "5")
    assert chat(five) == ("".join(chunk_texts(5)), "stop")
    assert chat(five, max_tokens=3) == ("".join(chunk_texts(3)), "length")
    assert chat(five, max_tokens=9) == ("".join(chunk_texts(5)), "stop")


def test_a_chunked_request_body_is_read(start_fake: StartFake) -> None:
    fake = start_fake()
    conn = http.client.HTTPConnection(HOST, fake.port, timeout=10)
    try:
        data = json.dumps({**CHAT, "max_tokens": 2}).encode()
        conn.request("POST", "/v1/chat/completions", body=iter([data[:10], data[10:]]),
                     headers={"Content-Type": "application/json"}, encode_chunked=True)
        resp = conn.getresponse()
        assert resp.status == 200
        assert json.loads(resp.read())["usage"]["completion_tokens"] == 2
    finally:
        conn.close()


async def test_a_client_leaving_mid_stream_does_not_hurt_the_server(
    start_fake: StartFake,
) -> None:
    fake = start_fake("--fault-chunk-interval", "0.1", "--fault-chunks", "20")
    async with aiohttp.ClientSession() as http, http.post(
        f"http://{HOST}:{fake.port}/v1/chat/completions", json={**CHAT, "stream": True}
    ) as resp:
        await resp.content.readline()
    # Leaving the block closed the connection after one event.
    await asyncio.sleep(0.3)
    assert fake.proc.poll() is None
    assert fake.request("POST", "/v1/chat/completions", {**CHAT, "max_tokens": 1}).status == 200
    assert "Traceback" not in fake.log()


# ---------------------------------------------------------------------------------------
# fault switches


@pytest.mark.parametrize(("args", "code"), [((), 1), (("3",), 3)])
def test_exit_on_start_prints_load_errors_and_exits_with_the_code(
    start_fake: StartFake, args: tuple[str, ...], code: int
) -> None:
    started = time.monotonic()
    fake = start_fake("--fault-exit-on-start", *args, wait_ready=False)
    assert fake.wait_exit() == code
    assert time.monotonic() - started < 3
    log = fake.log()
    real = recorded("stderr_missing_model.txt").decode()
    for marker in ("failed to load model", "exiting due to model loading error"):
        assert marker in real
        assert marker in log


def test_ignored_sigterm_needs_sigkill(start_fake: StartFake) -> None:
    fake = start_fake("--fault-ignore-sigterm")
    fake.proc.send_signal(signal.SIGTERM)
    with pytest.raises(subprocess.TimeoutExpired):
        fake.proc.wait(0.5)
    assert fake.request("GET", "/health").status == 200  # still serving
    fake.proc.send_signal(signal.SIGKILL)
    assert fake.wait_exit() == -signal.SIGKILL


def test_never_healthy_goes_silent(start_fake: StartFake) -> None:
    fake = start_fake("--fault-never-healthy", wait_ready=False)
    fake.wait_status(503)
    before = fake.log()
    time.sleep(1.0)
    assert fake.request("GET", "/health").status == 503
    assert fake.log() == before
    assert "load_model: loading model" in before.splitlines()[-1]
    fake.proc.send_signal(signal.SIGTERM)
    assert fake.wait_exit() == 0


def test_never_healthy_logging_keeps_printing(start_fake: StartFake) -> None:
    fake = start_fake("--fault-never-healthy-logging", wait_ready=False)
    fake.wait_status(503)
    before = len(fake.log().splitlines())
    time.sleep(1.0)
    assert fake.request("GET", "/health").status == 503
    assert len(fake.log().splitlines()) >= before + 3


async def test_crash_mid_stream_cuts_the_connection_after_n_chunks(
    start_fake: StartFake,
) -> None:
    fake = start_fake("--fault-crash-mid-stream", "3")
    contents: list[str] = []
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientPayloadError):
            async with http.post(f"http://{HOST}:{fake.port}/v1/chat/completions",
                                 json={**CHAT, "stream": True}) as resp:
                assert resp.status == 200
                async for line in resp.content:
                    if line.startswith(b"data: "):
                        delta = json.loads(line[6:])["choices"][0]["delta"]
                        if delta.get("content"):
                            contents.append(delta["content"])
    assert contents == chunk_texts(3)
    assert fake.wait_exit() == 137
    assert "cleaning up" not in fake.log()  # abrupt: no shutdown path ran


async def test_stream_arrives_chunk_by_chunk_with_the_first_token_delay(
    start_fake: StartFake,
) -> None:
    fake = start_fake("--fault-first-token-delay", "0.5", "--fault-chunk-interval", "0.15",
                      "--fault-chunks", "4")
    arrivals: list[float] = []
    async with aiohttp.ClientSession() as http:
        started = time.monotonic()
        async with http.post(f"http://{HOST}:{fake.port}/v1/chat/completions",
                             json={**CHAT, "stream": True}) as resp:
            # Like llama-server, headers only go out with the first token.
            headers_at = time.monotonic() - started
            async for line in resp.content:
                if line.startswith(b"data: {") and b'"content":"' in line:
                    arrivals.append(time.monotonic() - started)
    assert headers_at >= 0.45
    assert len(arrivals) == 4
    # Lower bounds only, so a busy machine cannot fail it: the last token is sent 0.45 s
    # after the first, and the first one was read long before that.
    assert arrivals[-1] - arrivals[0] >= 0.4, arrivals


def test_first_token_delay_and_interval_also_slow_non_streamed_answers(
    start_fake: StartFake,
) -> None:
    fake = start_fake("--fault-first-token-delay", "0.3", "--fault-chunk-interval", "0.1",
                      "--fault-chunks", "4")
    started = time.monotonic()
    body = fake.request("POST", "/v1/chat/completions", CHAT).json()
    assert time.monotonic() - started >= 0.6
    assert body["timings"]["prompt_ms"] >= 300
    assert body["timings"]["predicted_ms"] >= 300


async def test_requests_are_served_concurrently(start_fake: StartFake) -> None:
    fake = start_fake("--fault-chunk-interval", "0.2", "--fault-chunks", "5")

    async def one(http: aiohttp.ClientSession) -> bytes:
        async with http.post(f"http://{HOST}:{fake.port}/v1/chat/completions",
                             json={**CHAT, "stream": True}) as resp:
            return await resp.read()

    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        bodies = await asyncio.gather(*(one(http) for _ in range(3)))
    assert time.monotonic() - started < 1.6  # one stream takes 0.8 s
    assert all(body.endswith(b"data: [DONE]\n\n") for body in bodies)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/completion"])
def test_http_status_fault_answers_an_exceed_context_error(
    start_fake: StartFake, path: str
) -> None:
    fake = start_fake("--fault-http-status", "400")
    resp = fake.request("POST", path, {**CHAT, "prompt": "hi", "stream": True})
    assert resp.status == 400
    assert shape(resp.json()) == shape(recorded_json("error_exceed_context.json"))
    assert "context size" in resp.json()["error"]["message"]
    assert resp.headers["Connection"] == "close"
    assert fake.request("GET", "/health").status == 200


@pytest.mark.parametrize(("code", "kind"), [(500, "server_error"), (503, "unavailable_error")])
def test_http_status_fault_uses_llama_server_error_types(
    start_fake: StartFake, code: int, kind: str
) -> None:
    fake = start_fake("--fault-http-status", str(code))
    resp = fake.request("POST", "/v1/chat/completions", CHAT)
    assert resp.status == code
    assert resp.json()["error"]["code"] == code
    assert resp.json()["error"]["type"] == kind
    assert shape(resp.json()) == shape(recorded_json("embeddings_disabled.json"))


def test_fork_grandchild_stays_in_the_group_and_outlives_the_fake(
    start_fake: StartFake, tmp_path: Path
) -> None:
    record = tmp_path / "argv.json"
    fake = start_fake("--fault-fork-grandchild", "--fault-record-argv", str(record))
    grandchild = psutil.Process(json.loads(record.read_text())["grandchild_pid"])
    assert grandchild.ppid() == fake.proc.pid
    assert os.getpgid(grandchild.pid) == os.getpgid(fake.proc.pid)
    fake.proc.send_signal(signal.SIGTERM)
    assert fake.wait_exit() == 0
    assert grandchild.is_running()  # only a group kill reaches it
    os.killpg(fake.proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 3
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(grandchild)


def _alive(proc: psutil.Process) -> bool:
    # Once its parent is gone, whoever adopts it may reap it late: a zombie counts as dead.
    try:
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
