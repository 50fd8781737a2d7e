"""Stream conversion on recorded llama-server SSE: any chunking, same Ollama chunks."""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from ollama._types import ChatResponse, GenerateResponse

from llamarunner.core.errors import UpstreamError
from llamarunner.proxy.ollama.convert import RAW_ARGUMENTS_KEY
from llamarunner.proxy.ollama.stream import (
    DONE,
    ChatStreamConverter,
    GenerateStreamConverter,
    NdjsonStream,
    StreamConverter,
    ndjson,
    parse_sse_lines,
)
from llamarunner.proxy.ollama.timefmt import rfc3339, rfc3339_now, rfc3339_ns

DATA = Path(__file__).resolve().parents[2] / "data"
CREATED = "2025-01-31T12:34:56.123456789Z"


def sse(path: str) -> bytes:
    return (DATA / path).read_bytes()


class Clock:
    """A monotonic_ns stand-in the test moves by hand."""

    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def converter(kind: type[StreamConverter], clock: Clock | None = None, *, load_ns: int = 0,
              **extra: Any) -> StreamConverter:
    return kind(model="tiny:latest", load_ns=load_ns, clock=lambda: CREATED,
                monotonic_ns=clock or Clock(), **extra)


def chunked(data: bytes, rng: random.Random) -> Iterator[bytes]:
    pos = 0
    while pos < len(data):
        size = rng.randint(1, 40)
        yield data[pos:pos + size]
        pos += size


