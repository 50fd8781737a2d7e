"""Read LM Studio's models folder in place (<publisher>/<model>/*.gguf), never writing to it."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from .discovery import (
    FoundFile,
    LibraryEntry,
    ScanResult,
    SkippedFile,
    classify_files,
    gguf_stem,
    is_gguf_name,
    link_refusal,
    pair_projectors,
    quant_token,
    split_part,
)
from .metadata_cache import MetadataCache

__all__ = [
    "default_lmstudio_roots",
    "lmstudio_home",
    "lmstudio_model_key",
    "scan_lmstudio_roots",
    "scan_lmstudio_store",
]

# LM Studio keeps its home in ~/.lmstudio unless ~/.lmstudio-home-pointer (a text file
# holding a path) says it was moved; installs before 0.3 used ~/.cache/lm-studio.
_POINTER_FILE: Final = ".lmstudio-home-pointer"
_HOME: Final = ".lmstudio"
_OLD_HOME: Final = (".cache", "lm-studio")
# The "Models Directory" chosen in LM Studio's settings ("My Models" page).
_SETTINGS_FILE: Final = "settings.json"
_DOWNLOADS_KEY: Final = "downloadsFolder"
_MAX_SETTINGS_BYTES: Final = 4 * 1024 * 1024
# HF repos LM Studio downloads are named "<Model>-GGUF"; its model keys drop that.
_GGUF_REPO_SUFFIX: Final = re.compile(r"[-_.]gguf$", re.IGNORECASE)


def lmstudio_home(home: Path | None = None) -> Path:
    """LM Studio's home folder: where ~/.lmstudio-home-pointer points, else ~/.lmstudio."""
    home = Path.home() if home is None else home
    pointed = _read_text(home / _POINTER_FILE).strip()
    if pointed and Path(pointed).expanduser().is_dir():
        return Path(pointed).expanduser()
    return home / _HOME


def default_lmstudio_roots(home: Path | None = None) -> list[Path]:
    """LM Studio's models folders (current and pre-0.3 installs); they may not exist.

    For each home, the folder set in its settings.json (``downloadsFolder``) when one is
    set and readable, else ``<home>/models``.
    """
    home = Path.home() if home is None else home
    roots: list[Path] = []
    seen: set[str] = set()
    for app_home in (lmstudio_home(home), home.joinpath(*_OLD_HOME)):
        root = _downloads_folder(app_home / _SETTINGS_FILE) or app_home / "models"
        key = os.path.normcase(os.path.abspath(root))
        if key not in seen:
            seen.add(key)
            roots.append(root)
    return roots


def _read_text(path: Path) -> str:
    """A small text file's content, or "" when it is missing, unreadable or not a file."""
    try:
        # Only regular files: opening a FIFO left in its place would block the scan.
        if not path.is_file():
            return ""
        with open(path, encoding="utf-8") as file:
            return file.read(_MAX_SETTINGS_BYTES)
    except (OSError, UnicodeDecodeError):
        return ""


def _downloads_folder(settings: Path) -> Path | None:
    try:
        data = json.loads(_read_text(settings))
    except ValueError:
        return None
    folder = data.get(_DOWNLOADS_KEY) if isinstance(data, dict) else None
    if isinstance(folder, str) and folder.strip():
        return Path(folder.strip()).expanduser()
    return None


def lmstudio_model_key(folder_name: str) -> str:
    """LM Studio's key for a model folder: "Meta-Llama-3.1-8B-Instruct-GGUF" ->
    "meta-llama-3.1-8b-instruct" (what its /api/v0/models lists as the id)."""
    return _GGUF_REPO_SUFFIX.sub("", folder_name).lower()


