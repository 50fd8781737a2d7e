"""The one streaming relay: its own duties once, then each API's transform on top of it.

A stand-in llama-server on loopback (an aiohttp app) plays a scripted answer: a stream
that ends properly, dies midway, closes without its last event, hangs until the client
leaves, or an error status. The relay runs in a second aiohttp app, as the listeners run
it: with handler cancellation, behind the error middleware.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from llamarunner.proxy.anthropic.stream import AnthropicSse
from llamarunner.proxy.errors import error_middleware, render_openai
from llamarunner.proxy.lmstudio.routes import AnnotatedSse
from llamarunner.proxy.lmstudio.views import CompletionContext
from llamarunner.proxy.ollama.stream import (
    ChatStreamConverter,
    GenerateStreamConverter,
    NdjsonStream,
)
from llamarunner.proxy.relay import (
    OpenAiSse,
    ResponsesSse,
    SseTransform,
    StreamTransform,
    relay,
)

DATA = Path(__file__).resolve().parents[2] / "data"
BROKEN = "llama-server for model 'm' stopped in the middle of the response"


# --- the stand-in llama-server ------------------------------------------------------------


@dataclass
class Script:
    """What the stand-in answers: `chunks` one write each, then how it ends.

    `end`: "close" (a proper end of the HTTP body), "die" (the connection drops, like a
    crash), "hang" (keep-alive comments until the client is gone). `headers_after` delays
    the response headers, `body_after` the first body bytes (seconds).
    """

    chunks: list[bytes] = field(default_factory=list)
    end: str = "close"
    status: int = 200
    content_type: str = "text/event-stream"
    headers_after: float = 0.0
    body_after: float = 0.0


class Upstream:
    def __init__(self) -> None:
        self.script = Script()
        self.disconnected = asyncio.Event()
        self.bodies: list[bytes] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.read())
        try:
            return await self._play(request, self.script)
        except (ConnectionError, asyncio.CancelledError):
            # Cancelled: the relay closed the connection (the stand-in's handlers are
            # cancelled like the real one's generation stops).
            self.disconnected.set()
            raise

    @staticmethod
    async def _play(request: web.Request, script: Script) -> web.StreamResponse:
        if script.headers_after:
            await asyncio.sleep(script.headers_after)
        if script.status != 200 or script.content_type != "text/event-stream":
            return web.Response(body=b"".join(script.chunks), status=script.status,
                                content_type=script.content_type)
        response = web.StreamResponse(headers={"Content-Type": script.content_type})
        await response.prepare(request)
        if script.body_after:
            await asyncio.sleep(script.body_after)
        for chunk in script.chunks:
            await response.write(chunk)
        if script.end == "die":
            assert request.transport is not None
            request.transport.close()  # no terminating chunk: the body is cut short
            return response
        while script.end == "hang":
            await response.write(b": ping\n\n")
            await asyncio.sleep(0.01)
        await response.write_eof()
        return response


@dataclass
class Relay:
    """Both apps, started: set `transform` and `answer`, then `post()`."""

    upstream: Upstream
    url: str
    transform: Callable[[], StreamTransform] = OpenAiSse
    answer: Callable[[bytes], Any] | None = None
    first_token_timeout: float = math.inf
    handler_done: asyncio.Event = field(default_factory=asyncio.Event)

    async def post(self, body: bytes = b"{}") -> tuple[int, str, bytes]:
        async with aiohttp.ClientSession() as http, http.post(self.url, data=body) as resp:
            return resp.status, resp.content_type, await resp.read()


@pytest.fixture
async def harness() -> AsyncIterator[Relay]:
    upstream = Upstream()
    up_app = web.Application()
    up_app.router.add_post("/up", upstream.handle)
    up_runner = web.AppRunner(up_app, handler_cancellation=True)
    await up_runner.setup()
    up_site = web.TCPSite(up_runner, "127.0.0.1", 0)
    await up_site.start()
    up_port = up_site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    http = aiohttp.ClientSession(trust_env=False)
    state: dict[str, Relay] = {}

    async def handle(request: web.Request) -> web.StreamResponse:
        setup = state["relay"]
        lease: Any = SimpleNamespace(
            base_url=f"http://127.0.0.1:{up_port}", headers={},
            first_token_timeout=setup.first_token_timeout, runner=SimpleNamespace(name="m"),
            remote=None)
        try:
            return await relay(request, http, lease, "/up", await request.read(),
                               setup.transform(), setup.answer)
        finally:
            setup.handler_done.set()

    app = web.Application(middlewares=[error_middleware(render_openai)])
    app.router.add_post("/relay", handle)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state["relay"] = Relay(upstream, f"http://127.0.0.1:{port}/relay")
    yield state["relay"]
    await runner.cleanup()
    await http.close()
    await up_runner.cleanup()


class Recorder(SseTransform):
    """A transform that marks what the relay asked of it, to test the relay alone."""

    def __init__(self) -> None:
        self.fed: list[bytes] = []
        self.finished = False
        self.broken_with: str | None = None

    @property
    def ended(self) -> bool:
        return b"END" in b"".join(self.fed)

    def feed(self, chunk: bytes) -> bytes:
        self.fed.append(chunk)
        return b"<" + chunk + b">"

    async def finish(self) -> bytes:
        self.finished = True
        return b"[finish]"

    def broken(self, message: str) -> bytes:
        self.broken_with = message
        return b"[broken: " + message.encode() + b"]"


def recording(harness: Relay) -> list[Recorder]:
    made: list[Recorder] = []

    def make() -> Recorder:
        made.append(Recorder())
        return made[-1]

    harness.transform = make
    return made


@pytest.fixture
def count_writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    writes: list[bytes] = []
    original = web.StreamResponse.write

    async def write(self: web.StreamResponse, data: bytes | bytearray | memoryview) -> None:
        request = self._req
        if request is not None and request.path == "/relay":  # the relay's, not the stand-in's
            writes.append(bytes(data))
        await original(self, data)

    monkeypatch.setattr(web.StreamResponse, "write", write)
    return writes


# --- the relay's own duties ------------------------------------------------------------------


async def test_every_upstream_read_is_fed_and_written_once(
        harness: Relay, count_writes: list[bytes]) -> None:
    made = recording(harness)
    harness.upstream.script = Script(chunks=[b"a", b"b", b"END"])
    status, content_type, body = await harness.post()
    assert (status, content_type) == (200, "text/event-stream")
    [transform] = made
    fed = transform.fed
    # However the reads fell, each became exactly one write, in order, then the tail.
    assert b"".join(fed) == b"abEND"
    assert count_writes == [b"<" + chunk + b">" for chunk in fed]
    assert body == b"".join(count_writes) + b"[finish]"
    assert transform.finished and transform.broken_with is None


async def test_a_stream_closed_without_its_end_gets_the_broken_event_after_finish(
        harness: Relay) -> None:
    made = recording(harness)
    harness.upstream.script = Script(chunks=[b"a"])
    status, _, body = await harness.post()
    assert status == 200
    assert body == b"<a>[finish][broken: " + BROKEN.encode() + b"]"
    assert made[0].broken_with == BROKEN


async def test_a_stream_that_dies_midway_ends_with_the_broken_event_alone(
        harness: Relay) -> None:
    made = recording(harness)
    harness.upstream.script = Script(chunks=[b"a", b"b"], end="die")
    status, _, body = await harness.post()
    assert status == 200
    [transform] = made
    assert transform.broken_with is not None and transform.broken_with.startswith(BROKEN + ": ")
    assert not transform.finished
    assert body.startswith(b"<a") and body.endswith(b"]")
    assert body.count(b"[broken: ") == 1


async def test_the_client_leaving_closes_the_upstream(harness: Relay) -> None:
    made = recording(harness)
    harness.upstream.script = Script(chunks=[b"a"], end="hang")
    async with aiohttp.ClientSession() as http:
        resp = await http.post(harness.url, data=b"{}")
        assert resp.status == 200
        assert await resp.content.readany()
        resp.close()  # the client goes away mid-stream
    # The handler is cancelled, which closes the upstream connection: llama-server stops.
    await asyncio.wait_for(harness.handler_done.wait(), 10)
    await asyncio.wait_for(harness.upstream.disconnected.wait(), 10)
    assert made[0].broken_with is None and not made[0].finished


async def test_an_error_status_is_answered_in_the_transforms_shape(harness: Relay) -> None:
    made = recording(harness)
    error = {"error": {"code": 400, "message": "too long", "type": "exceed_context_size_error"}}
    harness.upstream.script = Script(chunks=[json.dumps(error).encode()], status=400,
                                     content_type="application/json")
    status, _, body = await harness.post()
    assert status == 400
    assert json.loads(body) == {"error": {"message": "too long", "param": None,
                                          "type": "exceed_context_size_error",
                                          "code": "exceed_context_size_error"}}
    assert made[0].fed == []


async def test_a_whole_answer_goes_to_the_route_or_through_unchanged(harness: Relay) -> None:
    harness.upstream.script = Script(chunks=[b'{"a": 1}'], content_type="application/json")
    assert await harness.post() == (200, "application/json", b'{"a": 1}')

    async def answer(raw: bytes) -> web.StreamResponse:
        return web.json_response({"seen": json.loads(raw)})

    harness.answer = answer
    status, _, body = await harness.post()
    assert (status, json.loads(body)) == (200, {"seen": {"a": 1}})


@pytest.mark.parametrize("script", [Script(headers_after=5), Script(body_after=5)],
                         ids=["no-headers", "no-body"])
async def test_the_first_byte_watchdog_answers_504_before_any_header(
        harness: Relay, script: Script) -> None:
    recording(harness)
    harness.first_token_timeout = 0.2
    harness.upstream.script = script
    status, _, body = await harness.post()
    assert status == 504
    message = json.loads(body)["error"]["message"]
    assert "produced no output for" in message and "scheduler.first_token_timeout" in message
    await asyncio.wait_for(harness.upstream.disconnected.wait(), 10)


async def test_a_connection_that_breaks_before_the_first_byte_is_a_502(harness: Relay) -> None:
    recording(harness)
    harness.upstream.script = Script(end="die")
    status, _, body = await harness.post()
    assert status == 502
    assert "llama-server for model 'm' broke off the response" in json.loads(body)["error"][
        "message"]


# --- each API's transform on the relay ----------------------------------------------------------


def events_of(raw: bytes) -> list[bytes]:
    return [event + b"\n\n" for event in raw.split(b"\n\n") if event.strip()]


CHAT_SSE = events_of((DATA / "llama_server" / "chat_stream.sse").read_bytes())
NATIVE_SSE = events_of((DATA / "ollama" / "generate_raw_stream.sse").read_bytes())
LLAMA_ERROR_SSE = b'data: {"error":{"code":500,"message":"boom","type":"server_error"}}\n\n'


def _named(name: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


RESPONSES_SSE = [
    _named("response.created", {"type": "response.created",
                                "response": {"status": "in_progress"}}),
    *[_named("response.output_text.delta", {"type": "response.output_text.delta",
                                            "delta": word}) for word in ("Hi", " there", "!")],
    _named("response.completed", {"type": "response.completed",
                                  "response": {"status": "completed"}}),
]
ANTHROPIC_SSE = [
    _named("message_start", {"type": "message_start", "message": {"role": "assistant"}}),
    *[_named("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": word}})
      for word in ("Hi", " there", "!")],
    _named("message_stop", {"type": "message_stop"}),
]
# llama-server's own error event in a Messages stream: its bare error object.
ANTHROPIC_LLAMA_ERROR = (b'event: error\ndata: {"code":500,"message":"boom",'
                         b'"type":"server_error"}\n\n')


def sse_payloads(body: bytes) -> list[tuple[str | None, Any]]:
    """(event name, JSON data or the raw text) of each event a client receives."""
    out: list[tuple[str | None, Any]] = []
    for event in body.split(b"\n\n"):
        name, data = None, []
        for line in event.decode().splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            text = "\n".join(data)
            try:
                out.append((name, json.loads(text)))
            except ValueError:
                out.append((name, text))
    return out


def ndjson_lines(body: bytes) -> list[Any]:
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def openai_stream_error(body: bytes) -> str | None:
    _, last = sse_payloads(body)[-1]
    error = last.get("error") if isinstance(last, dict) else None
    return error["message"] if isinstance(error, dict) else None


def anthropic_stream_error(body: bytes) -> str | None:
    name, last = sse_payloads(body)[-1]
    if name != "error":
        return None
    assert last["type"] == "error" and set(last["error"]) == {"type", "message"}, last
    return str(last["error"]["message"])


def ollama_stream_error(body: bytes) -> str | None:
    last = ndjson_lines(body)[-1]
    return last["error"] if isinstance(last.get("error"), str) else None


def openai_error_message(body: Any) -> str:
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return str(body["error"]["message"])


def anthropic_error_message(body: Any) -> str:
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
    return str(body["error"]["message"])


def ollama_error_message(body: Any) -> str:
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    return str(body["error"])


def openai_done(body: bytes) -> bool:
    return body.endswith(b"data: [DONE]\n\n")


def responses_done(body: bytes) -> bool:
    return sse_payloads(body)[-1][0] == "response.completed"


def anthropic_done(body: bytes) -> bool:
    return sse_payloads(body)[-1][0] == "message_stop"


def ollama_done(body: bytes) -> bool:
    return ndjson_lines(body)[-1].get("done") is True


def lmstudio_done(body: bytes) -> bool:
    payloads = sse_payloads(body)
    return payloads[-1][1] == "[DONE]" and "stats" in payloads[-2][1]


def _converter(kind: type[ChatStreamConverter] | type[GenerateStreamConverter]
               ) -> NdjsonStream:
    converter = kind(model="m:latest", load_ns=0, clock=lambda: "2025-01-01T00:00:00Z",
                     monotonic_ns=lambda: 0)
    return NdjsonStream(converter)


@dataclass(frozen=True)
class Api:
    """One API's transform and how its client reads the answer."""

    id: str
    transform: Callable[[], StreamTransform]
    content_type: str
    stream: list[bytes]  # a proper stream from llama-server, one event per read
    error_event: bytes  # how llama-server ends a generation that failed
    done: Callable[[bytes], bool]  # the client saw the proper end
    stream_error: Callable[[bytes], str | None]  # the in-stream error the client saw
    error_message: Callable[[Any], str]  # the error body's message, checking its shape
    unchanged: bool  # the stream passes byte for byte