def payloads_of(pieces: Iterator[bytes] | list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    rest = b""
    for piece in pieces:
        got, rest = parse_sse_lines(rest + piece)
        out.extend(got)
    got, rest = parse_sse_lines(rest, final=True)
    assert rest == b""
    return out + got


def run(conv: StreamConverter, data: bytes) -> list[dict[str, Any]]:
    chunks: list[dict[str, Any]] = []
    for payload in payloads_of([data]):
        chunks.extend(conv.feed_payload(payload))
    return chunks


def validate_chat(chunks: list[dict[str, Any]]) -> None:
    for chunk in chunks:
        ChatResponse.model_validate(chunk)


def validate_generate(chunks: list[dict[str, Any]]) -> None:
    for chunk in chunks:
        GenerateResponse.model_validate(chunk)


# --- SSE parsing -------------------------------------------------------------------------

RECORDED_STREAMS = ["llama_server/chat_stream.sse", "llama_server/chat_stream_usage.sse",
                    "llama_server/completions_stream.sse",
                    "ollama/chat_stream_think_false.sse", "ollama/generate_raw_stream.sse"]


@pytest.mark.parametrize("path", RECORDED_STREAMS)
def test_any_chunking_gives_the_same_payloads(path: str) -> None:
    data = sse(path)
    whole = payloads_of([data])
    assert whole and all(p == DONE or isinstance(json.loads(p), dict) for p in whole)
    for seed in range(25):
        assert payloads_of(chunked(data, random.Random(seed))) == whole
    assert payloads_of([bytes([b]) for b in data]) == whole  # one byte at a time


def test_recorded_openai_stream_payloads() -> None:
    payloads = payloads_of([sse("llama_server/chat_stream.sse")])
    assert len(payloads) == 11  # role, 8 tokens, finish + timings, [DONE]
    assert payloads[-1] == DONE
    assert json.loads(payloads[0])["choices"][0]["delta"] == {"role": "assistant",
                                                              "content": None}


def test_native_stream_has_no_done_marker() -> None:
    payloads = payloads_of([sse("ollama/generate_raw_stream.sse")])
    assert DONE not in payloads
    assert json.loads(payloads[-1])["stop"] is True


@pytest.mark.parametrize(
    ("stream", "payloads", "rest"),
    [
        (b"data: {}\n\n", [b"{}"], b""),
        (b"data:{}\n\n", [b"{}"], b""),  # the space after the colon is optional
        (b"data: {}\r\n\r\n", [b"{}"], b""),
        (b"data: {}\r\rdata: [DONE]\r\r\n", [b"{}", DONE], b""),
        # A last lone "\r" may be half of "\r\n": the event waits for the next byte.
        (b"data: {}\r\rdata: [DONE]\r\r", [b"{}"], b"data: [DONE]\r\r"),
        (b": ping\n\n:\n\ndata: 1\n\n", [b"1"], b""),  # llama-server's keep-alive pings
        (b"event: message\nid: 7\ndata: 1\n\n", [b"1"], b""),
        (b"data: a\ndata: b\n\n", [b"a\nb"], b""),  # multi-line data joins with \n
        (b"data: 1\n\ndata: 2", [b"1"], b"data: 2"),
        (b"data: 1\n\ndata: 2\n", [b"1"], b"data: 2\n"),  # no blank line yet
        (b"data: 1\r", [], b"data: 1\r"),  # "\r" may be half of "\r\n"
        (b"\n\n\n", [], b""),
        (b"", [], b""),
        (b"retry: 10\n\n", [], b""),
    ],
)
def test_parse_sse_lines(stream: bytes, payloads: list[bytes], rest: bytes) -> None:
    assert parse_sse_lines(stream) == (payloads, rest)


@pytest.mark.parametrize(
    ("stream", "payloads"),
    [
        (b"data: 2", [b"2"]),
        (b"data: 2\n", [b"2"]),
        (b"data: 2\r", [b"2"]),
        (b"data: [DONE]\r\r", [DONE]),
        (b": only a comment", []),
        (b"", []),
    ],
)
def test_parse_sse_lines_final_flushes(stream: bytes, payloads: list[bytes]) -> None:
    assert parse_sse_lines(stream, final=True) == (payloads, b"")


# --- chat streams ------------------------------------------------------------------------


def test_recorded_chat_stream() -> None:
    clock = Clock(10_000)
    conv = converter(ChatStreamConverter, clock, load_ns=2_000)
    chunks = run(conv, sse("llama_server/chat_stream.sse"))
    words = [" to", " hello"] * 4
    assert chunks == [{"model": "tiny:latest", "created_at": CREATED,
                       "message": {"role": "assistant", "content": w}, "done": False}
                      for w in words]
    assert conv.upstream_done
    clock.now = 10_000 + 5_000_000
    final = conv.finish()
    assert final == {
        "model": "tiny:latest", "created_at": CREATED,
        "message": {"role": "assistant", "content": ""},
        "done": True, "done_reason": "length",
        "total_duration": 5_002_000,  # since the request arrived: load + streaming
        "load_duration": 2_000,
        "prompt_eval_count": 39, "prompt_eval_duration": 624_000,
        "eval_count": 8, "eval_duration": 1_603_000,
    }
    validate_chat([*chunks, final])


def test_usage_event_after_the_finish_carries_the_timings() -> None:
    conv = converter(ChatStreamConverter)
    chunks = run(conv, sse("llama_server/chat_stream_usage.sse"))
    assert "".join(c["message"]["content"] for c in chunks) == " to hello" * 4
    final = conv.finish()
    assert (final["prompt_eval_count"], final["prompt_eval_duration"], final["eval_count"],
            final["eval_duration"]) == (39, 621_000, 8, 1_520_000)
    validate_chat([*chunks, final])


def test_recorded_think_false_stream() -> None:
    conv = converter(ChatStreamConverter)
    chunks = run(conv, sse("ollama/chat_stream_think_false.sse"))
    assert len(chunks) == 8 and not any("thinking" in c["message"] for c in chunks)
    final = conv.finish()
    assert final["done_reason"] == "length" and final["prompt_eval_count"] == 39
    validate_chat([*chunks, final])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("path", ["llama_server/chat_stream.sse",
                                  "llama_server/chat_stream_usage.sse"])
def test_chunking_does_not_change_the_ollama_chunks(path: str, seed: int) -> None:
    data = sse(path)
    a, b = converter(ChatStreamConverter), converter(ChatStreamConverter)
    whole = run(a, data)
    pieces: list[dict[str, Any]] = []
    for payload in payloads_of(chunked(data, random.Random(seed))):
        pieces.extend(b.feed_payload(payload))
    assert pieces == whole
    assert a.finish() == b.finish()


def openai_chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    body = {"choices": [{"finish_reason": finish, "index": 0, "delta": delta}],
            "created": 1, "id": "chatcmpl-x", "model": "tiny",
            "object": "chat.completion.chunk", **extra}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def usage_event(usage: dict[str, Any]) -> bytes:
    """The extra last event of ``stream_options.include_usage``: no choices."""
    body = {"choices": [], "created": 1, "id": "chatcmpl-x", "model": "tiny",
            "object": "chat.completion.chunk", "usage": usage}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def stream_of(*events: bytes) -> bytes:
    return b"".join(events) + b"data: [DONE]\n\n"


def test_reasoning_deltas_become_thinking() -> None:
    data = stream_of(
        openai_chunk({"role": "assistant", "content": None}),
        openai_chunk({"reasoning_content": "Let me"}),
        openai_chunk({"reasoning_content": " think."}),
        openai_chunk({"reasoning_content": "", "content": "Hi"}),
        openai_chunk({"content": "!", "reasoning_content": "(late)"}),
        openai_chunk({}, "stop", timings={"prompt_n": 5, "prompt_ms": 1.5, "predicted_n": 4,
                                          "predicted_ms": 2.25}),
    )
    conv = converter(ChatStreamConverter)
    chunks = run(conv, data)
    assert [c["message"] for c in chunks] == [
        {"role": "assistant", "content": "", "thinking": "Let me"},
        {"role": "assistant", "content": "", "thinking": " think."},
        {"role": "assistant", "content": "Hi"},
        {"role": "assistant", "content": "!", "thinking": "(late)"},
    ]
    final = conv.finish()
    assert final["done_reason"] == "stop"
    assert (final["prompt_eval_duration"], final["eval_duration"]) == (1_500_000, 2_250_000)
    validate_chat([*chunks, final])


def tool_fragment(index: int, *, id: str | None = None, name: str | None = None,
                  arguments: str | None = None) -> dict[str, Any]:
    fragment: dict[str, Any] = {"index": index}
    if id is not None:
        fragment.update({"id": id, "type": "function"})
    function: dict[str, Any] = {}
    if name is not None:
        function["name"] = name
    if arguments is not None:
        function["arguments"] = arguments
    if function:
        fragment["function"] = function
    return fragment


TOOL_STREAM = stream_of(
    openai_chunk({"role": "assistant", "content": None}),
    openai_chunk({"reasoning_content": "Two cities."}),
    openai_chunk({"tool_calls": [tool_fragment(0, id="AbC1", name="get_weather")]}),
    openai_chunk({"tool_calls": [tool_fragment(0, arguments='{"ci')]}),
    openai_chunk({"tool_calls": [tool_fragment(0, arguments='ty": "Par')]}),
    openai_chunk({"tool_calls": [tool_fragment(1, id="DeF2", name="get_weather",
                                               arguments="")]}),
    openai_chunk({"tool_calls": [tool_fragment(0, arguments='is"}')]}),
    openai_chunk({"tool_calls": [tool_fragment(1, arguments='{"city": "Rome", "days": 2}')]}),
    openai_chunk({}, "tool_calls"),
    usage_event({"prompt_tokens": 30, "completion_tokens": 12}),
)


@pytest.mark.parametrize("seed", range(8))
def test_tool_call_deltas_are_sent_whole(seed: int) -> None:
    conv = converter(ChatStreamConverter)
    chunks: list[dict[str, Any]] = []
    for payload in payloads_of(chunked(TOOL_STREAM, random.Random(seed))):
        chunks.extend(conv.feed_payload(payload))
    final = conv.finish()
    assert [c["message"] for c in chunks] == [
        {"role": "assistant", "content": "", "thinking": "Two cities."},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "AbC1", "function": {"index": 0, "name": "get_weather",
                                        "arguments": {"city": "Paris"}}},
            {"id": "DeF2", "function": {"index": 1, "name": "get_weather",
                                        "arguments": {"city": "Rome", "days": 2}}},
        ]},
    ]
    assert final["message"] == {"role": "assistant", "content": ""}
    assert final["done_reason"] == "stop"  # Ollama has no "tool_calls" reason
    assert (final["prompt_eval_count"], final["eval_count"]) == (30, 12)
    validate_chat([*chunks, final])
    parsed = ChatResponse.model_validate(chunks[1])
    assert parsed.message.tool_calls is not None
    assert parsed.message.tool_calls[0].function.arguments == {"city": "Paris"}


