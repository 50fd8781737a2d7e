"""A runner is ready as soon as llama-server says so: its output wakes the health check."""

from __future__ import annotations

import asyncio

import pytest

from llamarunner.runner import model_runner
from llamarunner.runner.results import LoadResult


async def test_ready_on_llama_servers_own_word_without_a_timer(
    write_config, start_service, llama_server_bin, tiny_model, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the health timer set to an hour, only llama-server's output can trigger the
    /health request that says 200 (it prints "model loaded" as it becomes ready)."""
    monkeypatch.setattr(model_runner, "HEALTH_POLL_INTERVAL", 3600.0)
    monkeypatch.setattr(model_runner, "HEALTH_POLL_MAX", 3600.0)
    config = write_config({"tiny": {"path": str(tiny_model), "args": {"ctx-size": 256}}},
                          runtime=llama_server_bin)
    running = await start_service(config)
    manager = running.service.manager
    async with asyncio.timeout(60):  # a guard against hanging, not a measurement
        for _ in range(3):
            assert await manager.load("tiny") is LoadResult.LOADED
            await manager.unload("tiny")


async def test_a_silent_start_is_still_found_healthy_by_the_timer(
    write_config, start_service, fake_bin,
) -> None:
    """The fake prints nothing once it is healthy: the doubling timer finds it."""
    config = write_config({"m": {"path": str(fake_bin), "args": {"fault-slow-health": 0.3}}},
                          runtime=fake_bin)
    running = await start_service(config)
    async with asyncio.timeout(60):
        assert await running.service.manager.load("m") is LoadResult.LOADED
