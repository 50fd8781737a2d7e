"""Two models, one slot, eight clients alternating A B A B: no deadlock, nothing lost."""

from __future__ import annotations

import asyncio
import collections
import json

import aiohttp

from llamarunner.runner.state import RunnerState

TOTAL = 200
CLIENTS = 8


async def test_interleaved_requests_for_two_models_with_one_slot(
    write_config, start_service, fake_bin
) -> None:
    """Every request is answered once, with its own answer; a TTL-stopped model restarts.

    `--fault-echo` makes the fake answer with the prompt itself, so each answer names the
    request it belongs to. The tiny TTL stops models between bursts during the run. With
    a queue of 64 and only 8 clients the queue never fills and no model is left failed, so
    nothing may be refused: no 429 (queue full), no 503 (busy or stopping).
    """
    args = {"fault-echo": True, "fault-chunk-interval": 0.001}
    config = write_config(
        {"a": {"path": str(fake_bin), "args": args, "ttl": 0.05},
         "b": {"path": str(fake_bin), "args": args, "ttl": 0.05}},
        runtime=fake_bin, scheduler={"max_loaded_models": 1, "max_queue": 64},
    )
    running = await start_service(config)
    manager = running.service.manager
    url = running.base_url + "/v1/chat/completions"
    ids = iter(range(TOTAL))
    answers: collections.Counter[int] = collections.Counter()  # request id -> answers
    refused: list[tuple[int, int, str]] = []  # (request id, status, body)

    async def client(http: aiohttp.ClientSession, n: int) -> None:
        for rid in ids:
            model = "ab"[(rid + n) % 2]
            body = {"model": model, "messages": [{"role": "user", "content": f"req-{rid}"}]}
            async with http.post(url, json=body) as resp:
                data = await resp.read()
            if resp.status != 200:
                refused.append((rid, resp.status, data.decode("utf-8", "replace")))
                continue
            content = json.loads(data)["choices"][0]["message"]["content"]
            assert content == f"req-{rid}", (rid, content)  # its own answer, no other's
            answers[int(content.removeprefix("req-"))] += 1
            if rid % 50 == 49:
                await asyncio.sleep(0.15)  # let the 0.05 s TTL stop the loaded model

    async with aiohttp.ClientSession() as http, asyncio.timeout(90):
        await asyncio.gather(*(client(http, n) for n in range(CLIENTS)))
    assert refused == []
    assert sorted(answers) == list(range(TOTAL))  # every request answered...
    assert set(answers.values()) == {1}  # ...exactly once
    for name in ("a", "b"):
        runner = manager.runner(name)
        assert runner is not None and runner.inflight == 0
    # After the run the TTL stops whatever is loaded; a new request restarts it.
    for _ in range(100):
        if all(manager.runner(n).state is RunnerState.STOPPED for n in "ab"):
            break
        await asyncio.sleep(0.02)
    assert all(manager.runner(n).state is RunnerState.STOPPED for n in "ab")
    async with aiohttp.ClientSession() as http, http.post(
        url, json={"model": "a", "messages": [{"role": "user", "content": "again"}]}
    ) as resp:
        assert resp.status == 200


async def test_interleaved_requests_with_real_llama_servers(
    write_config, start_service, llama_server_bin, tiny_model, tiny_model_b
) -> None:
    """The same load on real llama-server: every request answered once, by its own model.

    A real model cannot echo, so each answer is matched to its request by the model it
    names (llama-server answers with its --alias) and counted per request id.
    """
    args = {"ctx-size": 256, "threads": 1}
    config = write_config(
        {"a": {"path": str(tiny_model), "args": args, "ttl": 0.05},
         "b": {"path": str(tiny_model_b), "args": args, "ttl": 0.05}},
        runtime=llama_server_bin, scheduler={"max_loaded_models": 1, "max_queue": 64},
    )
    running = await start_service(config)
    url = running.base_url + "/v1/chat/completions"
    total = 64
    ids = iter(range(total))
    answers: collections.Counter[int] = collections.Counter()
    refused: list[tuple[int, int, str]] = []

    async def client(http: aiohttp.ClientSession, n: int) -> None:
        for rid in ids:
            model = "ab"[(rid + n) % 2]
            body = {"model": model, "max_tokens": 4,
                    "messages": [{"role": "user", "content": f"req-{rid}"}]}
            async with http.post(url, json=body) as resp:
                data = await resp.read()
            if resp.status != 200:
                refused.append((rid, resp.status, data.decode("utf-8", "replace")))
                continue
            reply = json.loads(data)
            assert reply["model"] == model and reply["choices"][0]["message"], reply
            answers[rid] += 1

    async with aiohttp.ClientSession() as http, asyncio.timeout(120):
        await asyncio.gather(*(client(http, n) for n in range(CLIENTS)))
    assert refused == []
    assert sorted(answers) == list(range(total))
    assert set(answers.values()) == {1}
    for name in ("a", "b"):
        runner = running.service.manager.runner(name)
        assert runner is not None and runner.inflight == 0
