"""Shared pieces of model discovery: library entries, skip reasons, cheap GGUF checks, pairing."""

from __future__ import annotations

import os
import re
import stat
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias

from ..config.schema import ArgValue
from .gguf import GGUF_MAGIC, SUPPORTED_VERSIONS, GGUFError
from .metadata import GGUFMetadata, read_metadata
from .metadata_cache import MetadataCache

__all__ = [
    "MMPROJ_NAME",
    "FoundFile",
    "GGUFPeek",
    "LibraryEntry",
    "NotGGUFError",
    "ScanResult",
    "SkippedFile",
    "Source",
    "classify_files",
    "gguf_stem",
    "inside",
    "is_gguf_name",
    "link_refusal",
    "pair_projectors",
    "peek_gguf",
    "projector_key",
    "quant_token",
    "read_meta",
    "split_part",
]

Source: TypeAlias = Literal["config", "folder", "pulled", "ollama", "lmstudio"]


@dataclass(frozen=True)
class SkippedFile:
    """A file (or Ollama manifest) that looked like a model but is not listed, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class LibraryEntry:
    """One model the library knows, wherever it lives; `path` is what llama-server loads."""

    name: str
    path: str
    source: Source
    # Every file of the model: just `path`, or all parts of a split GGUF (part 1 first).
    parts: tuple[str, ...]
    # The vision projector (mmproj) llama-server gets with --mmproj, if any.
    projector: str | None
    # Bytes of the model's weights (all parts; the projector is not counted).
    size: int
    mtime: float
    # Ollama: the sha256 (64 hex digits) of the model layer, i.e. of the GGUF blob.
    digest: str | None = None
    # LM Studio: the publisher folder ("lmstudio-community"); Ollama: the namespace.
    publisher: str | None = None
    # LoRA adapters Ollama applies to the model (ADAPTER in a Modelfile): passed as --lora.
    adapters: tuple[str, ...] = ()
    # Other names clients may use ("llama3.2" for Ollama's "llama3.2:latest").
    aliases: tuple[str, ...] = ()
    # Names to try, in order, when `name` is taken, before numbered suffixes.
    fallback_names: tuple[str, ...] = field(default=(), repr=False)
    # The app's store of pulled models: the manifest this entry was read from.
    manifest: str | None = None
    # Pulled models: the manifest's system prompt and its params as llama-server flags.
    system: str | None = None
    default_args: Mapping[str, ArgValue] = field(default_factory=dict)
    # Ollama's store and ours: the manifest's template layer (Go template text), which
    # says the model's turn format when its GGUF carries no template of its own.
    ollama_template: str | None = None
    # Pulled and created models: the conversation a Modelfile's MESSAGE lines give, which
    # Ollama puts before every chat's own messages.
    messages: tuple[Mapping[str, Any], ...] = ()
    # "llm" (a GGUF that llama-server runs) or "audio" (a Whisper folder the speech
    # worker runs; `path` is the folder).
    kind: str = "llm"
    # Audio models: whether the model understands languages other than English.
    multilingual: bool = False


@dataclass
class ScanResult:
    """What one source found: models in a deterministic order, and what it skipped."""

    entries: list[LibraryEntry] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)

    def extend(self, other: ScanResult) -> None:
        self.entries += other.entries
        self.skipped += other.skipped


# ---------------------------------------------------------------------------------------------
# Names of files

_GGUF_SUFFIX: Final = ".gguf"
# llama.cpp's gguf-split names parts "<stem>-00001-of-00003.gguf" (1-based, 5 digits) and
# finds parts 2..N from part 1's path, so part 1 is what llama-server is given.
_SPLIT_PART: Final = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<total>\d{5})$")
# Projector files for vision models ("mmproj-model-f16.gguf", "x-mmproj-f16.gguf").
MMPROJ_NAME: Final = re.compile(r"(^|[-_.])mmproj([-_.]|$)", re.IGNORECASE)
# The quantization a file name ends with, the way HF/LM Studio repos name them:
# Q4_K_M, IQ4_XS, Q8_0, TQ1_0, MXFP4_MOE, F16, BF16 ... (optionally after an "UD-").
_QUANT: Final = (
    r"(?:ud-)?(?:i?q\d+(?:_[a-z0-9]+)*|tq\d_\d|mxfp4(?:_moe)?|nvfp4|bf16|fp16|fp32|f16|f32)"
)
_TRAILING_QUANT: Final = re.compile(rf"(?:^|[-_.])({_QUANT})$", re.IGNORECASE)
# Words that say nothing about which model a projector belongs to.
_GENERIC_PROJECTOR_WORDS: Final = frozenset({"", "model", "vision", "projector", "clip", "mm"})
_SEPARATORS: Final = "-_. "


def is_gguf_name(name: str) -> bool:
    """Whether a file name ends in .gguf (any case: Windows and HF uploads mix them)."""
    return name.lower().endswith(_GGUF_SUFFIX)


def gguf_stem(name: str) -> str:
    """The file name without its .gguf suffix."""
    return name[: -len(_GGUF_SUFFIX)] if is_gguf_name(name) else name


def split_part(name: str) -> tuple[str, int, int] | None:
    """(stem, part number, part count) for a split GGUF's file name, else None."""
    match = _SPLIT_PART.match(gguf_stem(name))
    if match is None:
        return None
    return match["stem"], int(match["no"]), int(match["total"])


