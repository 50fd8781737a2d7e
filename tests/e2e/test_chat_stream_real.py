"""core.chat with a real chat model: SmolLM2-135M-Instruct on a real llama-server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.support.tiny_gguf import write_tiny_gguf

from llamarunner.service import Service
from llamarunner.service.chat import ChatError, ChatEvent, ChatSummary, ReasoningDelta, TextDelta

COLORS = ("red", "blue", "green", "yellow", "orange", "purple", "pink", "black", "white",
          "brown", "violet", "gray", "grey", "indigo")
ASK_COLORS = [{"role": "user", "content": "Name three colors."}]


@pytest.fixture
async def service(write_config: Callable[..., Path], start_service: Any,
                  llama_server_bin: Path, smollm2_model: Path, tmp_path: Path) -> Service:
    plain = write_tiny_gguf(tmp_path / "plain.gguf", name="plain", chat_template=None,
                            architecture_extras={"general.architecture": "mystery"})
    config = write_config(
        {"smol": {"path": str(smollm2_model), "args": {"ctx-size": 2048, "threads": 2}},
         "plain": {"path": str(plain)}},
        runtime=llama_server_bin)
    running = await start_service(config)
    result: Service = running.service
    return result


async def collect(service: Service, model: str, messages: list[dict[str, str]],
                  **settings: Any) -> list[ChatEvent]:
    return [event async for event in service.chat_stream(model, messages, **settings)]


def answer(events: list[ChatEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


async def test_names_three_colors_with_stats_last(service: Service) -> None:
    events = await collect(service, "smol", ASK_COLORS, temperature=0, max_tokens=64)

    *pieces, last = events
    assert pieces and all(isinstance(e, TextDelta | ReasoningDelta) for e in pieces)
    assert isinstance(last, ChatSummary), last
    text = answer(events).lower()
    assert any(color in text for color in COLORS), text
    assert last.model == "smol"
    assert last.finish_reason in ("stop", "length")
    assert last.generated_tokens and last.generated_tokens >= len(pieces) - 1
    assert last.prompt_tokens and last.prompt_tokens > 5  # the template's turns and the text
    assert last.tokens_per_second and last.tokens_per_second > 0
    assert last.time_to_first_token is not None and last.time_to_first_token > 0
    assert last.load_seconds > 0  # this first chat started the model
    runner = service.manager.runner("smol")
    assert runner is not None and runner.inflight == 0  # the lease was released


async def test_history_system_prompt_and_limits_reach_the_model(service: Service) -> None:
    events = await collect(
        service, "smol",
        [*ASK_COLORS, {"role": "assistant", "content": "Red, green and blue."},
         {"role": "user", "content": "Name one more."}],
        system="You are a helpful assistant.", temperature=0, max_tokens=3)
    last = events[-1]
    assert isinstance(last, ChatSummary), last
    assert last.finish_reason == "length" and last.generated_tokens == 3
    assert "stopped at the token limit" in last.describe()
    assert last.prompt_tokens and last.prompt_tokens > 20


async def test_stop_closes_the_stream_and_frees_the_slot(service: Service) -> None:
    story = [{"role": "user", "content": "Write a very long story about a lighthouse."}]
    first = asyncio.Event()
    seen: list[ChatEvent] = []

    async def consume() -> None:
        async for event in service.chat_stream("smol", story, max_tokens=2000):
            seen.append(event)
            first.set()

    task = asyncio.get_running_loop().create_task(consume(), name="test:chat")
    await asyncio.wait_for(first.wait(), 120)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert not any(isinstance(e, ChatSummary | ChatError) for e in seen)

    runner = service.manager.runner("smol")
    assert runner is not None and runner.inflight == 0
    # llama-server noticed the closed connection and stopped generating.
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        async with service.http.get(runner.base_url + "/slots",
                                    headers=runner.auth_headers) as response:
            slots = await response.json()
        if not any(slot["is_processing"] for slot in slots):
            break
        assert asyncio.get_running_loop().time() < deadline, slots
        await asyncio.sleep(0.05)
    # The same runner answers the next chat.
    events = await collect(service, "smol", ASK_COLORS, temperature=0, max_tokens=16)
    assert isinstance(events[-1], ChatSummary) and answer(events)
    assert service.manager.runner("smol") is runner and runner.pid is not None


async def test_refusals_come_as_error_events(service: Service) -> None:
    [refused] = await collect(service, "plain", ASK_COLORS)
    assert isinstance(refused, ChatError) and refused.code == "chat_not_supported"
    assert "model 'plain' cannot chat" in refused.message
    assert "architecture (mystery)" in refused.message
    [unknown] = await collect(service, "nope", ASK_COLORS)
    assert unknown == ChatError("model 'nope' not found", "model_not_found")
    [bad] = await collect(service, "smol", ASK_COLORS, temperature=5)
    assert isinstance(bad, ChatError) and bad.code == "invalid_request"
    states = {info.name: info.state for info in service.manager.snapshot()}
    assert states == {"smol": "stopped", "plain": "stopped"}  # nothing was loaded
