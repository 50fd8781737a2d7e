"""`llamarunner pull` and `llamarunner rm` as users run them: real processes against a
loopback registry stand-in, through a running app and on the store alone."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.support.registry_standin import StandIn

from llamarunner.store.layout import StoreLayout
from llamarunner.store.model_store import default_store_root
from llamarunner.store.names import parse_name


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def cli(config: Path, *args: str) -> Result:
    """Run `llamarunner ARGS --config CONFIG` without blocking the loop the app runs on."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llamarunner", *args, "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=dict(os.environ))
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


@pytest.fixture(scope="session")
def tiny_bytes(tiny_model: Path) -> bytes:
    return tiny_model.read_bytes()


@pytest.fixture
async def stand_in(tiny_bytes: bytes) -> AsyncIterator[StandIn]:
    server = await StandIn().start()
    server.add_model("library/tiny", "latest", tiny_bytes, system="Be brief.")
    yield server
    await server.close()


@pytest.fixture
def config(write_config: Any, tmp_path: Path, tiny_model: Path) -> Path:
    """A fixed Ollama port (the command finds the app there), and one model in a folder of
    the user's own, which `rm` must not delete."""
    own = tmp_path / "my-models"
    own.mkdir()
    shutil.copy(tiny_model, own / "mine.gguf")
    path: Path = write_config(
        {}, proxies={"ollama": {"enabled": True, "host": "127.0.0.1", "port": free_port()},
                     "lmstudio": {"enabled": False, "port": 0}},
        sources={"ollama": {"enabled": False}, "lmstudio": {"enabled": False}},
        model_dirs=[str(own)])
    return path


def stored(name: str) -> bool:
    layout = StoreLayout(default_store_root())
    return layout.find(parse_name(name)) is not None


async def test_pull_and_rm_through_the_running_app(config: Path, start_service: Any,
                                                   stand_in: StandIn) -> None:
    running = await start_service(config, api="ollama")
    name = f"{stand_in.host}/library/tiny"
    pulled = await cli(config, "pull", name, "--insecure")
    assert pulled.code == 0, pulled.err
    assert "not running" not in pulled.err  # it went through the app
    lines = pulled.out.splitlines()
    assert lines[0] == "pulling manifest" and lines[-1] == "success"
    layer = [line for line in lines if line.startswith("pulling ") and "%" in line]
    assert layer[-1].split(": ", 1)[1].startswith("100% (")
    assert "writing manifest" in lines
    # The app lists it at once: it did the pull.
    assert f"{name}:latest" in running.service.models()

    refused = await cli(config, "rm", "mine")
    assert refused.code == 1
    assert "model 'mine' was not deleted: it is a file in one of your own model folders" in (
        refused.err)
    missing = await cli(config, "rm", "nothing-here")
    assert (missing.code, missing.err.strip()) == (1, "llamarunner: model 'nothing-here' not "
                                                      "found")

    removed = await cli(config, "rm", f"{name}:latest")
    assert removed.code == 0, removed.err
    assert removed.out.strip() == f"deleted '{name}:latest'"
    assert f"{name}:latest" not in running.service.models() and not stored(name)


async def test_pull_and_rm_without_the_app_work_on_its_store(
        config: Path, start_service: Any, stand_in: StandIn) -> None:
    name = f"{stand_in.host}/library/tiny"
    pulled = await cli(config, "pull", name, "--insecure")
    assert pulled.code == 0, pulled.err
    assert "the app is not running" in pulled.err
    assert pulled.out.splitlines()[-1] == "success" and stored(name)

    # The app lists it when it starts, with the system prompt of its manifest.
    running = await start_service(config, api="ollama")
    entry = running.service.library_entries()[f"{name}:latest"]
    assert entry.source == "pulled" and entry.system == "Be brief."
    await running.service.stop()

    refused = await cli(config, "rm", "mine")
    assert refused.code == 1 and "it is a file in one of your own model folders" in refused.err
    assert (config.parent / "my-models" / "mine.gguf").is_file()
    removed = await cli(config, "rm", f"{name}:latest")
    assert removed.code == 0, removed.err
    assert not stored(name)


async def test_failed_pulls_exit_non_zero_with_the_reason(
        config: Path, start_service: Any, stand_in: StandIn, tiny_bytes: bytes) -> None:
    manifest = stand_in.add_model("library/bad", "latest", tiny_bytes)
    stand_in.faults.corrupt.add(manifest["layers"][0]["digest"])

    # Standalone: a corrupt download, a registry nobody answers on, a bad name.
    corrupt = await cli(config, "pull", f"{stand_in.host}/library/bad", "--insecure")
    assert corrupt.code == 1 and "digest mismatch" in corrupt.err
    gone = await cli(config, "pull", f"127.0.0.1:{free_port()}/library/tiny", "--insecure")
    assert gone.code == 1 and "llamarunner: " in gone.err
    bad = await cli(config, "pull", "a/b/c/d")
    assert bad.code == 1 and "invalid model name" in bad.err

    # Through the app: the same messages, from the API.
    await start_service(config, api="ollama")
    corrupt = await cli(config, "pull", f"{stand_in.host}/library/bad", "--insecure")
    assert corrupt.code == 1 and "digest mismatch" in corrupt.err
    assert "not running" not in corrupt.err
    bad = await cli(config, "pull", "a/b/c/d")
    assert bad.code == 1 and "invalid model name" in bad.err
    assert not stored(f"{stand_in.host}/library/bad")
