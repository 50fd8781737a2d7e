"""Which event loop the headless app runs on: uvloop's where it is installed, else asyncio's."""

from __future__ import annotations

import asyncio
import sys

import pytest

from llamarunner import headless


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is a POSIX dependency")
def test_uvloop_runs_the_headless_app_where_it_is_installed() -> None:
    uvloop = pytest.importorskip("uvloop")
    factory = headless.loop_factory()
    assert factory is uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)


def test_asyncio_loop_when_uvloop_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` fail
    assert headless.loop_factory() is None


def test_asyncio_loop_on_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    assert headless.loop_factory() is None
