"""The model table: configured models plus every discovered one, each file once, names unique."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ..config.schema import ArgValue, Config, ModelConfig
from .discovery import (
    LibraryEntry,
    ScanResult,
    SkippedFile,
    gguf_stem,
    is_gguf_name,
    split_part,
)
from .folders import DISCOVERED_MODEL_ARGS, scan_model_folders
from .lmstudio_store import default_lmstudio_roots, scan_lmstudio_roots
from .metadata_cache import MetadataCache
from .ollama_store import default_ollama_roots, scan_ollama_roots, scan_ollama_store
from .whisper import AUDIO_KIND, WhisperInfo, is_whisper_folder, read_whisper_info

__all__ = [
    "Catalog",
    "LibraryEntry",
    "SkippedFile",
    "build_catalog",
    "folder_roots",
    "library_fingerprint",
    "lmstudio_roots",
    "ollama_roots",
    "watch_roots",
]

log = logging.getLogger(__name__)

_OLLAMA: Final = "ollama"
_LMSTUDIO: Final = "lmstudio"


@dataclass(frozen=True)
class Catalog:
    """Everything the library knows after one scan. Treat the containers as read-only.

    ``models`` is the table the runner manager serves (configured models with a path,
    then discovered ones with their settings applied); ``entries`` says where each of
    those names comes from; ``skipped`` lists files that look like models but are not
    listed, with the reason; ``problems`` are things in the config that found nothing.
    """

    models: dict[str, ModelConfig]
    entries: dict[str, LibraryEntry]
    skipped: list[SkippedFile]
    problems: list[str]


# ---------------------------------------------------------------------------------------------
# Where to look


def folder_roots(config: Config, app_models_dir: Path) -> list[Path]:
    """`model_dirs`, or the app's own models folder when none is configured."""
    if config.model_dirs:
        return [Path(folder).expanduser() for folder in config.model_dirs]
    return [Path(app_models_dir)]


def ollama_roots(config: Config) -> list[Path]:
    """Ollama's store(s) to read: the configured one, or the auto-detected candidates."""
    source = config.sources[_OLLAMA]
    if not source.enabled:
        return []
    return [Path(source.path)] if source.path else default_ollama_roots()


def lmstudio_roots(config: Config) -> list[Path]:
    """LM Studio's models folder(s) to read: the configured one, or the auto-detected ones."""
    source = config.sources[_LMSTUDIO]
    if not source.enabled:
        return []
    return [Path(source.path)] if source.path else default_lmstudio_roots()


def watch_roots(config: Config, app_models_dir: Path, pulled_dir: Path | None = None
                ) -> list[Path]:
    """Every folder models are discovered in (existing or not), for watching/fingerprints.

    Auto-detected LM Studio folders come from its settings file, so call this again
    before each fingerprint rather than keeping the list.
    """
    roots: list[Path] = []
    seen: set[str] = set()
    for root in (
        *folder_roots(config, app_models_dir),
        *([pulled_dir] if pulled_dir is not None else []),
        *ollama_roots(config),
        *lmstudio_roots(config),
    ):
        key = os.path.normcase(os.path.abspath(root))
        if key not in seen:
            seen.add(key)
            roots.append(root)
    return roots


def library_fingerprint(roots: Iterable[Path]) -> tuple[tuple[object, ...], ...]:
    """A cheap summary that changes when models may have come, gone or changed under roots.

    Folder modification times (an added, removed or renamed file changes its folder's),
    plus size and time of every .gguf file and of Ollama's manifests (rewritten in place
    on a re-pull). Ollama's blobs/ folders are not listed: they only change with a
    manifest. No file is opened; equal fingerprints mean no rescan is needed.
    """
    items: list[tuple[object, ...]] = []
    for root in roots:
        _fingerprint_root(str(root), items)
    return tuple(items)


def _fingerprint_root(root: str, items: list[tuple[object, ...]]) -> None:
    stack: list[tuple[str, bool]] = [(root, False)]
    while stack:
        folder, in_manifests = stack.pop()
        try:
            mtime = os.stat(folder).st_mtime_ns
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError:
            items.append((folder, None))
            continue
        items.append((folder, mtime))
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "blobs":
                        stack.append((entry.path, in_manifests or entry.name == "manifests"))
                    else:
                        items.append((entry.path, entry.stat().st_mtime_ns))
                elif in_manifests or is_gguf_name(entry.name):
                    st = entry.stat()  # through links: the model file's own size and time
                    items.append((entry.path, st.st_size, st.st_mtime_ns))
            except OSError:
                items.append((entry.path, None))


# ---------------------------------------------------------------------------------------------
# Building the table


