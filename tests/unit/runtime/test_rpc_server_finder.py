"""Finding ggml-rpc-server: beside the default llama-server, in the cache, on PATH."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from llamarunner.runtime import installer, resolver
from llamarunner.runtime.rpc_server import RpcServerNotFoundError, find_rpc_server

pytestmark = pytest.mark.skipif(os.name == "nt", reason="uses POSIX exec bits")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv(installer.CACHE_ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.delenv(resolver.ENV_OVERRIDE, raising=False)
    monkeypatch.delattr(sys, "frozen", raising=False)
    return tmp_path


def exe(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def cached_build(version: str, rpc_server: str | None, built_at: str = "2026-01-01T00:00:00Z"
                 ) -> Path:
    directory = installer.runtime_dir(version)
    exe(directory / "bin" / "llama-server")
    if rpc_server is not None:
        exe(directory / rpc_server)
    doc = installer.build_metadata(version, source={}, cmake_flags=(), reported_version=None,
                                   rpc_server=rpc_server)
    doc["built_at"] = built_at
    (directory / "runtime.json").write_text(json.dumps(doc))
    return directory


def test_the_cached_build_s_own_rpc_server() -> None:
    directory = cached_build("11434.0.0", "bin/ggml-rpc-server")
    assert find_rpc_server() == directory / "bin" / "ggml-rpc-server"


def test_beside_the_llama_server_the_override_names(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    server = exe(tmp_path / "opt" / "bin" / "llama-server")
    # An older llama.cpp's name, beside it: that llama-server speaks its protocol.
    rpc = exe(tmp_path / "opt" / "bin" / "rpc-server")
    cached_build("11434.0.0", "bin/ggml-rpc-server")
    monkeypatch.setenv(resolver.ENV_OVERRIDE, str(server))
    assert find_rpc_server() == rpc


def test_the_cache_when_the_default_llama_server_has_none_beside_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(resolver.ENV_OVERRIDE, str(exe(tmp_path / "opt" / "llama-server")))
    directory = cached_build("11434.0.0", "bin/ggml-rpc-server")
    assert find_rpc_server() == directory / "bin" / "ggml-rpc-server"


def test_path_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cached_build("11434.0.0", None)  # built before the RPC server was
    on_path = exe(tmp_path / "empty-path" / "ggml-rpc-server")
    assert find_rpc_server() == on_path
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert find_rpc_server(which=lambda name: "/usr/bin/x" if name == "rpc-server"
                           else None) == Path("/usr/bin/x")


def test_not_found_says_how_to_get_one() -> None:
    cached_build("11434.0.0", None)
    with pytest.raises(RpcServerNotFoundError) as info:
        find_rpc_server()
    message = str(info.value)
    assert "llamarunner runtime install" in message
    assert str(installer.cache_root()) in message and "PATH" in message