APIS = [
    Api("openai", OpenAiSse, "text/event-stream", CHAT_SSE, LLAMA_ERROR_SSE, openai_done,
        openai_stream_error, openai_error_message, True),
    Api("responses", ResponsesSse, "text/event-stream", RESPONSES_SSE, LLAMA_ERROR_SSE,
        responses_done, openai_stream_error, openai_error_message, True),
    Api("anthropic", AnthropicSse, "text/event-stream", ANTHROPIC_SSE, ANTHROPIC_LLAMA_ERROR,
        anthropic_done, anthropic_stream_error, anthropic_error_message, False),
    Api("ollama-chat", lambda: _converter(ChatStreamConverter), "application/x-ndjson",
        CHAT_SSE, LLAMA_ERROR_SSE, ollama_done, ollama_stream_error, ollama_error_message,
        False),
    Api("ollama-generate", lambda: _converter(GenerateStreamConverter),
        "application/x-ndjson", NATIVE_SSE, LLAMA_ERROR_SSE, ollama_done, ollama_stream_error,
        ollama_error_message, False),
    Api("lmstudio-v0", lambda: AnnotatedSse(CompletionContext({}, "llama.cpp-test")),
        "text/event-stream", CHAT_SSE, LLAMA_ERROR_SSE, lmstudio_done, openai_stream_error,
        openai_error_message, False),
]
EACH_API = pytest.mark.parametrize("api", APIS, ids=[api.id for api in APIS])