def build_catalog(
    config: Config, *, app_models_dir: Path, metadata: MetadataCache | None = None,
    pulled_dir: Path | None = None,
) -> Catalog:
    """Scan every source and build the model table (blocking I/O: run it in a thread).

    Precedence: configured models (with a path) keep their names and files; then the
    model folders, the app's own store of pulled models (`pulled_dir`, source "pulled"),
    Ollama's store and LM Studio's, in that order. A file reached twice (same real path)
    is listed once, by the first source, and answers to its other names as aliases (where
    those are free); but each model of the pulled store is listed under its own name,
    even when it shares its file (a copy, or a `create` with another system prompt).
    A discovered name already taken (case-insensitively) by a name or alias tries the
    entry's fallback names (LM Studio: ``publisher/key``), then gets ``-2``, ``-3``... and
    a logged warning.
    Discovered models get DISCOVERED_MODEL_ARGS, ``mmproj`` when a projector is paired
    and ``lora`` for Ollama adapters; a config entry without a path adds its settings.
    """
    problems: list[str] = []
    models: dict[str, ModelConfig] = {}
    entries: dict[str, LibraryEntry] = {}
    taken: dict[str, str] = {}  # casefolded name or alias -> model name
    files: dict[str, str] = {}  # real path -> model name

    settings = {name: m for name, m in config.models.items() if m.settings_only}
    for name, model in config.models.items():
        if model.settings_only:
            continue
        entries[name] = _configured_entry(model, problems)
        if entries[name].kind != model.kind:
            model = dataclasses.replace(model, kind=entries[name].kind)
        models[name] = model
        files.setdefault(_real(model.path), name)
        for taken_name in (name, *model.alias):
            taken.setdefault(taken_name.casefold(), name)
    for name, model in settings.items():
        # The entry's own name is kept free for the discovered model it is meant for.
        for alias in model.alias:
            taken.setdefault(alias.casefold(), name)

    found = _scan_sources(config, app_models_dir, metadata, problems, pulled_dir)
    for entry in found.entries:
        real = _real(entry.path) + _own_model_key(entry)
        if real in files:
            owner = files[real]
            log.debug("%s is already listed as %s", entry.path, owner)
            # Listed once, but the names it was found under still reach it: Ollama tags
            # one blob as "llama3.2:latest" and "llama3.2:3b", and a configured model may
            # point at a blob that clients ask for by its Ollama name.
            _add_aliases(owner, (entry.name, *entry.aliases), models, entries, taken)
            continue
        name = _free_name(entry, taken)
        files[real] = name
        taken[name.casefold()] = name
        aliases = tuple(a for a in entry.aliases if a.casefold() not in taken)
        for alias in aliases:
            taken[alias.casefold()] = name
        extra = settings.get(name)
        models[name] = _discovered_model(name, entry, aliases, extra)
        entries[name] = dataclasses.replace(
            entry, name=name, aliases=aliases, fallback_names=()
        )

    discovered = [name for name, entry in entries.items() if entry.source != "config"]
    for name in settings:
        if name not in models:
            hint = difflib.get_close_matches(name, discovered, n=1)
            problems.append(
                f"models.{name}: no model called {name!r} was found in the model folders, "
                "Ollama or LM Studio; an entry without a path only gives settings to one"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
            )
    return Catalog(models=models, entries=entries, skipped=found.skipped, problems=problems)


def _scan_sources(
    config: Config, app_models_dir: Path, metadata: MetadataCache | None, problems: list[str],
    pulled_dir: Path | None = None,
) -> ScanResult:
    found = ScanResult()
    for folder in config.model_dirs:
        if not os.path.isdir(os.path.expanduser(folder)):
            problems.append(f"model_dirs: {folder} is not a folder, nothing found there")
    found.extend(scan_model_folders(folder_roots(config, app_models_dir), metadata=metadata))
    if pulled_dir is not None:
        found.extend(scan_ollama_store(pulled_dir, source="pulled"))

    ollama = config.sources[_OLLAMA]
    if ollama.enabled and ollama.path and not os.path.isdir(os.path.join(ollama.path, "manifests")):
        problems.append(
            f"sources.ollama.path: {ollama.path} has no manifests folder; give Ollama's "
            "models folder (the one holding manifests/ and blobs/), or \"\" to find it"
        )
    found.extend(scan_ollama_roots(ollama_roots(config)))

    lmstudio = config.sources[_LMSTUDIO]
    if lmstudio.enabled and lmstudio.path and not os.path.isdir(lmstudio.path):
        problems.append(
            f"sources.lmstudio.path: {lmstudio.path} is not a folder; give LM Studio's "
            "models folder, or \"\" to find it"
        )
    found.extend(scan_lmstudio_roots(lmstudio_roots(config), metadata=metadata))
    return found


def _own_model_key(entry: LibraryEntry) -> str:
    """Each manifest of the pulled store is a model of its own, as in Ollama: a copy, or a
    `create` that gives the file another system prompt or params, shares the blob."""
    return f"\0{entry.manifest}" if entry.source == "pulled" and entry.manifest else ""


