"""What this build is: the app version and the llama-server it runs, for --version and About."""

from __future__ import annotations

from . import __version__
from .runtime.resolver import DEFAULT_RUNTIME_NAME, RuntimeNotFoundError, find_runtime

APP_NAME = "LlamaRunner Pro"


def runtime_summary(spec: str = DEFAULT_RUNTIME_NAME) -> str:
    """One line naming the llama-server that ``spec`` resolves to, its version and origin.

    The version is the llama.cpp source release recorded beside the binary (bundled or
    cached builds); a binary found on PATH carries no record, so it shows as unknown.
    """
    try:
        found = find_runtime(spec)
    except RuntimeNotFoundError:
        return "llama-server: not found (run `llamarunner runtime install`)"
    version = found.version or "unknown version"
    return f"llama-server {version} ({found.source}: {found.path})"


def version_text() -> str:
    """The lines `llamarunner --version` prints and the About box shows."""
    return f"llamarunner {__version__}\n{runtime_summary()}"
