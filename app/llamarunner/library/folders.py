"""Find GGUF model files in the configured model folders and name them."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..config.schema import ModelConfig

log = logging.getLogger(__name__)

# Settings a model found on disk gets until the user configures it: a context that fits
# small machines (Ollama's default too) and the model's own chat template.
DISCOVERED_MODEL_ARGS: Mapping[str, str | int | float | bool] = {"ctx-size": 4096, "jinja": True}

# Projector files for vision models are not models of their own.
_NOT_A_MODEL = re.compile(r"(^|[-_.])mmproj([-_.]|$)", re.IGNORECASE)
_SPLIT_PART = re.compile(r"-(\d{5})-of-(\d{5})$")


@dataclass(frozen=True)
class FoundModel:
    name: str
    path: Path
    mtime: float


def model_name_for(path: Path) -> str:
    """`Qwen2.5-7B-Instruct-Q4_K_M.gguf` -> `qwen2.5-7b-instruct-q4_k_m`."""
    stem = _SPLIT_PART.sub("", path.stem)
    return stem.lower().replace(" ", "-")


def scan_folders(folders: Iterable[Path]) -> list[FoundModel]:
    """Every loadable *.gguf under the folders (recursively), one entry per model."""
    found: list[FoundModel] = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for root, _dirs, files in os.walk(folder, followlinks=False):
            for file in sorted(files):
                if not file.lower().endswith(".gguf") or _NOT_A_MODEL.search(file):
                    continue
                path = Path(root) / file
                split = _SPLIT_PART.search(path.stem)
                if split and split.group(1) != "00001":
                    continue  # llama-server loads the rest of a split model from part 1
                try:
                    mtime = path.stat().st_mtime
                except OSError as exc:
                    log.warning("skipping unreadable model file %s: %s", path, exc)
                    continue
                found.append(FoundModel(model_name_for(path), path, mtime))
    return found


def merge_discovered(
    configured: Mapping[str, ModelConfig], found: Iterable[FoundModel], runtime: str = "default"
) -> dict[str, ModelConfig]:
    """Configured models plus found files that no configured model already points at.

    A found name that is taken gets a numeric suffix and a warning, never a silent clash.
    """
    models = dict(configured)
    known_paths = {_same_file_key(m.path) for m in configured.values()}
    for item in found:
        key = _same_file_key(str(item.path))
        if key in known_paths:
            continue
        known_paths.add(key)
        name = item.name
        suffix = 2
        while name in models:
            name = f"{item.name}-{suffix}"
            suffix += 1
        if name != item.name:
            log.warning("model name %s is taken; %s is listed as %s", item.name, item.path, name)
        models[name] = ModelConfig(
            name=name, path=str(item.path), runtime=runtime, args=dict(DISCOVERED_MODEL_ARGS),
            ttl=None, alias=(),
        )
    return models


def _same_file_key(path: str) -> str:
    try:
        return os.path.realpath(path)
    except OSError:
        return path
