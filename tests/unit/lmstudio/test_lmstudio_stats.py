"""LM Studio's stats from recorded llama-server timings: rates, seconds, stop reasons."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llamarunner.proxy.lmstudio.stats import (
    finish_reason_of,
    generation_stats,
    requested_max_tokens,
    stop_reason,
)
from llamarunner.proxy.ollama.stream import DONE, parse_sse_lines

DATA = Path(__file__).parents[2] / "data" / "llama_server"


def recorded(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / name).read_text())
    return data


def last_stream_event_with_timings(name: str) -> dict[str, Any]:
    payloads, _ = parse_sse_lines((DATA / name).read_bytes(), final=True)
    events = [json.loads(p) for p in payloads if p != DONE]
    return next(e for e in reversed(events) if "timings" in e)


@pytest.mark.parametrize("source,ttft,generation,rate", [
    # prompt_ms 2.479 + predicted_ms 1.734; llama-server's own predicted_per_second
    ("chat.json", 0.002479, 0.004213, 4036.908881199539),
    ("completions.json", 0.000668, 0.001872, 5813.953488372093),
])
def test_stats_from_recorded_responses(source: str, ttft: float, generation: float,
                                       rate: float) -> None:
    response = recorded(source)
    stats = generation_stats(response["timings"], finish_reason_of(response),
                             usage=response["usage"], max_tokens=8)
    assert stats == {"tokens_per_second": rate, "time_to_first_token": ttft,
                     "generation_time": generation, "stop_reason": "maxPredictedTokensReached"}


@pytest.mark.parametrize("source", ["chat_stream.sse", "chat_stream_usage.sse",
                                    "completions_stream.sse"])
def test_streams_carry_timings_on_their_last_event(source: str) -> None:
    event = last_stream_event_with_timings(source)
    stats = generation_stats(event["timings"], "length")
    timings = event["timings"]
    assert stats["tokens_per_second"] == timings["predicted_per_second"]
    assert stats["time_to_first_token"] == round(timings["prompt_ms"] / 1000, 6)
    assert stats["generation_time"] == round(
        (timings["prompt_ms"] + timings["predicted_ms"]) / 1000, 6)


def test_decoding_rate_is_tokens_over_generation_minus_first_token() -> None:
    # LM Studio's own definition: rate = completion tokens / (generation - ttft).
    stats = generation_stats({"prompt_ms": 500, "predicted_ms": 2000, "predicted_n": 100},
                             "stop")
    assert stats["tokens_per_second"] == 50.0
    assert stats["generation_time"] - stats["time_to_first_token"] == 2.0


@pytest.mark.parametrize("timings,usage,rate", [
    (None, None, 0.0),  # an older llama-server without timings
    ({}, {"completion_tokens": 10}, 0.0),  # no decoding time to divide by
    ({"predicted_ms": 500}, {"completion_tokens": 10}, 20.0),  # count from usage
    ({"predicted_ms": 500, "predicted_n": 5, "predicted_per_second": -1}, None, 0.0),
    ({"predicted_ms": "x", "prompt_ms": None, "predicted_n": True}, None, 0.0),
])
def test_missing_or_odd_timings_give_zeros_not_errors(timings, usage, rate) -> None:
    stats = generation_stats(timings, "stop", usage=usage)
    assert stats["tokens_per_second"] == rate
    assert stats["time_to_first_token"] >= 0 and stats["generation_time"] >= 0
    assert stats["stop_reason"] == "eosFound"


@pytest.mark.parametrize("finish,predicted,max_tokens,expected", [
    ("stop", 3, None, "eosFound"),
    ("tool_calls", 12, None, "toolCalls"),
    ("function_call", 12, None, "toolCalls"),
    ("length", 8, 8, "maxPredictedTokensReached"),
    ("length", 8, None, "maxPredictedTokensReached"),  # no limit asked: keep the common one
    ("length", 100, 4096, "contextLengthReached"),  # stopped short of the limit: context full
    ("length", None, 4096, "maxPredictedTokensReached"),
    (None, 3, None, "failed"),
    ("content_filter", 3, None, "failed"),
])
def test_stop_reason_vocabulary(finish, predicted, max_tokens, expected) -> None:
    assert stop_reason(finish, predicted=predicted, max_tokens=max_tokens) == expected


@pytest.mark.parametrize("body,expected", [
    ({"max_tokens": 8}, 8),
    ({"max_completion_tokens": 16, "max_tokens": 8}, 16),
    ({"n_predict": 4}, 4),
    ({"max_tokens": -1}, None),  # LM Studio's "no limit"
    ({"max_tokens": True}, None),
    ({"max_tokens": "8"}, None),
    ({}, None),
])
def test_requested_max_tokens(body, expected) -> None:
    assert requested_max_tokens(body) == expected


@pytest.mark.parametrize("response,expected", [
    (recorded("chat.json"), "length"),
    ({"choices": []}, None),
    ({"choices": [{"finish_reason": None}, {"finish_reason": "stop"}]}, "stop"),
    ({"choices": "x"}, None),
    ({}, None),
])
def test_finish_reason_of(response, expected) -> None:
    assert finish_reason_of(response) == expected