def _add_aliases(
    owner: str,
    names: Iterable[str],
    models: dict[str, ModelConfig],
    entries: dict[str, LibraryEntry],
    taken: dict[str, str],
) -> None:
    extra = tuple(name for name in dict.fromkeys(names) if name.casefold() not in taken)
    if not extra:
        return
    for name in extra:
        taken[name.casefold()] = owner
    models[owner] = dataclasses.replace(models[owner], alias=(*models[owner].alias, *extra))
    entries[owner] = dataclasses.replace(
        entries[owner], aliases=(*entries[owner].aliases, *extra)
    )


def _free_name(entry: LibraryEntry, taken: Mapping[str, str]) -> str:
    for candidate in (entry.name, *entry.fallback_names):
        if candidate.casefold() not in taken:
            if candidate != entry.name:
                log.warning(
                    "model name %s is taken (by %s); %s is listed as %s",
                    entry.name, taken[entry.name.casefold()], entry.path, candidate,
                )
            return candidate
    suffix = 2
    while f"{entry.name}-{suffix}".casefold() in taken:
        suffix += 1
    name = f"{entry.name}-{suffix}"
    log.warning(
        "model name %s is taken (by %s); %s is listed as %s",
        entry.name, taken[entry.name.casefold()], entry.path, name,
    )
    return name


def _discovered_model(
    name: str,
    entry: LibraryEntry,
    aliases: tuple[str, ...],
    extra: ModelConfig | None,
) -> ModelConfig:
    # llama-server's defaults mean nothing to the speech worker.
    args: dict[str, ArgValue] = {} if entry.kind == AUDIO_KIND else dict(DISCOVERED_MODEL_ARGS)
    if entry.projector:
        args["mmproj"] = entry.projector
    if entry.adapters:
        args["lora"] = list(entry.adapters)
    # A pulled model's params are its defaults; the user's settings still win.
    args.update(entry.default_args)
    if extra is None:
        return ModelConfig(name=name, path=entry.path, args=args, alias=aliases,
                           kind=entry.kind)
    # `"jinja": false` in the entry switches a default off.
    for flag in extra.unset_args:
        args.pop(flag, None)
    args.update(extra.args)
    return ModelConfig(
        name=name,
        path=entry.path,
        runtime=extra.runtime,
        args=args,
        ttl=extra.ttl,
        alias=(*extra.alias, *(a for a in aliases if a not in extra.alias)),
        chat_template=extra.chat_template,
        rpc=extra.rpc,
        kind=entry.kind,
    )


def _configured_entry(model: ModelConfig, problems: list[str]) -> LibraryEntry:
    if is_whisper_folder(model.path):
        try:
            info = read_whisper_info(model.path)
        except (OSError, ValueError) as exc:
            problems.append(f"models.{model.name}.path: {model.path} cannot be read ({exc})")
            info = WhisperInfo(multilingual=False, size=0, mtime=0.0)
        return LibraryEntry(
            name=model.name, path=model.path, source="config", parts=(model.path,),
            projector=None, size=info.size, mtime=info.mtime, aliases=model.alias,
            kind=AUDIO_KIND, multilingual=info.multilingual,
        )
    if os.path.isdir(model.path):
        problems.append(
            f"models.{model.name}.path: {model.path} is a folder but not a Whisper model "
            "(CTranslate2: config.json, model.bin and a tokenizer); give a .gguf file")
    parts = _split_parts(model.path)
    size, mtime = 0, 0.0
    for part in parts:
        try:
            st = os.stat(part)
        except OSError:
            problems.append(f"models.{model.name}.path: {part} cannot be read (does it exist?)")
            continue
        size += st.st_size
        mtime = max(mtime, st.st_mtime)
    projector = model.args.get("mmproj")
    return LibraryEntry(
        name=model.name,
        path=model.path,
        source="config",
        parts=parts,
        projector=projector if isinstance(projector, str) else None,
        size=size,
        mtime=mtime,
        aliases=model.alias,
    )


def _split_parts(path: str) -> tuple[str, ...]:
    """All parts of a split model given part 1 (only those named like it), else (path,)."""
    name = os.path.basename(path)
    split = split_part(name)
    if split is None or split[1] != 1:
        return (path,)
    stem, _, total = split
    suffix = name[len(gguf_stem(name)) :]  # ".gguf" as the user's files spell it
    folder = os.path.dirname(path)
    return tuple(
        os.path.join(folder, f"{stem}-{n:05d}-of-{total:05d}{suffix}") for n in range(1, total + 1)
    )


def _real(path: str) -> str:
    try:
        return os.path.normcase(os.path.realpath(path))
    except OSError:
        return path
