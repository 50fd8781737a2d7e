"""The peer directory against a loopback OpenAI-style server: lists, failures, recovery."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from llamarunner.config import PeerConfig
from llamarunner.core.events import EventBus, PeerStateChanged
from llamarunner.peers.directory import PeerDirectory


class _Standin:
    """An OpenAI /v1/models that can be told to answer otherwise."""

    def __init__(self) -> None:
        self.models = ["m1", "m2"]
        self.status = 200
        self.seen_auth: list[str | None] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.seen_auth.append(request.headers.get("Authorization"))
        if self.status != 200:
            return web.json_response({"error": "no"}, status=self.status)
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model", "owned_by": "x"} for m in self.models]})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/models", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


@pytest.fixture
async def standin() -> AsyncIterator[_Standin]:
    server = _Standin()
    await server.start()
    yield server
    if server.runner is not None:
        await server.runner.cleanup()


@pytest.fixture
async def directory() -> AsyncIterator[tuple[PeerDirectory, list[Any], list[int]]]:
    events = EventBus()
    seen: list[Any] = []
    changes: list[int] = []
    events.subscribe(seen.append)
    found = PeerDirectory(events, on_change=lambda: changes.append(1))
    yield found, seen, changes
    await found.close()


def _config(standin: _Standin, **extra: Any) -> PeerConfig:
    return PeerConfig(url=f"http://127.0.0.1:{standin.port}/v1", **extra)


async def test_the_list_is_read_with_the_key_and_kept_while_the_peer_is_down(
        standin: _Standin, directory: tuple[PeerDirectory, list[Any], list[int]]) -> None:
    peers, events, changes = directory
    peers.configure({"box": _config(standin, api_key="k1")})
    status = await peers.refresh("box")
    assert status is not None and status.models == ("m1", "m2") and status.available
    assert standin.seen_auth[-1] == "Bearer k1"
    assert changes

    await standin.stop()
    status = await peers.refresh("box")
    assert status is not None and status.available is False
    assert status.models == ("m1", "m2")
    assert status.reason and "cannot connect" in status.reason
    assert any(isinstance(e, PeerStateChanged) and not e.available for e in events)

    standin.models = ["m3"]
    await standin.start()
    status = await peers.refresh("box")
    assert status is not None and status.available and status.models == ("m3",)


async def test_a_refused_key_marks_the_peer_down_with_the_reason(
        standin: _Standin, directory: tuple[PeerDirectory, list[Any], list[int]]) -> None:
    peers, _, _ = directory
    standin.status = 401
    peers.configure({"box": _config(standin, api_key="bad")})
    status = await peers.refresh("box")
    assert status is not None and status.available is False
    assert status.reason is not None and "refused our key" in status.reason
    assert "bad" not in status.reason


async def test_configured_models_are_used_as_they_are(
        standin: _Standin, directory: tuple[PeerDirectory, list[Any], list[int]]) -> None:
    peers, _, _ = directory
    standin.status = 404  # a server without /v1/models still answers
    peers.configure({"box": _config(standin, models=("only",))})
    assert peers.statuses()[0].models == ("only",)
    status = await peers.refresh("box")
    assert status is not None and status.available and status.models == ("only",)


async def test_removing_a_peer_forgets_it_and_a_changed_one_starts_over(
        standin: _Standin, directory: tuple[PeerDirectory, list[Any], list[int]]) -> None:
    peers, _, _ = directory
    peers.configure({"box": _config(standin)})
    await peers.refresh("box")
    peers.configure({"box": _config(standin, refresh=5.0)})
    assert peers.statuses()[0].available is None
    peers.configure({})
    assert peers.statuses() == []
    assert await peers.refresh("box") is None


async def test_marks_from_requests_are_recorded(
        standin: _Standin, directory: tuple[PeerDirectory, list[Any], list[int]]) -> None:
    peers, events, _ = directory
    peers.configure({"box": _config(standin)})
    await peers.refresh("box")
    peers.mark("box", available=False, reason="cannot connect")
    status = peers.status("box")
    assert status is not None and status.available is False
    peers.mark("nobody", available=False)  # a peer removed meanwhile: nothing happens
    assert isinstance(events[-1], PeerStateChanged)
