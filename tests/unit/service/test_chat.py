"""core.chat's pure parts: the request body, the stream reader on recorded SSE, the stats line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llamarunner.core.errors import BadRequestError
from llamarunner.proxy.ollama.stream import parse_sse_lines
from llamarunner.service.chat import (
    ChatStreamReader,
    ChatSummary,
    ReasoningDelta,
    TextDelta,
    chat_request,
)

LLAMA = Path(__file__).resolve().parents[2] / "data" / "llama_server"
HI = [{"role": "user", "content": "hi"}]


def read_recorded(name: str) -> tuple[ChatStreamReader, list[TextDelta | ReasoningDelta]]:
    payloads, _ = parse_sse_lines((LLAMA / name).read_bytes(), final=True)
    reader = ChatStreamReader()
    events = [event for payload in payloads for event in reader.feed(payload)]
    return reader, events


def event(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


# ---- chat_request ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, {}),
        ({"temperature": 0.0}, {"temperature": 0.0}),
        ({"temperature": 2, "max_tokens": 1}, {"temperature": 2, "max_tokens": 1}),
        ({"max_tokens": 512}, {"max_tokens": 512}),
    ],
)
def test_request_carries_only_the_settings_given(kwargs: dict[str, Any],
                                                 expected: dict[str, Any]) -> None:
    body = chat_request("m", HI, **kwargs)
    assert body == {"model": "m", "messages": HI, "stream": True,
                    "stream_options": {"include_usage": True}, **expected}


def test_system_prompt_goes_first_and_messages_are_copied() -> None:
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    body = chat_request("m", messages, system="Be brief.")
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, *messages]
    body["messages"][1]["content"] = "changed"
    assert messages[0]["content"] == "a"
    assert chat_request("m", messages, system="")["messages"] == messages


@pytest.mark.parametrize(
    ("messages", "kwargs", "says"),
    [
        ([], {}, "conversation is empty"),
        (HI, {"temperature": -0.5}, "temperature -0.5 is out of range; use 0 to 2"),
        (HI, {"temperature": 2.5}, "use 0 to 2"),
        (HI, {"max_tokens": 0}, "max tokens 0 is too small"),
    ],
)
def test_bad_settings_say_what_to_change(messages: list[dict[str, str]],
                                          kwargs: dict[str, Any], says: str) -> None:
    with pytest.raises(BadRequestError, match=says):
        chat_request("m", messages, **kwargs)


# ---- ChatStreamReader ----------------------------------------------------------------


def test_reads_a_recorded_stream_with_usage() -> None:
    reader, events = read_recorded("chat_stream_usage.sse")
    assert all(isinstance(e, TextDelta) for e in events)
    assert "".join(e.text for e in events) == " to hello" * 4
    assert reader.done and reader.error is None
    summary = reader.summary("tiny", 0.25, 1.5)
    assert summary == ChatSummary(model="tiny", prompt_tokens=39, generated_tokens=8,
                                  tokens_per_second=pytest.approx(4605.263157894737),
                                  time_to_first_token=0.25, finish_reason="length",
                                  load_seconds=1.5)


def test_reads_a_recorded_stream_without_usage_from_timings() -> None:
    reader, events = read_recorded("chat_stream.sse")
    assert len(events) == 8 and reader.done
    summary = reader.summary("tiny", None)
    # Without a usage event the prompt is what was computed plus what was cached.
    assert (summary.prompt_tokens, summary.generated_tokens) == (39, 8)
    assert summary.tokens_per_second == pytest.approx(4366.812227074236)
    assert summary.finish_reason == "length"


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        ({"role": "assistant", "content": None}, []),
        ({"content": ""}, []),
        ({"content": "Hi"}, [TextDelta("Hi")]),
        ({"reasoning_content": "Hmm"}, [ReasoningDelta("Hmm")]),
        ({"reasoning_content": "so", "content": "Yes"}, [ReasoningDelta("so"), TextDelta("Yes")]),
        ({"tool_calls": [{"index": 0}]}, []),
    ],
)
def test_deltas(delta: dict[str, Any], expected: list[TextDelta | ReasoningDelta]) -> None:
    reader = ChatStreamReader()
    assert reader.feed(event({"choices": [{"index": 0, "delta": delta}]})) == expected


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (event({"error": {"code": 500, "message": "context full", "type": "server_error"}}),
         "context full"),
        (event({"error": "plain text"}), "plain text"),
        (event({"error": {"code": 1}}), '{"code": 1}'),
    ],
)
def test_error_events_end_the_stream(payload: bytes, message: str) -> None:
    reader = ChatStreamReader()
    assert reader.feed(payload) == []
    assert reader.error == message and not reader.done


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2]", b"{}", event({"choices": [3]})])
def test_odd_events_are_ignored(payload: bytes) -> None:
    reader = ChatStreamReader()
    assert reader.feed(payload) == [] and reader.error is None


def test_summary_without_numbers_is_all_unknown() -> None:
    summary = ChatStreamReader().summary("m", None)
    assert (summary.prompt_tokens, summary.generated_tokens, summary.tokens_per_second,
            summary.finish_reason) == (None, None, None, None)
    assert summary.describe() == "no statistics"


# ---- ChatSummary.describe --------------------------------------------------------------


@pytest.mark.parametrize(
    ("summary", "text"),
    [
        (ChatSummary("m", 10, 24, 98.25, 0.2134, "stop"),
         "24 tokens · 98.2 tokens/s · first token after 213 ms"),
        (ChatSummary("m", 10, 512, 12.0, 3.5, "length", load_seconds=1.25),
         "512 tokens · 12.0 tokens/s · first token after 3.50 s · loaded in 1.25 s · "
         "stopped at the token limit"),
        (ChatSummary("m", None, 3, None, None, "stop", load_seconds=0.01), "3 tokens"),
    ],
)
def test_stats_line(summary: ChatSummary, text: str) -> None:
    assert summary.describe() == text