@EACH_API
async def test_a_proper_stream_ends_as_the_api_says(harness: Relay, api: Api) -> None:
    harness.transform = api.transform
    harness.upstream.script = Script(chunks=api.stream)
    status, content_type, body = await harness.post()
    assert (status, content_type) == (200, api.content_type)
    assert api.done(body) and api.stream_error(body) is None
    if api.unchanged:
        assert body == b"".join(api.stream)


@EACH_API
async def test_an_event_split_over_reads_changes_nothing(harness: Relay, api: Api) -> None:
    harness.transform = api.transform
    harness.upstream.script = Script(chunks=api.stream)
    _, _, whole = await harness.post()
    raw = b"".join(api.stream)
    harness.upstream.script = Script(chunks=[raw[i:i + 7] for i in range(0, len(raw), 7)])
    _, _, split = await harness.post()
    assert api.done(split)
    if api.id.startswith("ollama"):  # each line has its own time
        assert [line.keys() for line in ndjson_lines(split)] == [
            line.keys() for line in ndjson_lines(whole)]
    elif api.id != "lmstudio-v0":
        assert split == whole


@EACH_API
async def test_a_runner_dying_midway_ends_the_stream_with_the_apis_error(
        harness: Relay, api: Api) -> None:
    harness.transform = api.transform
    harness.upstream.script = Script(chunks=api.stream[:3], end="die")
    status, _, body = await harness.post()
    assert status == 200
    message = api.stream_error(body)
    assert message is not None and message.startswith(BROKEN + ": "), body[-300:]
    assert not api.done(body)


