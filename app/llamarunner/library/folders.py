"""Find GGUF models in the user's own model folders (recursively) and name them."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..config.schema import ArgValue, ModelConfig
from .discovery import (
    LibraryEntry,
    ScanResult,
    SkippedFile,
    classify_files,
    inside,
    is_gguf_name,
    pair_projectors,
    split_part,
)
from .metadata_cache import MetadataCache

__all__ = [
    "DISCOVERED_MODEL_ARGS",
    "FoundModel",
    "merge_discovered",
    "model_name_for",
    "scan_folders",
    "scan_model_folders",
]

log = logging.getLogger(__name__)

# Settings a model found on disk gets until the user configures it: a context that fits
# small machines (Ollama's default too) and the model's own chat template.
DISCOVERED_MODEL_ARGS: Mapping[str, str | int | float | bool] = {"ctx-size": 4096, "jinja": True}


def model_name_for(path: Path) -> str:
    """`Qwen2.5-7B-Instruct-Q4_K_M.gguf` -> `qwen2.5-7b-instruct-q4_k_m` (split: no -0000k-of-N)."""
    split = split_part(path.name)
    stem = split[0] if split else path.stem
    return stem.lower().replace(" ", "-")


def scan_model_folders(
    roots: Iterable[Path], *, metadata: MetadataCache | None = None
) -> ScanResult:
    """Every model under the folders, recursively, with projectors paired (see discovery).

    Symbolic links are followed only while they stay inside the folder being scanned: a
    link out of it is reported, not followed, so a scan never wanders the whole disk.
    Hidden files and folders (".name") are ignored: macOS "._x.gguf" resource forks and
    tools' partial downloads live there. Folders that do not exist give nothing.
    """
    result = ScanResult()
    for root in roots:
        folders, skipped = _gguf_files_by_folder(Path(root))
        result.skipped += skipped
        for files in folders.values():
            models, projectors, bad = classify_files(files, metadata)
            pairs, unpaired = pair_projectors(models, projectors)
            result.skipped += bad + unpaired
            for model in models:
                result.entries.append(
                    LibraryEntry(
                        name=model_name_for(Path(model.path)),
                        path=model.path,
                        source="folder",
                        parts=model.parts,
                        projector=pairs.get(model.path),
                        size=model.size,
                        mtime=model.mtime,
                    )
                )
    return result


def _gguf_files_by_folder(root: Path) -> tuple[dict[str, list[str]], list[SkippedFile]]:
    """{folder: its .gguf files} under root, depth first in name order, links checked."""
    try:
        root_real = os.path.realpath(root)
    except OSError:
        return {}, []
    if not os.path.isdir(root_real):
        return {}, []
    found: dict[str, list[str]] = {}
    skipped: list[SkippedFile] = []
    visited = {root_real}
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            skipped.append(SkippedFile(folder, f"cannot list this folder: {exc.strerror or exc}"))
            continue
        subfolders: list[str] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_link = entry.is_symlink()
                is_dir = entry.is_dir()  # follows links: the target's kind
            except OSError:
                continue
            if not (is_dir or is_gguf_name(entry.name)):
                continue
            real = os.path.realpath(entry.path)
            if is_link and not inside(real, root_real):
                skipped.append(
                    SkippedFile(
                        entry.path,
                        f"symbolic link to {real}, outside {root}: not followed (add that "
                        "folder to model_dirs instead)",
                    )
                )
                continue
            if is_dir:
                if real not in visited:  # a link loop or a second way to the same folder
                    visited.add(real)
                    subfolders.append(entry.path)
            else:
                found.setdefault(folder, []).append(entry.path)
        stack.extend(reversed(subfolders))
    return found, skipped


# ---------------------------------------------------------------------------------------------
# The first library's interface, kept for callers not yet on catalog.build_catalog.


@dataclass(frozen=True)
class FoundModel:
    """A model file found in a folder (superseded by LibraryEntry)."""

    name: str
    path: Path
    mtime: float
    projector: str | None = None


def scan_folders(folders: Iterable[Path]) -> list[FoundModel]:
    """Every loadable model under the folders (recursively), one entry per model."""
    return [
        FoundModel(e.name, Path(e.path), e.mtime, e.projector)
        for e in scan_model_folders(folders).entries
    ]


def merge_discovered(
    configured: Mapping[str, ModelConfig], found: Iterable[FoundModel], runtime: str = "default"
) -> dict[str, ModelConfig]:
    """Configured models plus found files that no configured model already points at.

    A found name that is taken gets a numeric suffix and a warning, never a silent clash;
    a configured entry without a path gives its settings to the found model of its name.
    """
    models = {name: m for name, m in configured.items() if not m.settings_only}
    settings = {name: m for name, m in configured.items() if m.settings_only}
    known_paths = {_same_file_key(m.path) for m in models.values()}
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
        args: dict[str, ArgValue] = dict(DISCOVERED_MODEL_ARGS)
        if item.projector:
            args["mmproj"] = item.projector
        extra = settings.get(name)
        if extra is not None:
            args.update(extra.args)
        models[name] = ModelConfig(
            name=name,
            path=str(item.path),
            runtime=extra.runtime if extra else runtime,
            args=args,
            ttl=extra.ttl if extra else None,
            alias=extra.alias if extra else (),
        )
    return models


def _same_file_key(path: str) -> str:
    try:
        return os.path.realpath(path)
    except OSError:
        return path