def test_tool_name_resent_whole_as_it_grows() -> None:
    # llama-server re-sends the full name when its parser extends it ("get_w" ->
    # "get_weather"), while OpenAI-style servers send pieces; both must end up right.
    data = stream_of(
        openai_chunk({"tool_calls": [tool_fragment(0, id="1", name="get_w")]}),
        openai_chunk({"tool_calls": [tool_fragment(0, id="1", name="get_weather",
                                                   arguments='{"city":')]}),
        openai_chunk({"tool_calls": [tool_fragment(1, id="2", name="look")]}),
        openai_chunk({"tool_calls": [tool_fragment(1, name="up", arguments="{}")]}),
        openai_chunk({"tool_calls": [tool_fragment(0, arguments='"Oslo"}')]}),
        openai_chunk({}, "tool_calls"),
    )
    chunks = run(converter(ChatStreamConverter), data)
    calls = chunks[-1]["message"]["tool_calls"]
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("get_weather", {"city": "Oslo"}), ("lookup", {})]


def test_tool_calls_left_without_finish_go_on_the_final_chunk() -> None:
    data = (openai_chunk({"tool_calls": [tool_fragment(0, id="z", name="f",
                                                       arguments='{"a": 1')]})
            + b"data: [DONE]\n\n")
    conv = converter(ChatStreamConverter)
    assert run(conv, data) == []
    final = conv.finish()
    assert final["message"]["tool_calls"] == [
        {"id": "z", "function": {"index": 0, "name": "f",
                                 "arguments": {RAW_ARGUMENTS_KEY: '{"a": 1'}}}]
    assert conv.finish()["message"] == {"role": "assistant", "content": ""}  # sent once
    validate_chat([final])