@EACH_API
async def test_a_stream_closed_before_its_end_gets_the_apis_error(
        harness: Relay, api: Api) -> None:
    harness.transform = api.transform
    harness.upstream.script = Script(chunks=api.stream[:3])
    status, _, body = await harness.post()
    assert status == 200
    assert api.stream_error(body) == BROKEN
    assert not api.done(body)


@EACH_API
async def test_llama_servers_error_event_is_the_end_in_the_apis_shape(
        harness: Relay, api: Api) -> None:
    harness.transform = api.transform
    harness.upstream.script = Script(chunks=[*api.stream[:2], api.error_event])
    status, _, body = await harness.post()
    assert status == 200
    assert api.stream_error(body) == "boom"  # one error, llama-server's: not a broken stream
    assert BROKEN.encode() not in body


@pytest.mark.parametrize("upstream_status", [400, 503])
@EACH_API
async def test_an_error_status_keeps_its_status_in_the_apis_shape(
        harness: Relay, api: Api, upstream_status: int) -> None:
    harness.transform = api.transform
    error = {"error": {"code": upstream_status, "message": "no can do", "type": "x_error"}}
    harness.upstream.script = Script(chunks=[json.dumps(error).encode()],
                                     status=upstream_status, content_type="application/json")
    status, _, body = await harness.post()
    assert status == upstream_status
    assert api.error_message(json.loads(body)) == "no can do"


@EACH_API
async def test_the_client_leaving_closes_the_upstream_for_every_api(
        harness: Relay, api: Api) -> None:
    harness.transform = api.transform
    harness.upstream.script = Script(chunks=api.stream[:3], end="hang")
    async with aiohttp.ClientSession() as http:
        resp = await http.post(harness.url, data=b"{}")
        assert resp.status == 200
        with contextlib.suppress(asyncio.TimeoutError):
            # Some transforms hold an event back; the first bytes come soon either way.
            await asyncio.wait_for(resp.content.readany(), 5)
        resp.close()
    await asyncio.wait_for(harness.upstream.disconnected.wait(), 10)
    await asyncio.wait_for(harness.handler_done.wait(), 10)
