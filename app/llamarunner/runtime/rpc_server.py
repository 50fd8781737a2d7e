"""Find llama.cpp's RPC server (ggml-rpc-server) that `llamarunner worker` runs."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from .installer import (
    RPC_SERVER_TARGETS,
    cache_root,
    cached_runtimes,
    executable_name,
    is_executable_file,
    read_cached_runtime,
)
from .resolver import DEFAULT_RUNTIME_NAME, RuntimeNotFoundError, find_runtime

RPC_INSTALL_HINT = (
    "run `llamarunner runtime install`, which builds it next to llama-server, or put "
    "ggml-rpc-server (from a llama.cpp built with -DGGML_RPC=ON) on PATH"
)


class RpcServerNotFoundError(Exception):
    """No executable RPC server; `searched` lists where we looked."""

    def __init__(self, searched: list[str]) -> None:
        self.searched = searched
        super().__init__(
            "llama.cpp's RPC server (ggml-rpc-server) was not found (searched: "
            f"{', '.join(searched)}). To fix: {RPC_INSTALL_HINT}")


def rpc_server_names() -> tuple[str, ...]:
    """Its file names on this OS, the pinned llama.cpp's first (older trees: rpc-server)."""
    return tuple(executable_name(target) for target in RPC_SERVER_TARGETS)


def find_rpc_server(which: Callable[[str], str | None] = shutil.which) -> Path:
    """The RPC server beside the default llama-server, else in the cache, else on PATH.

    Beside it first: the worker then speaks the same RPC protocol version as the
    llama-server this machine runs (a llama-server refuses a worker of another version).
    """
    searched: list[str] = []
    try:
        server = find_runtime(DEFAULT_RUNTIME_NAME).path
    except RuntimeNotFoundError:
        server = None
    if server is not None:
        beside = _beside(server)
        if beside is not None:
            return beside
        searched.append(str(server.parent))
    for cached in cached_runtimes():
        if cached.rpc_server is not None:
            return cached.rpc_server
    searched.append(str(cache_root()))
    for name in rpc_server_names():
        found = which(name)
        if found is not None:
            return Path(found)
    searched.append("PATH")
    raise RpcServerNotFoundError(searched)


def _beside(server: Path) -> Path | None:
    # A cached build records its RPC server in runtime.json (bin/ is beside runtime.json).
    cached = read_cached_runtime(server.parent.parent)
    if cached is not None and cached.binary == server and cached.rpc_server is not None:
        return cached.rpc_server
    for name in rpc_server_names():
        candidate = server.parent / name
        if is_executable_file(candidate):
            return candidate
    return None