def test_upstream_error_event_becomes_an_error_line() -> None:
    data = (openai_chunk({"content": "par"})
            + b'data: {"error":{"code":500,"message":"slot died","type":"server_error"}}\n\n')
    conv = converter(ChatStreamConverter)
    chunks = run(conv, data)
    assert chunks[-1] == {"error": "slot died"}
    assert conv.error == "slot died"
    assert ChatStreamConverter.error_line("boom") == {"error": "boom"}
    assert conv.feed_event({"error": "plain text"}) == [{"error": "plain text"}]
    assert conv.feed_event({"error": {"code": 1}}) == [{"error": '{"code": 1}'}]


@pytest.mark.parametrize("payload", [b"{not json", b"[1, 2]", b'"text"'])
def test_garbage_payload_is_an_error_line(payload: bytes) -> None:
    conv = converter(ChatStreamConverter)
    (line,) = conv.feed_payload(payload)
    assert line["error"].startswith("invalid event from llama-server")
    assert conv.error == line["error"]


def test_events_without_text_produce_nothing() -> None:
    conv = converter(ChatStreamConverter)
    event: dict[str, Any]
    for event in ({"choices": [{"delta": {"role": "assistant", "content": None}}]},
                  {"choices": [{"delta": {"content": ""}}]}, {"choices": []},
                  {"choices": [None]}, {"choices": "x"}, {"choices": [{"delta": None}]}, {}):
        assert conv.feed_event(event) == []
    assert conv.feed_payload(b"[DONE]") == []
    assert conv.upstream_done


def test_start_ns_overrides_the_default_start() -> None:
    clock = Clock(500)
    conv = converter(ChatStreamConverter, clock, load_ns=100, start_ns=0)
    clock.now = 1_500
    assert conv.finish()["total_duration"] == 1_500


# --- generate streams --------------------------------------------------------------------


def test_recorded_native_raw_stream() -> None:
    conv = converter(GenerateStreamConverter)
    chunks = run(conv, sse("ollama/generate_raw_stream.sse"))
    assert [c["response"] for c in chunks] == [" red", " world", " one", " to", " hello",
                                               " to", " hello", " to"]
    assert all(c["done"] is False and "message" not in c for c in chunks)
    assert conv.upstream_done  # the native stream ends with "stop": true, no [DONE]
    final = conv.finish()
    timings = json.loads(payloads_of([sse("ollama/generate_raw_stream.sse")])[-1])["timings"]
    assert final["response"] == "" and final["done"] is True
    assert final["done_reason"] == "length"  # stop_type "limit"
    assert final["prompt_eval_count"] == timings["prompt_n"] + timings["cache_n"] == 13
    assert final["eval_count"] == 8
    assert final["prompt_eval_duration"] == round(timings["prompt_ms"] * 1e6)
    assert "context" not in final
    validate_generate([*chunks, final])


