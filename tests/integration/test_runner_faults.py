"""Faults a real llama-server cannot be made to show, with the fake llama-server."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import psutil

from llamarunner.proxy.relay import UPSTREAM_TIMEOUT


def chat_body(model: str, **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


async def post(base_url: str, path: str, body: dict[str, object]) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http, http.post(base_url + path, json=body) as resp:
        return resp.status, await resp.read()


async def test_crash_mid_stream_ends_with_an_error_event_and_restarts(
    write_config, start_service, fake_bin
) -> None:
    config = write_config({"m": {"path": str(fake_bin), "args": {"fault-crash-mid-stream": 3}}},
                          runtime=fake_bin)
    running = await start_service(config)
    started = time.monotonic()
    status, body = await post(running.base_url, "/v1/chat/completions",
                              chat_body("m", stream=True))
    assert status == 200
    events = [line for line in body.split(b"\n\n") if line.strip()]
    assert len(events) >= 4  # three chunks, then the error
    assert b'"error"' in events[-1]
    assert time.monotonic() - started < 5
    runner = running.service.manager.runner("m")
    for _ in range(40):
        if runner.state.value == "failed":
            break
        await asyncio.sleep(0.05)
    assert runner.state.value == "failed"
    assert runner.last_error is not None and runner.last_error.exit_code == 137
    # The next request starts it again.
    status, _ = await post(running.base_url, "/v1/chat/completions", chat_body("m"))
    assert status == 200
    assert runner.state.value == "ready"


async def test_exit_on_start_fails_the_request_at_once_with_the_output(
    write_config, start_service, fake_bin
) -> None:
    config = write_config({"m": {"path": str(fake_bin), "args": {"fault-exit-on-start": 3}}},
                          runtime=fake_bin)
    running = await start_service(config)
    started = time.monotonic()
    status, body = await post(running.base_url, "/v1/chat/completions", chat_body("m"))
    assert time.monotonic() - started < 5
    assert status == 502
    message = (await _json(body))["error"]["message"]
    assert "exit code 3" in message
    assert "last output" in message


async def test_a_silent_stalled_load_fails_after_load_timeout(
    write_config, start_service, fake_bin
) -> None:
    config = write_config({"m": {"path": str(fake_bin), "args": {"fault-never-healthy": True}}},
                          runtime=fake_bin, scheduler={"load_timeout": "1s"})
    running = await start_service(config)
    status, body = await post(running.base_url, "/v1/chat/completions", chat_body("m"))
    assert status == 502
    assert "load_timeout" in (await _json(body))["error"]["message"]


async def test_a_slow_load_that_keeps_logging_is_not_killed(
    write_config, start_service, fake_bin
) -> None:
    config = write_config({"m": {"path": str(fake_bin), "args": {"fault-slow-health": 2.5}}},
                          runtime=fake_bin, scheduler={"load_timeout": "1s"})
    running = await start_service(config)
    status, _ = await post(running.base_url, "/v1/chat/completions", chat_body("m"))
    assert status == 200


async def test_a_child_ignoring_sigterm_is_killed_after_the_grace(
    write_config, start_service, fake_bin
) -> None:
    config = write_config(
        {"m": {"path": str(fake_bin), "args": {"fault-ignore-sigterm": True}}},
        runtime=fake_bin, scheduler={"stop_grace": "0.5s"},
    )
    running = await start_service(config)
    await post(running.base_url, "/v1/chat/completions", chat_body("m"))
    runner = running.service.manager.runner("m")
    pid = runner.pid
    started = time.monotonic()
    assert (await running.service.manager.unload("m")).value == "unloaded"
    assert 0.4 < time.monotonic() - started < 3
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


async def test_stopping_kills_a_forked_grandchild_too(
    write_config, start_service, fake_bin
) -> None:
    config = write_config(
        {"m": {"path": str(fake_bin), "args": {"fault-fork-grandchild": True}}},
        runtime=fake_bin,
    )
    running = await start_service(config)
    await post(running.base_url, "/v1/chat/completions", chat_body("m"))
    pid = running.service.manager.runner("m").pid
    grandchildren = psutil.Process(pid).children(recursive=True)
    assert grandchildren
    await running.service.manager.unload("m")
    _, alive = psutil.wait_procs(grandchildren, timeout=2)
    assert not alive


async def test_queue_limit_answers_429_with_retry_after(
    write_config, start_service, fake_bin
) -> None:
    config = write_config({"m": {"path": str(fake_bin), "args": {"fault-slow-health": 1.5}}},
                          runtime=fake_bin, scheduler={"max_queue": 2})
    running = await start_service(config)
    async with aiohttp.ClientSession() as http:
        async def one() -> tuple[int, str | None]:
            async with http.post(running.base_url + "/v1/chat/completions",
                                 json=chat_body("m")) as resp:
                await resp.read()
                return resp.status, resp.headers.get("Retry-After")

        results = await asyncio.gather(*[one() for _ in range(4)])
    statuses = sorted(status for status, _ in results)
    assert statuses == [200, 200, 429, 429]
    assert all(retry == "1" for status, retry in results if status == 429)


async def test_eviction_drains_running_requests_instead_of_cutting_them(
    write_config, start_service, fake_bin
) -> None:
    slow = {"fault-chunk-interval": 0.1, "fault-chunks": 15}
    config = write_config({"a": {"path": str(fake_bin), "args": slow},
                           "b": {"path": str(fake_bin)}}, runtime=fake_bin)
    running = await start_service(config)
    stream_a = asyncio.create_task(post(running.base_url, "/v1/chat/completions",
                                        chat_body("a", stream=True)))
    await asyncio.sleep(0.6)  # a is loaded and streaming
    status_b, _ = await post(running.base_url, "/v1/chat/completions", chat_body("b"))
    status_a, body_a = await stream_a
    assert status_a == 200 and status_b == 200
    assert body_a.rstrip().endswith(b"data: [DONE]")  # a finished its whole stream
    states = {i.name: i.state for i in running.service.manager.snapshot()}
    assert states == {"a": "stopped", "b": "ready"}


async def test_slow_first_token_and_long_streams_are_not_cut(
    write_config, start_service, fake_bin
) -> None:
    # No total or read timeout exists on the relay, so minutes behave like seconds here.
    assert UPSTREAM_TIMEOUT.total is None and UPSTREAM_TIMEOUT.sock_read is None
    args = {"fault-first-token-delay": 2, "fault-chunk-interval": 0.2, "fault-chunks": 10}
    config = write_config({"m": {"path": str(fake_bin), "args": args}}, runtime=fake_bin)
    running = await start_service(config)
    status, body = await post(running.base_url, "/v1/chat/completions",
                              chat_body("m", stream=True))
    assert status == 200
    # A role chunk, ten content chunks, the finish chunk with timings, then [DONE].
    assert body.count(b"data: ") == 13
    assert body.rstrip().endswith(b"data: [DONE]")


async def test_upstream_errors_keep_their_status_in_openai_shape(
    write_config, start_service, fake_bin
) -> None:
    config = write_config({"m": {"path": str(fake_bin), "args": {"fault-http-status": 400}}},
                          runtime=fake_bin)
    running = await start_service(config)
    status, body = await post(running.base_url, "/v1/chat/completions", chat_body("m"))
    assert status == 400
    error = (await _json(body))["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "context" in error["message"]


async def _json(body: bytes) -> dict:
    import json

    return json.loads(body)
