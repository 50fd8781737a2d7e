"""Helpers for tests of routes served on both listeners (Ollama's and LM Studio's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

MODEL_ARGS = {"ctx-size": 512, "threads": 1, "jinja": True}
BOTH_PORTS = pytest.mark.parametrize("api", ["lmstudio", "ollama"])
HELLO = [{"role": "user", "content": "hello"}]


def both_ports() -> dict[str, Any]:
    return {"ollama": {"enabled": True, "host": "127.0.0.1", "port": 0},
            "lmstudio": {"enabled": True, "host": "127.0.0.1", "port": 0}}


def models(tiny_model: Path, plain_model: Path, **extra_args: Any) -> dict[str, Any]:
    """The tiny chat model and the plain one that cannot chat, under those names."""
    return {"tiny": {"path": str(tiny_model), "args": {**MODEL_ARGS, **extra_args}},
            "plain": {"path": str(plain_model), "args": MODEL_ARGS}}


def url_of(running: Any, api: str) -> str:
    return f"http://127.0.0.1:{running.service.listeners.bound_port(api)}"