def test_native_stream_without_timings_counts_from_the_chunks() -> None:
    conv = converter(GenerateStreamConverter)
    chunks = conv.feed_event({"content": "a", "stop": False, "tokens_predicted": 1,
                              "tokens_evaluated": 6})
    chunks += conv.feed_event({"content": "", "stop": True, "stop_type": "eos",
                               "tokens_predicted": 1, "tokens_evaluated": 6, "timings": None})
    final = conv.finish()
    assert [c["response"] for c in chunks] == ["a"]
    assert (final["done_reason"], final["prompt_eval_count"], final["eval_count"]) == (
        "stop", 6, 1)
    validate_generate([*chunks, final])


def test_generate_over_chat_completions() -> None:
    conv = converter(GenerateStreamConverter)
    chunks = run(conv, sse("llama_server/chat_stream_usage.sse"))
    chunks += conv.feed_event({"choices": [{"delta": {"reasoning_content": "hm"}}]})
    assert chunks[0] == {"model": "tiny:latest", "created_at": CREATED, "response": " to",
                         "done": False}
    assert chunks[-1] == {"model": "tiny:latest", "created_at": CREATED, "response": "",
                          "thinking": "hm", "done": False}
    final = conv.finish()
    assert final["prompt_eval_count"] == 39
    validate_generate([*chunks, final])


def test_generate_over_v1_completions() -> None:
    conv = converter(GenerateStreamConverter)
    chunks = run(conv, sse("llama_server/completions_stream.sse"))
    assert "".join(c["response"] for c in chunks) == " red world one to hello to hello to"
    final = conv.finish()
    assert (final["done_reason"], final["prompt_eval_count"], final["eval_duration"]) == (
        "length", 13, 1_119_000)
    validate_generate([*chunks, final])


# --- ndjson and timestamps ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "line"),
    [
        ({"a": 1, "b": [True, None]}, b'{"a":1,"b":[true,null]}\n'),
        ({"t": "Zürich 🚀"}, '{"t":"Zürich 🚀"}\n'.encode()),
        ({"t": "<b>&</b>"}, b'{"t":"\\u003cb\\u003e\\u0026\\u003c/b\\u003e"}\n'),
        ({"t": "a\u2028b"}, b'{"t":"a\\u2028b"}\n'),
        ({"t": 'quote " and \\ and \n'}, b'{"t":"quote \\" and \\\\ and \\n"}\n'),
    ],
)
def test_ndjson(obj: Any, line: bytes) -> None:
    assert ndjson(obj) == line
    assert json.loads(line) == obj


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (1_738_326_896_123_456_789, "2025-01-31T12:34:56.123456789Z"),
        (1_738_326_896_123_456_000, "2025-01-31T12:34:56.123456Z"),  # Go trims zeros
        (1_738_326_896_100_000_000, "2025-01-31T12:34:56.1Z"),
        (1_738_326_896_000_000_000, "2025-01-31T12:34:56Z"),
        (1_738_326_896_000_000_001, "2025-01-31T12:34:56.000000001Z"),
        (0, "1970-01-01T00:00:00Z"),
    ],
)
def test_rfc3339_ns(ns: int, text: str) -> None:
    assert rfc3339_ns(ns) == text


@pytest.mark.parametrize(
    ("ts", "text"),
    [
        (1_738_326_896.123456, "2025-01-31T12:34:56.123456Z"),
        (1_738_326_896.5, "2025-01-31T12:34:56.5Z"),
        (1_738_326_896.0, "2025-01-31T12:34:56Z"),
        (1_738_326_896.9999996, "2025-01-31T12:34:57Z"),
    ],
)
def test_rfc3339_float(ts: float, text: str) -> None:
    assert rfc3339(ts) == text


def test_rfc3339_now() -> None:
    before = time.time()
    text = rfc3339_now()
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z", text)
    assert match is not None
    assert not (match.group(2) or "").endswith("0")
    seconds = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    assert abs(seconds.timestamp() - before) < 5
    ChatResponse.model_validate({"created_at": text, "message": {"role": "assistant"}})


# --- log probabilities, tokens and the final context -------------------------------------

