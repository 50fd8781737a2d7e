"""Config edits on disk are applied to a running service without a restart."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp

from llamarunner.core.events import ConfigApplied, ConfigRejected


async def wait_for(predicate, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


async def complete(base_url: str, model: str) -> int:
    async with aiohttp.ClientSession() as http, http.post(
        base_url + "/v1/completions", json={"model": model, "prompt": "a", "max_tokens": 2}
    ) as resp:
        await resp.read()
        return resp.status


async def test_changed_args_restart_only_that_runner(
    write_config, start_service, llama_server_bin, tiny_model, tiny_model_b
) -> None:
    config = write_config({
        "a": {"path": str(tiny_model), "args": {"ctx-size": 256}},
        "b": {"path": str(tiny_model_b), "args": {"ctx-size": 256}},
    }, runtime=llama_server_bin, scheduler={"max_loaded_models": 2})
    running = await start_service(config)
    applied: list[object] = []
    running.service.events.subscribe(
        lambda e: applied.append(e) if isinstance(e, ConfigApplied) else None)
    assert await complete(running.base_url, "a") == 200
    assert await complete(running.base_url, "b") == 200
    manager = running.service.manager
    pid_a, pid_b = manager.runner("a").pid, manager.runner("b").pid

    edit(config, lambda d: d["models"]["a"]["args"].update({"ctx-size": 512}))
    await wait_for(lambda: applied)
    await wait_for(lambda: manager.runner("a").state.value == "stopped")
    assert manager.runner("b").pid == pid_b and manager.runner("b").state.value == "ready"
    assert await complete(running.base_url, "a") == 200
    assert manager.runner("a").pid != pid_a
    assert "512" in manager.runner("a").describe_argv()


async def test_invalid_edit_is_reported_and_ignored(
    write_config, start_service, llama_server_bin, tiny_model
) -> None:
    config = write_config({"a": {"path": str(tiny_model)}}, runtime=llama_server_bin)
    running = await start_service(config)
    rejected: list[ConfigRejected] = []
    running.service.events.subscribe(
        lambda e: rejected.append(e) if isinstance(e, ConfigRejected) else None)
    good = config.read_text()
    config.write_text(good.replace('"models": {', '"models": {,'))
    await wait_for(lambda: rejected)
    assert "invalid JSON" in rejected[0].error
    assert await complete(running.base_url, "a") == 200  # still serving the old config
    config.write_text(good)


async def test_moved_port_rebinds_the_listener(
    write_config, start_service, llama_server_bin, tiny_model
) -> None:
    config = write_config({"a": {"path": str(tiny_model)}}, runtime=llama_server_bin)
    running = await start_service(config)
    listeners = running.service.listeners
    old_port = listeners.bound_port("lmstudio")
    with __import__("socket").socket() as probe:
        probe.bind(("127.0.0.1", 0))
        new_port = probe.getsockname()[1]
    edit(config, lambda d: d["proxies"]["lmstudio"].update({"port": new_port}))
    await wait_for(lambda: listeners.bound_port("lmstudio") == new_port)
    assert await complete(f"http://127.0.0.1:{new_port}", "a") == 200
    try:
        await complete(f"http://127.0.0.1:{old_port}", "a")
        raise AssertionError("the old port still answers")
    except aiohttp.ClientConnectorError:
        pass


async def test_removed_model_disappears_and_added_model_appears(
    write_config, start_service, llama_server_bin, tiny_model, tiny_model_b
) -> None:
    config = write_config({"a": {"path": str(tiny_model)}}, runtime=llama_server_bin)
    running = await start_service(config)
    assert await complete(running.base_url, "a") == 200

    def swap(d: dict) -> None:
        d["models"] = {"b": {"path": str(tiny_model_b)}}

    edit(config, swap)
    await wait_for(lambda: "b" in running.service.models())
    await wait_for(lambda: running.service.manager.runner("a") is None)
    assert await complete(running.base_url, "a") == 404
    assert await complete(running.base_url, "b") == 200