def quant_token(stem: str) -> str | None:
    """The quantization a file stem ends with, lower-cased ("q4_k_m"), or None."""
    match = _TRAILING_QUANT.search(stem)
    return match.group(1).lower() if match else None


def inside(path: str, root: str) -> bool:
    """Whether the real path `path` is `root` or under it (both already realpath'd)."""
    path, root = os.path.normcase(path), os.path.normcase(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def link_refusal(path: str, real: str, *, is_dir: bool, root_real: str,
                 root_label: str) -> str | None:
    """Why a symbolic link found while scanning is not followed, or None to follow it.

    A link to a model file is followed wherever it points: LM Studio's
    `lms import --symbolic-link` and users' own links put models in a folder that way,
    and a file link cannot lead a scan anywhere. A link to a folder must stay inside the
    folder being scanned, so a scan never wanders the whole disk (loops are the caller's
    visited set's job). A link that points nowhere is reported as broken.
    """
    if not os.path.exists(real):
        try:
            target = os.readlink(path)
        except OSError:
            target = real
        return f"broken symbolic link: it points to {target}, which does not exist"
    if is_dir and not inside(real, root_real):
        return (f"symbolic link to {real}, outside {root_label}: not followed (add that "
                "folder to model_dirs instead)")
    return None


# ---------------------------------------------------------------------------------------------
# Cheap GGUF checks

_HEADER: Final = struct.Struct("<4sIQQ")


class NotGGUFError(Exception):
    """The file cannot be a GGUF model llama.cpp loads; the message says why."""


@dataclass(frozen=True)
class GGUFPeek:
    """The fixed 24-byte start of a GGUF file."""

    version: int
    tensor_count: int
    kv_count: int


def peek_gguf(path: str | os.PathLike[str]) -> GGUFPeek:
    """Read only the fixed header: enough to refuse non-GGUF files without parsing anything.

    Raises NotGGUFError with the reason, or OSError when the file cannot be read.
    """
    with open(path, "rb", buffering=0) as file:
        head = file.read(_HEADER.size)
    if head[:4] != GGUF_MAGIC:
        raise NotGGUFError(f"not a GGUF file (it starts with {head[:4]!r}, not b'GGUF')")
    if len(head) < _HEADER.size:
        raise NotGGUFError(f"truncated GGUF file ({len(head)} bytes)")
    _, version, tensor_count, kv_count = _HEADER.unpack(head)
    if version & 0xFFFF == 0 and version != 0:
        raise NotGGUFError("big-endian GGUF file: llama.cpp on this machine cannot load it")
    if version not in SUPPORTED_VERSIONS:
        raise NotGGUFError(f"GGUF version {version} is not one llama.cpp loads (2 or 3)")
    return GGUFPeek(version, tensor_count, kv_count)


# Without a MetadataCache (tests, one-off scans) headers are remembered in memory, keyed
# like the cache, so that a rescan every few seconds does not re-read every file.
_MEMO_MAX: Final = 2048
_memo: dict[tuple[str, int, int], GGUFMetadata | GGUFError] = {}


def read_meta(path: str, metadata: MetadataCache | None) -> GGUFMetadata:
    """Header metadata through the cache when there is one; raises GGUFError or OSError."""
    if metadata is not None:
        return metadata.get(path)
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_size, st.st_mtime_ns)
    known = _memo.get(key)
    if known is None:
        try:
            known = read_metadata(real)
        except GGUFError as exc:
            known = exc
        if len(_memo) >= _MEMO_MAX:
            _memo.clear()
        _memo[key] = known
    if isinstance(known, GGUFError):
        raise known
    return known