def scan_lmstudio_store(root: Path, *, metadata: MetadataCache | None = None) -> ScanResult:
    """Every model in LM Studio's layout under `root`: ``<publisher>/<model-folder>/*.gguf``.

    Like LM Studio, only files exactly two folders deep count (others are reported as
    skipped). Names follow LM Studio's model keys: the folder name, lower-cased, without
    "-GGUF"; a folder holding several quantizations gives ``<key>@<quant>`` for each
    (LM Studio's variant keys, e.g. ``meta-llama-3.1-8b-instruct@q4_k_m``). Projectors in
    the folder are paired as in model folders. Links to model files are followed wherever
    they point (`lms import --symbolic-link`); links to folders must stay inside `root`.
    """
    result = ScanResult()
    try:
        root_real = os.path.realpath(root)
    except OSError:
        return result
    if not os.path.isdir(root_real):
        return result
    for publisher_path, publisher in _children(str(root), root_real, result.skipped, "files"):
        for folder_path, folder in _children(publisher_path, root_real, result.skipped, "files"):
            files = [
                path
                for path, _ in _children(folder_path, root_real, result.skipped, "gguf")
            ]
            if files:
                _scan_model_folder(publisher, folder, files, metadata, result)
    return result


def _children(
    folder: str, root_real: str, skipped: list[SkippedFile], want: str
) -> list[tuple[str, str]]:
    """(path, name) of the subfolders of `folder` (want="files": .gguf files here are
    reported as misplaced), or of its .gguf files (want="gguf"); links must stay in root."""
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except OSError as exc:
        skipped.append(SkippedFile(folder, f"cannot list this folder: {exc.strerror or exc}"))
        return []
    found: list[tuple[str, str]] = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            is_link = entry.is_symlink()
            is_dir = entry.is_dir()
        except OSError:
            if not is_link:
                continue
            is_dir = False  # a loop of links: reported as broken below
        gguf = not is_dir and is_gguf_name(entry.name)
        if not (is_dir or gguf):
            continue
        real = os.path.realpath(entry.path)
        refusal = is_link and link_refusal(entry.path, real, is_dir=is_dir, root_real=root_real,
                                           root_label="LM Studio's models folder")
        if refusal:
            skipped.append(SkippedFile(entry.path, refusal))
        elif (want == "gguf" and gguf) or (want == "files" and is_dir):
            found.append((entry.path, entry.name))
        elif want == "files" and gguf:
            skipped.append(
                SkippedFile(
                    entry.path,
                    "LM Studio only loads models from <publisher>/<model>/ folders; move it "
                    "into one, or add this folder to model_dirs",
                )
            )
    return found


def _scan_model_folder(
    publisher: str,
    folder: str,
    files: Sequence[str],
    metadata: MetadataCache | None,
    result: ScanResult,
) -> None:
    models, projectors, bad = classify_files(files, metadata)
    pairs, unpaired = pair_projectors(models, projectors)
    result.skipped += bad + unpaired
    key = lmstudio_model_key(folder)
    for model, name in zip(models, _variant_names(key, models), strict=True):
        result.entries.append(
            LibraryEntry(
                name=name,
                path=model.path,
                source="lmstudio",
                parts=model.parts,
                projector=pairs.get(model.path),
                size=model.size,
                mtime=model.mtime,
                publisher=publisher,
                # Two publishers' copies of one model: LM Studio's hub keys are
                # "publisher/model", so that is the name the second one gets.
                fallback_names=(f"{publisher.lower()}/{name}",),
            )
        )


def _variant_names(key: str, models: Sequence[FoundFile]) -> list[str]:
    if len(models) == 1:
        return [key]
    stems = []
    for model in models:
        name = os.path.basename(model.path)
        split = split_part(name)
        stems.append((split[0] if split else gguf_stem(name)).lower())
    quants = [quant_token(stem) for stem in stems]
    if None not in quants and len(set(quants)) == len(quants):
        return [f"{key}@{quant}" for quant in quants]
    # Quantizations not in the names (or repeated): the file name tells them apart.
    return [f"{key}@{stem}" for stem in stems]


def scan_lmstudio_roots(
    roots: Sequence[Path], *, metadata: MetadataCache | None = None
) -> ScanResult:
    """`scan_lmstudio_store` over several folders, in order."""
    result = ScanResult()
    for root in roots:
        result.extend(scan_lmstudio_store(root, metadata=metadata))
    return result
