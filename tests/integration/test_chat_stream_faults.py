"""core.chat when llama-server misbehaves, with the fake llama-server's fault switches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llamarunner.service import Service
from llamarunner.service.chat import ChatError, ChatEvent, TextDelta

HI = [{"role": "user", "content": "hi"}]


async def start(write_config: Any, start_service: Any, fake_bin: Path, args: dict[str, Any],
                **extra: Any) -> Service:
    # The fake's "model" is not a GGUF file: a template setting lets it chat.
    config = write_config({"m": {"path": str(fake_bin), "chat_template": "chatml",
                                 "args": args}}, runtime=fake_bin, **extra)
    running = await start_service(config)
    service: Service = running.service
    return service


async def collect(service: Service) -> list[ChatEvent]:
    return [event async for event in service.chat_stream("m", HI)]


async def test_a_crash_mid_stream_ends_with_an_error_after_the_text(
        write_config: Any, start_service: Any, fake_bin: Path) -> None:
    service = await start(write_config, start_service, fake_bin,
                          {"fault-crash-mid-stream": 3})
    *pieces, last = await collect(service)
    assert len(pieces) == 3 and all(isinstance(p, TextDelta) for p in pieces)
    assert isinstance(last, ChatError)
    assert last.message.startswith("llama-server for model 'm' stopped in the middle of the "
                                   "answer")
    runner = service.manager.runner("m")
    assert runner is not None and runner.inflight == 0


async def test_an_error_status_comes_as_llama_servers_message(
        write_config: Any, start_service: Any, fake_bin: Path) -> None:
    service = await start(write_config, start_service, fake_bin, {"fault-http-status": 400})
    [error] = await collect(service)
    assert isinstance(error, ChatError) and "context" in error.message


async def test_a_silent_runner_hits_the_first_token_watchdog(
        write_config: Any, start_service: Any, fake_bin: Path) -> None:
    service = await start(write_config, start_service, fake_bin,
                          {"fault-first-token-delay": 5},
                          scheduler={"first_token_timeout": "1s"})
    [error] = await collect(service)
    assert isinstance(error, ChatError) and error.code == "first_token_timeout"
    assert "scheduler.first_token_timeout" in error.message
