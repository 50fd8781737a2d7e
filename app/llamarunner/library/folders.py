"""Find GGUF models (and Whisper model folders) in the user's own model folders, and name them."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from .discovery import (
    LibraryEntry,
    ScanResult,
    SkippedFile,
    classify_files,
    is_gguf_name,
    link_refusal,
    pair_projectors,
    split_part,
)
from .metadata_cache import MetadataCache
from .whisper import AUDIO_KIND, is_whisper_folder, read_whisper_info

__all__ = [
    "DISCOVERED_MODEL_ARGS",
    "model_name_for",
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

    Symbolic links to model files are followed wherever they point; links to folders
    only while they stay inside the folder being scanned, so a scan never wanders the
    whole disk; a link that points nowhere is reported as broken (see `link_refusal`).
    Hidden files and folders (".name") are ignored: macOS "._x.gguf" resource forks and
    tools' partial downloads live there. Folders that do not exist give nothing.
    """
    result = ScanResult()
    for root in roots:
        folders, whisper_folders, skipped = _gguf_files_by_folder(Path(root))
        result.skipped += skipped
        for folder in whisper_folders:
            entry = _whisper_entry(folder)
            if isinstance(entry, SkippedFile):
                result.skipped.append(entry)
            else:
                result.entries.append(entry)
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


def _whisper_entry(folder: str) -> LibraryEntry | SkippedFile:
    """A speech-to-text model: the folder is the model, named after the folder."""
    try:
        info = read_whisper_info(folder)
    except (OSError, ValueError) as exc:
        return SkippedFile(folder, f"cannot read this Whisper model: {exc}")
    return LibraryEntry(
        name=os.path.basename(os.path.normpath(folder)).lower().replace(" ", "-"),
        path=folder,
        source="folder",
        parts=(folder,),
        projector=None,
        size=info.size,
        mtime=info.mtime,
        kind=AUDIO_KIND,
        multilingual=info.multilingual,
    )


def _gguf_files_by_folder(
    root: Path,
) -> tuple[dict[str, list[str]], list[str], list[SkippedFile]]:
    """{folder: its .gguf files} under root, depth first in name order, links checked;
    and the Whisper model folders found on the way (not looked into further)."""
    try:
        root_real = os.path.realpath(root)
    except OSError:
        return {}, [], []
    if not os.path.isdir(root_real):
        return {}, [], []
    found: dict[str, list[str]] = {}
    whisper: list[str] = []
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
                # Follows links: the target's kind. A loop of links raises: reported as
                # broken below.
                is_dir = entry.is_dir()
            except OSError:
                if not is_link:
                    continue
                is_dir = False
            if not (is_dir or is_gguf_name(entry.name)):
                continue
            real = os.path.realpath(entry.path)
            refusal = is_link and link_refusal(entry.path, real, is_dir=is_dir,
                                               root_real=root_real, root_label=str(root))
            if refusal:
                skipped.append(SkippedFile(entry.path, refusal))
                continue
            if is_dir:
                if real not in visited:  # a link loop or a second way to the same folder
                    visited.add(real)
                    if is_whisper_folder(entry.path):
                        whisper.append(entry.path)
                    else:
                        subfolders.append(entry.path)
            else:
                found.setdefault(folder, []).append(entry.path)
        stack.extend(reversed(subfolders))
    return found, whisper, skipped
