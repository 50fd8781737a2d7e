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
    """Every request is answered once, with its own id; a TTL-stopped model restarts.

    `--fault-echo` makes the fake answer with the prompt itself, so each answer names the
    request it belongs to. The tiny TTL stops models between bursts during the run.
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
    answers: collections.Counter[str] = collections.Counter()
    statuses: collections.Counter[int] = collections.Counter()

    async def client(http: aiohttp.ClientSession, n: int) -> None:
        for rid in ids:
            model = "ab"[(rid + n) % 2]
            body = {"model": model, "messages": [{"role": "user", "content": f"req-{rid}"}]}
            async with http.post(url, json=body) as resp:
                statuses[resp.status] += 1
                data = await resp.read()
                if resp.status == 200:
                    content = json.loads(data)["choices"][0]["message"]["content"]
                    answers[content] += 1
                    assert content == f"req-{rid}"
                else:
                    assert resp.status in (429, 503), data
            if rid % 50 == 49:
                await asyncio.sleep(0.15)  # let the 0.05 s TTL stop the loaded model

    async with aiohttp.ClientSession() as http, asyncio.timeout(90):
        await asyncio.gather(*(client(http, n) for n in range(CLIENTS)))
    assert sum(statuses.values()) == TOTAL
    assert statuses[200] == sum(answers.values())
    assert all(count == 1 for count in answers.values())  # none duplicated
    assert statuses[200] >= TOTAL * 0.9
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
