"""The polling config watcher: external edits, invalid edits, and the store's own saves."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from llamarunner.config import Config, ConfigError, ConfigStore, ConfigSyntaxError

INTERVAL = 0.01
WAIT = 5.0


# File operations are plain functions: they take microseconds, and keeping them out of the
# async tests makes clear that the watcher sees them only through its polling.


def write(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def rewrite_same_bytes(path: Path) -> None:
    path.write_bytes(path.read_bytes())
    os.utime(path)


def file_stat(path: Path) -> os.stat_result:
    return path.stat()


def remove(path: Path) -> None:
    path.unlink()


class Recorder:
    """Collects what the watcher reports and lets a test wait for it."""

    def __init__(self) -> None:
        self.changes: list[Config] = []
        self.errors: list[ConfigError] = []
        self._event = asyncio.Event()

    def on_change(self, config: Config) -> None:
        self.changes.append(config)
        self._event.set()

    def on_error(self, error: ConfigError) -> None:
        self.errors.append(error)
        self._event.set()

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        async def loop() -> None:
            while not condition():
                self._event.clear()
                await self._event.wait()

        await asyncio.wait_for(loop(), WAIT)


async def polls(count: int = 10) -> None:
    """Let the watcher run a few rounds."""
    await asyncio.sleep(INTERVAL * count)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "config.json"


@pytest.fixture
async def watched(path: Path) -> AsyncIterator[tuple[ConfigStore, Recorder]]:
    store = ConfigStore(path)
    store.load()
    recorder = Recorder()
    task = asyncio.create_task(
        store.watch(recorder.on_change, recorder.on_error, interval=INTERVAL), name="watch"
    )
    try:
        yield store, recorder
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled()


async def test_valid_edit_is_picked_up(path: Path, watched: tuple[ConfigStore, Recorder]) -> None:
    store, recorder = watched
    write(path, {"models": {"m": {"path": "/m.gguf"}}})
    await recorder.wait_for(lambda: bool(recorder.changes))
    (config,) = recorder.changes
    assert "m" in config.models
    assert store.config == config
    assert recorder.errors == []
    await polls()
    assert len(recorder.changes) == 1


async def test_invalid_edit_is_reported_once_and_watching_goes_on(
    path: Path, watched: tuple[ConfigStore, Recorder]
) -> None:
    store, recorder = watched
    before = store.config
    write_text(path, '{"models": {"m": }}')
    await recorder.wait_for(lambda: bool(recorder.errors))
    assert isinstance(recorder.errors[0], ConfigSyntaxError)
    await polls()
    assert len(recorder.errors) == 1
    assert store.config == before
    assert recorder.changes == []
    write(path, {"models": {"m": {"path": "/m.gguf", "args": {"port": 1}}}})
    await recorder.wait_for(lambda: len(recorder.errors) == 2)
    assert "set by the runner" in str(recorder.errors[1])
    write(path, {"models": {"fixed": {"path": "/m.gguf"}}})
    await recorder.wait_for(lambda: bool(recorder.changes))
    assert "fixed" in recorder.changes[0].models


async def test_own_saves_are_ignored(path: Path, watched: tuple[ConfigStore, Recorder]) -> None:
    store, recorder = watched
    saved = store.save({"models": {"mine": {"path": "/m.gguf"}}})
    await polls(20)
    assert recorder.changes == [] and recorder.errors == []
    assert store.config == saved
    # ...but an edit after the save is still seen.
    write(path, {"models": {"theirs": {"path": "/t.gguf"}}})
    await recorder.wait_for(lambda: bool(recorder.changes))
    assert list(recorder.changes[0].models) == ["theirs"]


async def test_touching_without_changing_content_is_ignored(
    path: Path, watched: tuple[ConfigStore, Recorder]
) -> None:
    _, recorder = watched
    rewrite_same_bytes(path)
    await polls(20)
    assert recorder.changes == [] and recorder.errors == []


async def test_same_size_edit_within_one_mtime_tick_is_seen(
    path: Path, watched: tuple[ConfigStore, Recorder]
) -> None:
    _, recorder = watched
    write(path, {"model_dirs": ["/aaaa"]})
    await recorder.wait_for(lambda: len(recorder.changes) == 1)
    info = file_stat(path)
    write(path, {"model_dirs": ["/bbbb"]})
    # Same size and the same mtime, as on a file system with coarse timestamps.
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert file_stat(path).st_size == info.st_size
    await recorder.wait_for(lambda: len(recorder.changes) == 2)
    assert recorder.changes[1].model_dirs == ("/bbbb",)


async def test_a_missing_file_is_not_an_error(
    path: Path, watched: tuple[ConfigStore, Recorder]
) -> None:
    store, recorder = watched
    before = store.config
    remove(path)
    await polls(20)
    assert recorder.changes == [] and recorder.errors == []
    assert store.config == before
    write(path, {"model_dirs": ["/back"]})
    await recorder.wait_for(lambda: bool(recorder.changes))
    assert recorder.changes[0].model_dirs == ("/back",)


async def test_async_handler_is_awaited_and_failures_do_not_stop_watching(path: Path) -> None:
    store = ConfigStore(path)
    store.load()
    seen: list[Config] = []
    first, second = asyncio.Event(), asyncio.Event()

    async def on_change(config: Config) -> None:
        await asyncio.sleep(0)
        seen.append(config)
        if len(seen) == 1:
            first.set()
            raise RuntimeError("subscriber bug")
        second.set()

    def on_error(error: ConfigError) -> None:
        raise AssertionError(error)

    task = asyncio.create_task(store.watch(on_change, on_error, interval=INTERVAL))
    try:
        write(path, {"model_dirs": ["/one"]})
        await asyncio.wait_for(first.wait(), WAIT)
        write(path, {"model_dirs": ["/two", "/three"]})
        await asyncio.wait_for(second.wait(), WAIT)
        assert [c.model_dirs for c in seen] == [("/one",), ("/two", "/three")]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_cancel_stops_the_watcher(path: Path) -> None:
    store = ConfigStore(path)
    store.load()
    noop: Callable[[Config], Awaitable[None] | None] = lambda config: None  # noqa: E731
    task = asyncio.create_task(store.watch(noop, lambda error: None, interval=INTERVAL))
    await polls(3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# Poll-by-poll behaviour, without timing: `_poll` is what each watcher round does.


def test_poll_reports_a_stable_invalid_edit_once(path: Path) -> None:
    store = ConfigStore(path)
    store.load()
    assert store._poll() is None
    write_text(path, "{")
    assert store._poll() is None  # seen once: may be an editor half-way through writing
    error = store._poll()
    assert isinstance(error, ConfigSyntaxError)
    assert store._poll() is None
    write(path, {"model_dirs": ["/x"]})
    config = store._poll()
    assert isinstance(config, Config) and config.model_dirs == ("/x",)
    assert store._poll() is None


def test_poll_skips_a_half_written_file(path: Path) -> None:
    store = ConfigStore(path)
    store.load()
    write_text(path, '{"model_dirs": ["/x"')
    assert store._poll() is None
    write(path, {"model_dirs": ["/x"]})
    config = store._poll()
    assert isinstance(config, Config)
    assert store._poll() is None


def test_poll_after_a_failed_load_does_not_repeat_the_error(path: Path) -> None:
    write_text(path, "{")
    store = ConfigStore(path)
    with pytest.raises(ConfigSyntaxError):
        store.load()
    assert store._poll() is None
    assert store._poll() is None
    write(path, {})
    assert isinstance(store._poll(), Config)