# ---------------------------------------------------------------------------------------------
# Sorting the .gguf files of one folder into models and projectors


@dataclass(frozen=True)
class FoundFile:
    """A loadable model (or projector) found in a folder; `path` as found, not resolved."""

    path: str
    parts: tuple[str, ...]
    size: int
    mtime: float


@dataclass
class _Split:
    stem: str
    total: int
    parts: dict[int, tuple[str, os.stat_result]] = field(default_factory=dict)


def classify_files(
    files: Iterable[str], metadata: MetadataCache | None
) -> tuple[list[FoundFile], list[FoundFile], list[SkippedFile]]:
    """Sort the .gguf files of ONE folder into (models, projectors, skipped).

    * mmproj files (``mmproj`` in the name, or general.type "mmproj" / architecture "clip"
      in the header) are projectors, not models;
    * split parts ``<stem>-0000k-of-0000N.gguf`` become one model (path = part 1, size =
      all parts) when every part is there, else the set is skipped with what is missing;
    * vocab-only files (no tensors, or general.type "vocab") are tokenizers, not models;
    * files that are not GGUF, or whose header is broken or hostile, are skipped.

    Only the 24-byte start of each file is read, plus the header (through the cache) of
    files whose name does not already say what they are.
    """
    models: list[FoundFile] = []
    projectors: list[FoundFile] = []
    skipped: list[SkippedFile] = []
    splits: dict[tuple[str, int], _Split] = {}
    for path in sorted(files):
        try:
            st = os.stat(path)
        except OSError as exc:
            skipped.append(SkippedFile(path, f"cannot read it: {exc.strerror or exc}"))
            continue
        if not stat.S_ISREG(st.st_mode):
            skipped.append(SkippedFile(path, "not a regular file"))
            continue
        split = split_part(os.path.basename(path))
        if split is not None:
            stem, number, total = split
            if not 1 <= number <= total:
                skipped.append(SkippedFile(path, f"split part {number} of {total} cannot exist"))
                continue
            group = splits.setdefault((stem, total), _Split(stem, total))
            group.parts[number] = (path, st)
            continue
        kind = _kind_of(path, st, metadata)
        if isinstance(kind, SkippedFile):
            skipped.append(kind)
        elif kind == "projector":
            projectors.append(FoundFile(path, (path,), st.st_size, st.st_mtime))
        else:
            models.append(FoundFile(path, (path,), st.st_size, st.st_mtime))
    for group in splits.values():
        found = _split_model(group, metadata)
        if isinstance(found, SkippedFile):
            skipped.append(found)
        else:
            models.append(found)
    models.sort(key=lambda m: m.path)
    return models, projectors, skipped


def _kind_of(
    path: str, st: os.stat_result, metadata: MetadataCache | None
) -> Literal["model", "projector"] | SkippedFile:
    try:
        peek = peek_gguf(path)
    except NotGGUFError as exc:
        return SkippedFile(path, str(exc))
    except OSError as exc:
        return SkippedFile(path, f"cannot read it: {exc.strerror or exc}")
    if MMPROJ_NAME.search(os.path.basename(path)):
        return "projector"
    try:
        meta = read_meta(path, metadata)
    except GGUFError as exc:
        return SkippedFile(path, f"broken GGUF header: {exc.reason}")
    except OSError as exc:
        return SkippedFile(path, f"cannot read it: {exc.strerror or exc}")
    if meta.is_projector:
        return "projector"
    if peek.tensor_count == 0 or meta.model_info.get("general.type") == "vocab":
        # llama.cpp's models/ggml-vocab-*.gguf: a tokenizer for tests, nothing to run.
        return SkippedFile(path, "vocab-only GGUF (no weights): a tokenizer, not a model")
    return "model"