# Recorded from the tiny model on real llama-server (ids, timestamps and
# generation_settings left out): a chat stream with logprobs/top_logprobs 2, and a native
# /completion stream with n_probs 2 and return_tokens.
CHAT_LOGPROBS_SSE = (
    b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"role":"assistant","c'
    b'ontent":null}}]}\n\n'
    b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":" to"},"log'
    b'probs":{"content":[{"id":263,"token":" to","bytes":[32,116,111],"logprob":-0.872'
    b'2447156906128,"top_logprobs":[{"id":263,"token":" to","bytes":[32,116,111],"logp'
    b'rob":-0.8722447156906128},{"id":286,"token":" one","bytes":[32,111,110,101],"log'
    b'prob":-1.5974429845809937}]}]}}]}\n\n'
    b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":" hello"},"'
    b'logprobs":{"content":[{"id":267,"token":" hello","bytes":[32,104,101,108,108,111'
    b'],"logprob":-1.005114197731018,"top_logprobs":[{"id":267,"token":" hello","bytes'
    b'":[32,104,101,108,108,111],"logprob":-1.005114197731018},{"id":291,"token":" fas'
    b't","bytes":[32,102,97,115,116],"logprob":-1.632062554359436}]}]}}]}\n\n'
    b'data: {"choices":[{"finish_reason":"length","index":0,"delta":{}}]}\n\n'
    b'data: {"choices":[],"usage":{"completion_tokens":2,"prompt_tokens":30,"total_tok'
    b'ens":32,"prompt_tokens_details":{"cached_tokens":29}},"timings":{"cache_n":29,"p'
    b'rompt_n":1,"prompt_ms":0.518,"prompt_per_token_ms":0.518,"prompt_per_second":193'
    b'0.5019305019305,"predicted_n":2,"predicted_ms":0.254,"predicted_per_token_ms":0.'
    b'254,"predicted_per_second":3937.007874015748}}\n\n'
    b"data: [DONE]\n\n"
)

NATIVE_LOGPROBS_SSE = (
    b'data: {"content":" red","tokens":[283],"stop":false,"tokens_predicted":1,"tokens'
    b'_evaluated":9,"completion_probabilities":[{"id":283,"token":" red","bytes":[32,1'
    b'14,101,100],"logprob":-0.6875848770141602,"top_logprobs":[{"id":283,"token":" re'
    b'd","bytes":[32,114,101,100],"logprob":-0.6875848770141602},{"id":294,"token":" s'
    b'mall","bytes":[32,115,109,97,108,108],"logprob":-2.3852758407592773}]}]}\n\n'
    b'data: {"content":" world","tokens":[269],"stop":false,"tokens_predicted":2,"toke'
    b'ns_evaluated":9,"completion_probabilities":[{"id":269,"token":" world","bytes":['
    b'32,119,111,114,108,100],"logprob":-1.7080223560333252,"top_logprobs":[{"id":269,'
    b'"token":" world","bytes":[32,119,111,114,108,100],"logprob":-1.7080223560333252}'
    b',{"id":283,"token":" red","bytes":[32,114,101,100],"logprob":-1.7473456859588623'
    b"}]}]}\n\n"
    b'data: {"content":"","tokens":[],"stop":true,"tokens_predicted":2,"tokens_evaluat'
    b'ed":9,"prompt":"<s> the cat","has_new_line":false,"truncated":false,"stop_type":'
    b'"limit","stopping_word":"","tokens_cached":10,"timings":{"cache_n":2,"prompt_n":'
    b'7,"prompt_ms":0.733,"prompt_per_token_ms":0.10471428571428572,"prompt_per_second'
    b'":9549.795361527968,"predicted_n":2,"predicted_ms":0.242,"predicted_per_token_ms'
    b'":0.242,"predicted_per_second":4132.231404958678}}\n\n'
)


def test_chat_stream_chunks_carry_their_logprobs() -> None:
    conv = converter(ChatStreamConverter, top_logprobs=1)
    chunks = run(conv, CHAT_LOGPROBS_SSE)
    assert [c["message"]["content"] for c in chunks] == [" to", " hello"]
    assert chunks[0]["logprobs"] == [{
        "token": " to", "logprob": -0.8722447156906128, "bytes": [32, 116, 111],
        "top_logprobs": [{"token": " to", "logprob": -0.8722447156906128,
                          "bytes": [32, 116, 111]}]}]
    assert conv.text == " to hello" and conv.tokens == []
    final = conv.finish()
    assert "logprobs" not in final and final["done_reason"] == "length"
    validate_chat([*chunks, final])


def test_without_top_logprobs_no_chunk_has_logprobs() -> None:
    chunks = run(converter(ChatStreamConverter), CHAT_LOGPROBS_SSE)
    assert all("logprobs" not in c for c in chunks)


