"""Faults a real llama-server cannot be made to show, with the fake llama-server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time

import aiohttp
import psutil
from tests.support.tiny_gguf import write_tiny_gguf

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


# ---- first-token watchdog ------------------------------------------------------------


async def test_first_token_watchdog_passes_just_under_and_fails_just_over(
    write_config, start_service, fake_bin
) -> None:
    """A 90 s first token with the default 10m timeout, shown on a scaled clock.

    The watchdog is one deadline (`first_token_timeout` after the request is sent) that
    stops counting at the first body bytes; nothing else limits a request (UPSTREAM_TIMEOUT
    has no total or read limit, asserted above). So what holds for 1 s holds for 600 s:
    a first token at timeout - ε succeeds and then streams as long as it likes, one at
    timeout + ε fails with 504. Here timeout = 1 s, ε = 0.4 s, and the stream after the
    late first token runs several times longer than the timeout.
    """
    from llamarunner.config.schema import SchedulerConfig

    assert SchedulerConfig().first_token_timeout >= 90  # the default lets 90 s through
    slow = {"fault-first-token-delay": 0.6, "fault-chunk-interval": 0.25, "fault-chunks": 12}
    late = {"fault-first-token-delay": 1.4}
    config = write_config({"slow": {"path": str(fake_bin), "args": slow},
                           "late": {"path": str(fake_bin), "args": late}},
                          runtime=fake_bin,
                          scheduler={"first_token_timeout": "1s", "max_loaded_models": 2})
    running = await start_service(config)
    ok, too_late = await asyncio.gather(
        post(running.base_url, "/v1/chat/completions", chat_body("slow", stream=True)),
        post(running.base_url, "/v1/chat/completions", chat_body("late", stream=True)),
    )
    assert ok[0] == 200 and ok[1].rstrip().endswith(b"data: [DONE]")  # ran ~3.3 s in all
    assert too_late[0] == 504
    assert "first_token_timeout" in (await _json(too_late[1]))["error"]["message"]


async def test_first_token_timeout_minus_one_never_fires(
    write_config, start_service, fake_bin
) -> None:
    config = write_config({"m": {"path": str(fake_bin),
                                 "args": {"fault-first-token-delay": 0.5}}},
                          runtime=fake_bin, scheduler={"first_token_timeout": -1})
    running = await start_service(config)
    assert running.service.manager.scheduler.first_token_timeout == float("inf")
    status, _ = await post(running.base_url, "/v1/chat/completions", chat_body("m"))
    assert status == 200


# ---- client disconnects ----------------------------------------------------------------


async def _disconnect_after(url: str, body: dict[str, object], delay: float) -> None:
    async with aiohttp.ClientSession() as http:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay), http.post(url, json=body) as resp:
                async for _ in resp.content.iter_any():
                    pass


async def _settled(manager, name: str) -> None:
    for _ in range(100):
        runner = manager.runner(name)
        if runner is not None and runner.inflight == 0 and not manager._waiters:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("in-flight counters did not return to zero")


async def test_a_client_leaving_mid_stream_closes_upstream_and_frees_the_lease(
    write_config, start_service, fake_bin, tmp_path
) -> None:
    log = tmp_path / "disconnects.log"
    args = {"fault-chunk-interval": 0.05, "fault-chunks": 200,
            "fault-log-disconnects": str(log)}
    config = write_config({"m": {"path": str(fake_bin), "args": args}}, runtime=fake_bin)
    running = await start_service(config)
    manager = running.service.manager
    await manager.load("m")
    url = running.base_url + "/v1/chat/completions"
    await _disconnect_after(url, chat_body("m", stream=True), 0.4)
    await _settled(manager, "m")
    for _ in range(60):
        if log.exists():
            break
        await asyncio.sleep(0.05)
    lines = log.read_text().split()
    assert lines[0] == "/v1/chat/completions"
    # Nothing was relayed after the release: the stream stopped well before its 10 s.
    assert manager.runner("m").state.value == "ready"


async def test_a_client_leaving_while_queued_or_loading_leaves_no_trace(
    write_config, start_service, fake_bin
) -> None:
    config = write_config({"m": {"path": str(fake_bin), "args": {"fault-slow-health": 0.8}},
                           "busy": {"path": str(fake_bin),
                                    "args": {"fault-chunk-interval": 0.05, "fault-chunks": 12}}},
                          runtime=fake_bin)
    running = await start_service(config)
    manager = running.service.manager
    url = running.base_url + "/v1/chat/completions"
    # While its model loads: the load goes on (another client may want it) but no lease.
    await _disconnect_after(url, chat_body("m"), 0.3)
    assert manager.runner("m").inflight == 0
    await _settled(manager, "m")
    # While queued behind a busy model (one slot): the waiter leaves the queue.
    stream = asyncio.create_task(_post_url(url, chat_body("busy", stream=True)))
    for _ in range(100):
        if manager.runner("busy").inflight:
            break
        await asyncio.sleep(0.02)
    await _disconnect_after(url, chat_body("m"), 0.2)
    for _ in range(50):  # the server cancels the handler just after the socket closes
        if not any(w.model == "m" for w in manager._waiters):
            break
        await asyncio.sleep(0.02)
    assert not any(w.model == "m" for w in manager._waiters)
    status, body = await stream
    assert status == 200 and body.rstrip().endswith(b"data: [DONE]")
    await _settled(manager, "busy")
    assert manager.runner("m").inflight == 0


async def _post_url(url: str, body: dict[str, object]) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http, http.post(url, json=body) as resp:
        return resp.status, await resp.read()


# ---- a port that is not ours -------------------------------------------------------------


async def test_a_foreign_server_on_the_chosen_port_is_never_used(
    write_config, start_service, fake_bin, monkeypatch
) -> None:
    from aiohttp import web

    from llamarunner.runner import model_runner

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def foreign(_: web.Request) -> web.Response:
        return web.json_response({"choices": [{"message": {"content": "FOREIGN"}}]})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", health)
    app.router.add_post("/v1/chat/completions", foreign)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    taken = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    real_pick = model_runner.pick_free_port
    picks: list[int] = []

    def pick_taken_first(host: str = model_runner.RUNNER_HOST) -> int:
        picks.append(taken if not picks else real_pick(host))
        return picks[-1]

    monkeypatch.setattr(model_runner, "pick_free_port", pick_taken_first)
    try:
        config = write_config({"m": {"path": str(fake_bin)}}, runtime=fake_bin)
        running = await start_service(config)
        status, body = await post(running.base_url, "/v1/chat/completions", chat_body("m"))
        assert status == 200 and b"FOREIGN" not in body
        assert len(picks) == 2 and running.service.manager.runner("m").port == picks[1]
    finally:
        await runner.cleanup()


async def test_identity_falls_back_to_the_alias_when_sockets_are_hidden(
    write_config, start_service, fake_bin, monkeypatch
) -> None:
    from llamarunner.runner import model_runner

    monkeypatch.setattr(model_runner, "_listens_on", lambda pid, port: None)
    config = write_config({"m": {"path": str(fake_bin)}}, runtime=fake_bin)
    running = await start_service(config)
    status, _ = await post(running.base_url, "/v1/chat/completions", chat_body("m"))
    assert status == 200


# ---- the real llama-server -----------------------------------------------------------


async def test_real_llama_server_killed_mid_stream(
    write_config, start_service, llama_server_bin, tmp_path
) -> None:
    import os
    import signal

    # A context long enough that the stream is still running when the kill lands (the
    # usual tiny model's 256 tokens are done in a few dozen milliseconds).
    long_context = write_tiny_gguf(tmp_path / "long.gguf", name="long", context_length=32768)
    config = write_config({"tiny": {"path": str(long_context), "args": {"ctx-size": 8192}}},
                          runtime=llama_server_bin)
    running = await start_service(config)
    manager = running.service.manager
    body = chat_body("tiny", stream=True, max_tokens=8000, ignore_eos=True)
    async with aiohttp.ClientSession() as http, http.post(
        running.base_url + "/v1/chat/completions", json=body
    ) as resp:
        assert resp.status == 200
        received = await resp.content.readany()
        pid = manager.runner("tiny").pid
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        async for chunk in resp.content.iter_any():
            received += chunk
        # Ends soon after the kill rather than hanging (a generous bound: loaded machines).
        assert time.monotonic() - killed < 10.0
    last = [e for e in received.split(b"\n\n") if e.strip()][-1]
    assert b'"error"' in last and b"stopped in the middle" in last
    runner = manager.runner("tiny")
    for _ in range(50):
        if runner.state.value == "failed":
            break
        await asyncio.sleep(0.02)
    assert runner.last_error is not None and runner.last_error.exit_code == -9
    assert runner.last_error.tail
    status, _ = await post(running.base_url, "/v1/chat/completions",
                           chat_body("tiny", max_tokens=2))
    assert status == 200


async def test_real_llama_server_that_exits_at_once_fails_the_request_fast(
    write_config, start_service, llama_server_bin, tiny_model, tmp_path
) -> None:
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("this is not a GGUF file\n" * 10)
    config = write_config(
        {"bogus-flag": {"path": str(tiny_model), "args": {"no-such-flag-xyz": True}},
         "not-gguf": {"path": str(not_gguf)}},
        runtime=llama_server_bin, scheduler={"max_loaded_models": 2},
    )
    running = await start_service(config)
    for name in ("bogus-flag", "not-gguf"):
        started = time.monotonic()
        status, body = await post(running.base_url, "/v1/chat/completions", chat_body(name))
        assert status == 502, body
        message = (await _json(body))["error"]["message"]
        runner = running.service.manager.runner(name)
        exited_at = time.monotonic()
        assert "exited while loading" in message and "last output" in message
        assert runner.last_error is not None and runner.last_error.tail
        # Bounded by the process's own time to fail plus one 20 ms health poll.
        assert exited_at - started < 5


async def test_a_cpu_fault_while_loading_retries_once_without_weight_repacking(
    write_config, start_service, fake_bin, tmp_path, monkeypatch
) -> None:
    # Some virtual machines advertise AMX yet fault on its first use: llama-server dies of
    # SIGSEGV while loading a quantized model unless weight repacking is off.
    monkeypatch.setattr("llamarunner.runner.model_runner._NO_REPACK_BINARIES", set())
    record = tmp_path / "argv.json"
    config = write_config(
        {"m": {"path": str(fake_bin), "args": {"fault-segv-unless-no-repack": True,
                                              "fault-record-argv": str(record)}}},
        runtime=fake_bin)
    running = await start_service(config)
    status, _ = await post(running.base_url, "/v1/chat/completions", chat_body("m"))
    assert status == 200
    assert "--no-repack" in json.loads(record.read_text())["argv"]


async def test_a_cpu_fault_is_reported_when_the_user_chose_repacking(
    write_config, start_service, fake_bin, monkeypatch
) -> None:
    monkeypatch.setattr("llamarunner.runner.model_runner._NO_REPACK_BINARIES", set())
    config = write_config(
        {"m": {"path": str(fake_bin), "args": {"fault-segv-unless-no-repack": True,
                                              "repack": True}}},
        runtime=fake_bin)
    running = await start_service(config)
    status, body = await post(running.base_url, "/v1/chat/completions", chat_body("m"))
    assert status == 502
    assert f"exit code -{signal.SIGSEGV.value}" in (await _json(body))["error"]["message"]
