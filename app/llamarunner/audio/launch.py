"""How the runner manager starts a speech worker: its command line and whether it can run."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from ..config.schema import ArgValue, args_to_argv

__all__ = [
    "AUDIO_EXTRA",
    "WORKER_KEY_ENV",
    "WORKER_MODULE",
    "engine_missing_reason",
    "worker_command",
    "worker_interpreter",
]

WORKER_MODULE: Final = "llamarunner.audio.worker"
# The worker's key comes in its environment, not argv: any local user can read a
# process's command line, not its environment (as with llama-server's LLAMA_API_KEY).
WORKER_KEY_ENV: Final = "LLAMARUNNER_WORKER_KEY"
# What a user installs to get the engine; errors name it.
AUDIO_EXTRA: Final = 'pip install "llamarunner[audio]"'


def worker_interpreter() -> Path:
    """The Python that runs the worker: this one, so it sees the same installed packages."""
    return Path(sys.executable)


def engine_missing_reason() -> str | None:
    """Why no speech worker can run here (None when it can), without importing the engine.

    The main process never imports faster-whisper (it loads CTranslate2 and its threads);
    finding its package is enough to know the worker will.
    """
    if getattr(sys, "frozen", False):
        return ("this build of LlamaRunner Pro has no speech-to-text engine; install it "
                f"from PyPI with {AUDIO_EXTRA}")
    if importlib.util.find_spec("faster_whisper") is None:
        return f"speech to text needs the audio extra: {AUDIO_EXTRA}"
    return None


def worker_command(
    python: Path, model_path: str, alias: str, host: str, port: int,
    args: Mapping[str, ArgValue],
) -> list[str]:
    """The worker's argv: runner-owned flags first, then the model's `args` (threads,
    device, compute-type), spelled as flags the way llama-server's are."""
    return [str(python), "-m", WORKER_MODULE, "--host", host, "--port", str(port),
            "--model", model_path, "--alias", alias, *args_to_argv(args)]
