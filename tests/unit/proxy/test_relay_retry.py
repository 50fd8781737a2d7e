"""open_upstream: pooled connections llama-server closed silently are retried, not reported."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from llamarunner.core.errors import UpstreamError
from llamarunner.proxy.relay import open_upstream


class FlakySession:
    """A client session whose first `failures` posts meet a dead pooled connection."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls: list[tuple[str, dict[str, str]]] = []

    async def post(self, url: str, *, data: bytes, headers: dict[str, str]) -> Any:
        self.calls.append((url, headers))
        if len(self.calls) <= self.failures:
            raise self.error
        return "response"


def lease() -> Any:
    return SimpleNamespace(base_url="http://127.0.0.1:1", headers={"Authorization": "Bearer k"},
                           first_token_timeout=math.inf, runner=SimpleNamespace(name="m"))


DEAD = [aiohttp.ServerDisconnectedError(),
        aiohttp.ClientOSError(None, "Can not write request body for http://127.0.0.1:1/x")]


@pytest.mark.parametrize("error", DEAD, ids=["disconnected", "write-failed"])
async def test_several_dead_pooled_connections_in_a_row_are_retried(error: Exception) -> None:
    http = FlakySession(failures=4, error=error)
    assert await open_upstream(http, lease(), "/x", b"{}") == "response"  # type: ignore[arg-type]
    assert len(http.calls) == 5
    assert all(headers["Authorization"] == "Bearer k" for _, headers in http.calls)


async def test_a_server_that_stays_unreachable_is_reported() -> None:
    http = FlakySession(failures=99, error=DEAD[1])
    with pytest.raises(UpstreamError, match="cannot reach llama-server for model 'm'"):
        await open_upstream(http, lease(), "/x", b"{}")  # type: ignore[arg-type]
    assert len(http.calls) == 5  # bounded: no endless loop against a dead server