@pytest.mark.parametrize("seed", range(5))
def test_native_stream_keeps_tokens_and_text_for_the_context(seed: int) -> None:
    conv = converter(GenerateStreamConverter, top_logprobs=0)
    pieces = list(chunked(NATIVE_LOGPROBS_SSE, random.Random(seed)))
    chunks = [c for payload in payloads_of(pieces) for c in conv.feed_payload(payload)]
    assert [c["response"] for c in chunks] == [" red", " world"]
    assert [c["logprobs"] for c in chunks] == [
        [{"token": " red", "logprob": -0.6875848770141602, "bytes": [32, 114, 101, 100]}],
        [{"token": " world", "logprob": -1.7080223560333252,
          "bytes": [32, 119, 111, 114, 108, 100]}]]
    assert conv.upstream_done and conv.tokens == [283, 269] and conv.text == " red world"
    final = conv.finish({"context": [1, 5, 283, 269]})
    assert final["context"] == [1, 5, 283, 269]
    assert list(final)[:6] == ["model", "created_at", "response", "done", "done_reason",
                               "context"]
    validate_generate([*chunks, final])


def test_an_event_with_only_logprobs_still_makes_a_chunk() -> None:
    conv = converter(GenerateStreamConverter, top_logprobs=0)
    event = {"content": "", "tokens": [7], "stop": False,
             "completion_probabilities": [{"token": "<x>", "logprob": -1.0, "bytes": []}]}
    chunks = conv.feed_event(event)
    assert len(chunks) == 1
    assert chunks[0]["response"] == "" and chunks[0]["logprobs"] == [
        {"token": "<x>", "logprob": -1.0}]
    assert converter(GenerateStreamConverter).feed_event(event) == []


# --- the relay's NDJSON transform ----------------------------------------------------------


def ndjson_of(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines()]


@pytest.mark.parametrize("size", [1, 13, 100_000])
async def test_ndjson_stream_writes_whole_lines_per_read_then_the_final_one(size: int) -> None:
    raw = sse("llama_server/chat_stream.sse")
    stream = NdjsonStream(converter(ChatStreamConverter))
    writes = [stream.feed(raw[i:i + size]) for i in range(0, len(raw), size)]
    assert all(w.endswith(b"\n") for w in writes if w)  # never half a line
    assert stream.ended
    final = ndjson_of(await stream.finish())
    lines = ndjson_of(b"".join(writes)) + final
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    validate_chat(lines)


async def test_ndjson_stream_final_line_carries_the_final_fields() -> None:
    async def context() -> dict[str, Any]:
        return {"context": [1, 2, 3]}

    stream = NdjsonStream(converter(GenerateStreamConverter), context)
    stream.feed(sse("ollama/generate_raw_stream.sse"))
    [final] = ndjson_of(await stream.finish())
    assert final["done"] is True and final["context"] == [1, 2, 3]


async def test_ndjson_stream_ends_with_an_error_line_when_the_final_fields_fail() -> None:
    async def context() -> dict[str, Any]:
        raise UpstreamError("no context")

    stream = NdjsonStream(converter(GenerateStreamConverter), context)
    stream.feed(sse("ollama/generate_raw_stream.sse"))
    assert ndjson_of(await stream.finish()) == [{"error": "no context"}]


async def test_ndjson_stream_stops_at_an_upstream_error_event() -> None:
    stream = NdjsonStream(converter(ChatStreamConverter))
    error = b'data: {"error":{"code":500,"message":"boom","type":"server_error"}}\n\n'
    assert ndjson_of(stream.feed(error)) == [{"error": "boom"}]
    assert stream.ended
    assert stream.feed(b'data: {"choices":[{"delta":{"content":"late"}}]}\n\n') == b""
    assert await stream.finish() == b""


async def test_ndjson_stream_without_its_end_is_not_ended_and_says_why() -> None:
    raw = sse("llama_server/chat_stream.sse")
    stream = NdjsonStream(converter(ChatStreamConverter))
    stream.feed(raw[: raw.index(b"data: [DONE]")])
    assert all(line["done"] is False for line in ndjson_of(await stream.finish()))
    assert not stream.ended
    assert ndjson_of(stream.broken("it broke")) == [{"error": "it broke"}]
