"""Children a crashed earlier run left behind are killed at start, and only those."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import psutil

from llamarunner import paths
from llamarunner.runner.registry import ChildRegistry


def _sleeper() -> subprocess.Popen[bytes]:
    # Its own session, like a runner child, so the cleanup's group kill has a group to hit.
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            start_new_session=True)


def _dead_pid() -> int:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def _record(proc: subprocess.Popen[bytes], **changes: object) -> dict[str, object]:
    ps = psutil.Process(proc.pid)
    entry: dict[str, object] = {"pid": proc.pid, "create_time": ps.create_time(),
                                "cmdline": ps.cmdline(), "owner_pid": _dead_pid(),
                                "owner_create_time": 1.0}
    entry.update(changes)
    return entry


def _registry_file() -> Path:
    return paths.data_dir() / "runners.json"


async def test_stale_children_are_killed_only_when_pid_start_time_and_argv_match(
    write_config, start_service, fake_bin
) -> None:
    stale, reused_pid, other_start = _sleeper(), _sleeper(), _sleeper()
    try:
        entries = [
            _record(stale),
            # pid reuse: the pid now runs something else, or started at another time.
            _record(reused_pid, cmdline=["/opt/llama-server", "-m", "old.gguf"]),
            _record(other_start, create_time=psutil.Process(other_start.pid).create_time() - 5),
        ]
        _registry_file().parent.mkdir(parents=True, exist_ok=True)
        _registry_file().write_text(json.dumps(entries))
        config = write_config({"m": {"path": str(fake_bin)}}, runtime=fake_bin)
        await start_service(config)
        stale.wait(timeout=2)  # the cleanup may have reaped it already (returncode 0 then)
        assert not psutil.pid_exists(stale.pid)
        assert reused_pid.poll() is None and other_start.poll() is None
        assert json.loads(_registry_file().read_text()) == []  # the records are dropped
    finally:
        for proc in (stale, reused_pid, other_start):
            proc.kill()
            proc.wait()


async def test_spawned_children_are_recorded_and_forgotten_when_reaped(
    write_config, start_service, fake_bin
) -> None:
    config = write_config({"m": {"path": str(fake_bin)}}, runtime=fake_bin)
    running = await start_service(config)
    async with aiohttp.ClientSession() as http, http.post(
        running.base_url + "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    ) as resp:
        assert resp.status == 200
    pid = running.service.manager.runner("m").pid
    records = json.loads(_registry_file().read_text())
    assert [r["pid"] for r in records] == [pid]
    assert records[0]["cmdline"] == psutil.Process(pid).cmdline()
    # A second manager in the same live app must not touch the first one's children.
    ChildRegistry(_registry_file()).clean_stale()
    assert psutil.pid_exists(pid) and running.service.manager.runner("m").state.value == "ready"
    await running.service.manager.unload("m")
    assert json.loads(_registry_file().read_text()) == []


def test_an_unreadable_registry_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "runners.json"
    path.write_text("{not json")
    assert ChildRegistry(path).clean_stale() == []
    assert json.loads(path.read_text()) == []