def _split_model(group: _Split, metadata: MetadataCache | None) -> FoundFile | SkippedFile:
    numbers = sorted(group.parts)
    first_path = group.parts[numbers[0]][0]
    missing = [n for n in range(1, group.total + 1) if n not in group.parts]
    if missing:
        shown = ", ".join(str(n) for n in missing[:8]) + (" ..." if len(missing) > 8 else "")
        return SkippedFile(
            first_path,
            f"split model {group.stem} is incomplete: part(s) {shown} of {group.total} "
            "missing (still downloading?)",
        )
    paths = tuple(group.parts[n][0] for n in numbers)
    for part in paths:
        try:
            peek_gguf(part)
        except NotGGUFError as exc:
            return SkippedFile(part, f"part of split model {group.stem}: {exc}")
        except OSError as exc:
            return SkippedFile(part, f"cannot read it: {exc.strerror or exc}")
    try:
        # Part 1 carries the metadata; with gguf-split --no-tensor-first-split it may hold
        # no tensors at all, so the vocab-only test does not apply here.
        meta = read_meta(paths[0], metadata)
    except GGUFError as exc:
        return SkippedFile(paths[0], f"broken GGUF header: {exc.reason}")
    except OSError as exc:
        return SkippedFile(paths[0], f"cannot read it: {exc.strerror or exc}")
    if meta.is_projector:
        return SkippedFile(paths[0], "split vision projector: llama.cpp loads projectors whole")
    stats = [group.parts[n][1] for n in numbers]
    return FoundFile(
        paths[0], paths, sum(s.st_size for s in stats), max(s.st_mtime for s in stats)
    )


# ---------------------------------------------------------------------------------------------
# Pairing projectors with models


def projector_key(path: str) -> str:
    """What a projector's name says about its model: "mmproj-Qwen2-VL-7B-f16" -> "qwen2-vl-7b".

    Empty when the name is generic ("mmproj-model-f16.gguf", "mmproj-F16.gguf").
    """
    text = MMPROJ_NAME.sub("-", gguf_stem(os.path.basename(path)).lower())
    text = text.strip(_SEPARATORS)
    while True:
        match = _TRAILING_QUANT.search(text)
        if match is None:
            break
        text = text[: match.start()].strip(_SEPARATORS)
    return "" if text in _GENERIC_PROJECTOR_WORDS else text


def _model_stem(model: FoundFile) -> str:
    name = os.path.basename(model.path)
    split = split_part(name)
    return (split[0] if split else gguf_stem(name)).lower()


def _starts_with_word(text: str, prefix: str) -> bool:
    return text == prefix or (text.startswith(prefix) and text[len(prefix)] in _SEPARATORS)


def pair_projectors(
    models: Sequence[FoundFile], projectors: Sequence[FoundFile]
) -> tuple[dict[str, str], list[SkippedFile]]:
    """Which projector each model of ONE folder gets: {model path: projector path}.

    The rule, in order:

    1. one model and one projector in the folder: they belong together;
    2. otherwise a model gets the projector whose name, without "mmproj" and its own
       precision (f16, q8_0 ...), is the longest word-wise prefix of the model's file name:
       ``mmproj-gemma-3-4b-it-f16.gguf`` goes with ``gemma-3-4b-it-Q4_K_M.gguf`` and
       ``gemma-3-4b-it-Q8_0.gguf``, not with ``mistral-7b-Q4_K_M.gguf``;
    3. a model no name matches gets the folder's only generically named projector
       (``mmproj-model-f16.gguf``, ``mmproj-F16.gguf``): a downloaded repo's quants share it;
    4. projectors no model got are reported as skipped, so a mismatch is visible.

    A wrong pairing makes llama-server fail to start, so when in doubt nothing is paired.
    """
    if not projectors:
        return {}, []
    if len(models) == 1 and len(projectors) == 1:
        return {models[0].path: projectors[0].path}, []
    keys = [(projector_key(p.path), p.path) for p in projectors]
    generic = [path for key, path in keys if not key]
    pairs: dict[str, str] = {}
    for model in models:
        stem = _model_stem(model)
        matches = [(len(key), path) for key, path in keys if key and _starts_with_word(stem, key)]
        if matches:
            # Longest name wins; among equal names (f16/f32 of one projector) the first.
            best = max(length for length, _ in matches)
            pairs[model.path] = min(path for length, path in matches if length == best)
        elif len(generic) == 1:
            pairs[model.path] = generic[0]
    used = set(pairs.values())
    skipped = [
        SkippedFile(
            p.path,
            "vision projector not paired with any model in its folder: name it after the "
            "model (mmproj-<model file name>.gguf) or keep one model per folder",
        )
        for p in projectors
        if p.path not in used
    ]
    return pairs, skipped
