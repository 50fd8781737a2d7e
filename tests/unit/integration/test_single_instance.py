"""SingleInstance: one lock holder, commands from a second launch, stale locks recovered."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llamarunner.integration.single_instance import SingleInstance

# A holder in its own process, so it can be SIGKILLed like a crashed app.
HOLDER = """
import asyncio, sys
from pathlib import Path
from llamarunner.integration.single_instance import SingleInstance

async def main():
    instance = SingleInstance("app", Path(sys.argv[1]))
    assert instance.acquire()
    await instance.serve(lambda command: None)
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def send_raw(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        with sock.makefile("rb") as stream:
            return stream.readline()


async def test_second_acquirer_fails_and_its_command_reaches_the_first(tmp_path: Path) -> None:
    first = SingleInstance("app", tmp_path / "run")
    assert first.acquire() and first.acquired
    received: list[str] = []
    await first.serve(received.append)

    second = SingleInstance("app", tmp_path / "run")
    assert not second.acquire() and not second.acquired
    # notify_running blocks (a second launch has no loop yet): keep the first one's loop free.
    assert await asyncio.to_thread(second.notify_running, "show")
    assert await asyncio.to_thread(second.notify_running, "quit")
    assert received == ["show", "quit"]

    await first.close()
    assert not first.endpoint_path.exists()
    assert second.acquire(), "a closed instance must free the lock"
    second.release()


def test_a_killed_holder_leaves_no_lock_that_blocks(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        blocked = SingleInstance("app", run_dir)
        assert not blocked.acquire()
        assert blocked.notify_running("show", timeout=5)
        holder.kill()  # a crash: no cleanup code runs
        holder.wait()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()

    # Its files are still there, but the kernel dropped the lock with the process.
    assert blocked.lock_path.exists() and blocked.endpoint_path.exists()
    started = time.monotonic()
    assert not blocked.notify_running("show", timeout=0.5), "nobody answers a dead endpoint"
    assert time.monotonic() - started < 2
    successor = SingleInstance("app", run_dir)
    assert successor.acquire()
    successor.release()


async def test_the_new_holder_replaces_a_stale_endpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "app.endpoint").write_text(json.dumps({"pid": 1, "port": 9, "token": "old"}))
    instance = SingleInstance("app", run_dir)
    assert instance.acquire()
    received: list[str] = []
    await instance.serve(received.append)
    endpoint = json.loads(instance.endpoint_path.read_text())
    assert endpoint["pid"] == os.getpid() and endpoint["token"] != "old"
    if sys.platform != "win32":
        # The file carries the token: only its owner may read it.
        assert stat.S_IMODE(instance.endpoint_path.stat().st_mode) == 0o600
    other = SingleInstance("app", run_dir)
    assert await asyncio.to_thread(other.notify_running, "show")
    assert received == ["show"]
    await instance.close()


async def test_commands_without_the_token_or_garbage_are_refused(tmp_path: Path) -> None:
    instance = SingleInstance("app", tmp_path)
    assert instance.acquire()
    received: list[str] = []
    await instance.serve(received.append)
    port = json.loads(instance.endpoint_path.read_text())["port"]

    wrong = json.dumps({"token": "0" * 32, "command": "quit"}).encode() + b"\n"
    assert await asyncio.to_thread(send_raw, port, wrong) == b"denied\n"
    assert await asyncio.to_thread(send_raw, port, b"not json\n") == b"denied\n"
    assert await asyncio.to_thread(send_raw, port, b"[1, 2]\n") == b"denied\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # connects and leaves without a word
    assert received == []
    other = SingleInstance("app", tmp_path)
    assert await asyncio.to_thread(other.notify_running, "show")
    assert received == ["show"]
    await instance.close()


async def test_a_failing_handler_does_not_break_the_endpoint(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture
                                                             ) -> None:
    instance = SingleInstance("app", tmp_path)
    assert instance.acquire()
    calls: list[str] = []

    def handler(command: str) -> None:
        calls.append(command)
        raise RuntimeError("window went away")

    await instance.serve(handler)
    other = SingleInstance("app", tmp_path)
    assert await asyncio.to_thread(other.notify_running, "show")
    assert await asyncio.to_thread(other.notify_running, "show")
    assert calls == ["show", "show"]
    assert "handling 'show' failed" in caplog.text
    await instance.close()


def test_notify_with_nobody_running_gives_up_after_the_timeout(tmp_path: Path) -> None:
    started = time.monotonic()
    assert not SingleInstance("app", tmp_path).notify_running("show", timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 2


async def test_serving_needs_the_lock(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="acquire"):
        await SingleInstance("app", tmp_path).serve(lambda command: None)
