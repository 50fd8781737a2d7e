"""Read Ollama's model store in place (manifests -> GGUF blobs), never writing to it."""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..config.schema import ArgValue
from .discovery import (
    LibraryEntry,
    NotGGUFError,
    ScanResult,
    SkippedFile,
    Source,
    inside,
    peek_gguf,
)
from .ollama_params import params_to_args

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_NAMESPACE",
    "MEDIA_ADAPTER",
    "MEDIA_LICENSE",
    "MEDIA_MESSAGES",
    "MEDIA_MODEL",
    "MEDIA_PARAMS",
    "MEDIA_PROJECTOR",
    "MEDIA_SYSTEM",
    "MEDIA_TEMPLATE",
    "MEDIA_TENSOR",
    "default_ollama_roots",
    "ollama_model_name",
    "scan_ollama_roots",
    "scan_ollama_store",
]

log = logging.getLogger(__name__)

# Ollama's defaults: names without host/namespace mean registry.ollama.ai/library
# (server/modelpath.go, types/model/name.go).
DEFAULT_HOST: Final = "registry.ollama.ai"
DEFAULT_NAMESPACE: Final = "library"

# Layer media types in an Ollama manifest (server/images.go).
MEDIA_MODEL: Final = "application/vnd.ollama.image.model"
MEDIA_PROJECTOR: Final = "application/vnd.ollama.image.projector"
MEDIA_ADAPTER: Final = "application/vnd.ollama.image.adapter"
# Safetensors weights for Ollama's own (MLX) engine: nothing llama.cpp can load.
MEDIA_TENSOR: Final = "application/vnd.ollama.image.tensor"
# Text layers: read at scan time (small files), written by /api/create.
MEDIA_TEMPLATE: Final = "application/vnd.ollama.image.template"
MEDIA_SYSTEM: Final = "application/vnd.ollama.image.system"
MEDIA_PARAMS: Final = "application/vnd.ollama.image.params"
MEDIA_LICENSE: Final = "application/vnd.ollama.image.license"
MEDIA_MESSAGES: Final = "application/vnd.ollama.image.messages"

# Ollama names a blob after its digest; since CVE-2024-37032 (a digest with "../" in a
# manifest let a pull write outside the store) the digest must be exactly this.
_DIGEST: Final = re.compile(r"sha256:([0-9a-f]{64})")
# A name part as Ollama allows it (types/model/name.go: letters, digits, "_", "-", "."; at
# most 128 bytes; no ".."), which also rules out separators and "." / ".." components.
_NAME_PART: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# A host may also carry a port ("localhost:5000"), as a registry pulled from over HTTP.
_HOST_PART: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}(:[0-9]{1,5})?")
# Text layers of a pulled model read at scan time (system prompt, params): small files.
_MAX_TEXT_LAYER_BYTES: Final = 1024 * 1024
# Manifests are a few KB; tensor-layer ones list many layers. Anything bigger is not one.
_MAX_MANIFEST_BYTES: Final = 8 * 1024 * 1024


def default_ollama_roots(
    env: Mapping[str, str] | None = None,
    *,
    home: Path | None = None,
    platform: str | None = None,
) -> list[Path]:
    """Where Ollama keeps models: $OLLAMA_MODELS if set, else the per-OS defaults.

    ``~/.ollama/models`` everywhere (on Windows ``%USERPROFILE%\\.ollama\\models``), and on
    Linux also ``/usr/share/ollama/.ollama/models``, the home of the system service that
    Ollama's install script sets up. Only the candidates; they may not exist.
    """
    env = os.environ if env is None else env
    # Ollama trims spaces and quotes from its environment variables (envconfig.Var).
    configured = env.get("OLLAMA_MODELS", "").strip().strip("\"'")
    if configured:
        return [Path(configured).expanduser()]
    home = Path.home() if home is None else home
    roots = [home / ".ollama" / "models"]
    if (platform or sys.platform).startswith("linux"):
        roots.append(Path("/usr/share/ollama/.ollama/models"))
    return roots


def ollama_model_name(host: str, namespace: str, model: str, tag: str) -> str:
    """Ollama's shortest display name: `llama3.2:3b`, `user/model:tag`, `hf.co/org/m:Q4_K_M`."""
    if host.lower() == DEFAULT_HOST:
        if namespace.lower() == DEFAULT_NAMESPACE:
            return f"{model}:{tag}"
        return f"{namespace}/{model}:{tag}"
    return f"{host}/{namespace}/{model}:{tag}"


@dataclass(frozen=True)
class _Layer:
    media_type: str
    digest: str
    size: int


class _Refused(Exception):
    """The manifest or a layer it names cannot be used; the message says why."""


def scan_ollama_store(root: Path, *, source: Source = "ollama") -> ScanResult:
    """Every GGUF model in the store at `root` (which holds manifests/ and blobs/).

    `source` is "ollama" for Ollama's own store and "pulled" for the app's: entries of the
    latter also carry their manifest's system prompt and params (as llama-server flags).

    Manifests live at ``manifests/<host>/<namespace>/<model>/<tag>``; each model/projector
    layer's digest ``sha256:<hex>`` names the file ``blobs/sha256-<hex>``. A model is
    skipped with a reason when its manifest is unreadable, names a path outside the store
    (bad name parts, bad digests, symbolic links leaving blobs/), or when its GGUF blob is
    missing, the wrong size or not GGUF; safetensors-only and remote models have no GGUF.
    Nothing is parsed beyond the manifests and the first 24 bytes of each blob.
    """
    result = ScanResult()
    manifests = root / "manifests"
    blobs = root / "blobs"
    try:
        manifests_real = os.path.realpath(manifests)
        blobs_real = os.path.realpath(blobs)
    except OSError:
        return result
    if not os.path.isdir(manifests_real):
        return result
    for parts, path in _manifest_files(manifests, manifests_real, result.skipped):
        try:
            entry = _entry_for(parts, path, blobs, blobs_real, result.skipped, source)
        except _Refused as exc:
            result.skipped.append(SkippedFile(path, str(exc)))
            continue
        result.entries.append(entry)
    return result


def _manifest_files(
    manifests: Path, manifests_real: str, skipped: list[SkippedFile]
) -> list[tuple[tuple[str, str, str, str], str]]:
    """(host, namespace, model, tag) and path of every manifest, in name order."""
    found: list[tuple[tuple[str, str, str, str], str]] = []

    def walk(folder: str, parts: tuple[str, ...]) -> None:
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            skipped.append(SkippedFile(folder, f"cannot list this folder: {exc.strerror or exc}"))
            return
        for entry in entries:
            if entry.name.startswith(".") and ".." not in entry.name and "\\" not in entry.name:
                continue  # .DS_Store and other tools' droppings, never Ollama's
            here = (*parts, entry.name)
            pattern = _HOST_PART if not parts else _NAME_PART
            if not pattern.fullmatch(entry.name) or ".." in entry.name:
                skipped.append(
                    SkippedFile(entry.path, f"{entry.name!r} is not a valid Ollama name part")
                )
                continue
            real = os.path.realpath(entry.path)
            if not inside(real, manifests_real):
                skipped.append(
                    SkippedFile(entry.path, f"leads outside Ollama's manifests folder (to {real})")
                )
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:
                continue
            if len(here) < 4:
                if is_dir:
                    walk(entry.path, here)
            elif not is_dir:
                host, namespace, model, tag = here
                found.append(((host, namespace, model, tag), entry.path))

    walk(str(manifests), ())
    return found


def _entry_for(
    parts: tuple[str, str, str, str],
    path: str,
    blobs: Path,
    blobs_real: str,
    skipped: list[SkippedFile],
    source: Source = "ollama",
) -> LibraryEntry:
    host, namespace, model_name, tag = parts
    manifest, mtime = _read_manifest(path)
    layers = _layers(manifest)
    models = [layer for layer in layers if layer.media_type == MEDIA_MODEL]
    if not models:
        if any(layer.media_type == MEDIA_TENSOR for layer in layers):
            raise _Refused(
                "safetensors model (for Ollama's own engine): llama.cpp needs a GGUF layer"
            )
        raise _Refused("no GGUF model layer (a cloud/remote model, or an incomplete pull)")
    if len(models) > 1:
        # llama.cpp finds split parts by file name, which Ollama's blob names do not have.
        raise _Refused(
            f"the model is split across {len(models)} GGUF layers, which llama-server "
            "cannot load from Ollama's blob names"
        )
    model_layer = models[0]
    model_blob, model_size, digest = _blob(model_layer, blobs, blobs_real, "model")
    projector = None
    projector_layers = [layer for layer in layers if layer.media_type == MEDIA_PROJECTOR]
    if projector_layers:
        # llama-server takes one --mmproj; Ollama's own models carry at most one.
        try:
            projector = _blob(projector_layers[0], blobs, blobs_real, "projector")[0]
        except _Refused as exc:
            # The model still answers text; its vision is what is lost, and said so.
            skipped.append(SkippedFile(path, f"{exc} (listed without vision)"))
    adapters: list[str] = []
    for layer in layers:
        if layer.media_type == MEDIA_ADAPTER:
            # Without its adapter the model would answer as its base model: refuse.
            adapters.append(_blob(layer, blobs, blobs_real, "adapter")[0])
    name = ollama_model_name(host, namespace, model_name, tag)
    aliases = (name[: -len(":latest")],) if tag == "latest" else ()
    system: str | None = None
    default_args: dict[str, ArgValue] = {}
    if source == "pulled":
        system, default_args = _defaults(layers, blobs, blobs_real, path, skipped)
    template = _template(layers, blobs, blobs_real, path, skipped)
    messages = _messages(layers, blobs, blobs_real, path, skipped) if source == "pulled" else ()
    return LibraryEntry(
        name=name,
        path=model_blob,
        source=source,
        parts=(model_blob,),
        projector=projector,
        size=model_size,
        mtime=mtime,
        digest=digest,
        publisher=None if namespace.lower() == DEFAULT_NAMESPACE else namespace,
        adapters=tuple(adapters),
        aliases=aliases,
        manifest=path if source == "pulled" else None,
        system=system,
        default_args=default_args,
        ollama_template=template,
        messages=messages,
    )


def _messages(layers: Sequence[_Layer], blobs: Path, blobs_real: str, path: str,
              skipped: list[SkippedFile]) -> tuple[Mapping[str, Any], ...]:
    """The manifest's messages layer: [{"role", "content"}...] (a bad one is reported)."""
    for layer in layers:
        if layer.media_type != MEDIA_MESSAGES:
            continue
        try:
            loaded = json.loads(_text_layer(layer, blobs, blobs_real, "messages"))
            if not isinstance(loaded, list) or not all(
                    isinstance(m, dict) and isinstance(m.get("role"), str)
                    and isinstance(m.get("content", ""), str) for m in loaded):
                raise _Refused("messages layer is not a list of {role, content} objects")
        except (_Refused, ValueError) as exc:
            skipped.append(SkippedFile(path, f"{exc} (listed without it)"))
            return ()
        return tuple({"role": m["role"], "content": m.get("content", "")} for m in loaded)
    return ()


def _template(layers: Sequence[_Layer], blobs: Path, blobs_real: str, path: str,
              skipped: list[SkippedFile]) -> str | None:
    """The manifest's template layer, if any (an unreadable one is reported, not fatal)."""
    for layer in layers:
        if layer.media_type == MEDIA_TEMPLATE:
            try:
                return _text_layer(layer, blobs, blobs_real, "template") or None
            except _Refused as exc:
                skipped.append(SkippedFile(path, f"{exc} (listed without it)"))
    return None


def _defaults(
    layers: Sequence[_Layer], blobs: Path, blobs_real: str, path: str,
    skipped: list[SkippedFile],
) -> tuple[str | None, dict[str, ArgValue]]:
    """The system prompt and the params (as flags) a pulled model's manifest carries.

    A layer that cannot be read costs only itself: the model is listed without it, and
    the reason is reported with the skipped files.
    """
    system: str | None = None
    args: dict[str, ArgValue] = {}
    for layer in layers:
        if layer.media_type not in (MEDIA_SYSTEM, MEDIA_PARAMS):
            continue
        what = "system prompt" if layer.media_type == MEDIA_SYSTEM else "params"
        try:
            text = _text_layer(layer, blobs, blobs_real, what)
            if layer.media_type == MEDIA_SYSTEM:
                system = text or None
                continue
            params = json.loads(text)
            if not isinstance(params, dict):
                raise _Refused("params layer is not a JSON object")
        except (_Refused, ValueError) as exc:
            skipped.append(SkippedFile(path, f"{exc} (listed without it)"))
            continue
        args, ignored = params_to_args(params)
        if ignored:
            log.debug("%s: params without a llama-server flag: %s", path, ", ".join(ignored))
    return system, args


def _text_layer(layer: _Layer, blobs: Path, blobs_real: str, what: str) -> str:
    match = _DIGEST.fullmatch(layer.digest)
    if match is None:
        raise _Refused(f"{what} layer digest {layer.digest[:80]!r} is not sha256:<64 hex>")
    blob = blobs / f"sha256-{match.group(1)}"
    real = os.path.realpath(blob)
    if not inside(real, blobs_real) or real == blobs_real:
        raise _Refused(f"{what} blob {blob} leads outside the blobs folder")
    if layer.size > _MAX_TEXT_LAYER_BYTES:
        raise _Refused(f"{what} layer is {layer.size} bytes, too big to read")
    try:
        with open(real, "rb") as file:
            data = file.read(_MAX_TEXT_LAYER_BYTES + 1)
    except OSError as exc:
        raise _Refused(f"cannot read the {what} blob {blob}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Refused(f"the {what} blob {blob} is not UTF-8 text") from None


def _read_manifest(path: str) -> tuple[Mapping[str, Any], float]:
    try:
        # Checked before opening: opening a FIFO planted as a manifest would block the scan.
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise _Refused("manifest is not a regular file")
        if st.st_size > _MAX_MANIFEST_BYTES:
            raise _Refused(f"manifest is {st.st_size} bytes, too big to be one")
        with open(path, "rb") as file:
            data = file.read(_MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise _Refused(f"cannot read the manifest: {exc.strerror or exc}") from None
    try:
        manifest = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Refused(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise _Refused("manifest is not a JSON object")
    # Ollama dates a model by its manifest (when it was pulled or created).
    return manifest, st.st_mtime


def _layers(manifest: Mapping[str, Any]) -> list[_Layer]:
    raw = manifest.get("layers")
    if not isinstance(raw, list):
        raise _Refused("manifest has no layers list")
    layers: list[_Layer] = []
    for item in raw:
        if not isinstance(item, dict):
            raise _Refused("manifest has a layer that is not an object")
        media, digest, size = item.get("mediaType"), item.get("digest"), item.get("size")
        if not isinstance(media, str) or not isinstance(digest, str):
            raise _Refused("manifest has a layer without mediaType or digest")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise _Refused(f"layer {digest[:80]!r} has no valid size")
        layers.append(_Layer(media, digest, size))
    return layers


def _blob(layer: _Layer, blobs: Path, blobs_real: str, what: str) -> tuple[str, int, str]:
    """The checked blob file of a GGUF layer, its size and its sha256 (hex)."""
    match = _DIGEST.fullmatch(layer.digest)
    if match is None:
        # Never build a path from it: "sha256:../../x" is how CVE-2024-37032 escaped.
        raise _Refused(f"{what} layer digest {layer.digest[:80]!r} is not sha256:<64 hex>")
    path = str(blobs / f"sha256-{match.group(1)}")
    real = os.path.realpath(path)
    if not inside(real, blobs_real) or real == blobs_real:
        raise _Refused(f"{what} blob {path} leads outside Ollama's blobs folder (to {real})")
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise _Refused(f"{what} blob {path} is missing (an interrupted pull?)") from None
    except OSError as exc:
        raise _Refused(f"cannot read {what} blob {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _Refused(f"{what} blob {path} is not a regular file")
    if st.st_size != layer.size:
        raise _Refused(
            f"{what} blob {path} is {st.st_size} bytes but the manifest says {layer.size} "
            "(an interrupted pull? pull it again)"
        )
    try:
        peek_gguf(real)
    except NotGGUFError as exc:
        raise _Refused(f"{what} blob {path}: {exc}") from None
    except OSError as exc:
        raise _Refused(f"cannot read {what} blob {path}: {exc.strerror or exc}") from None
    return path, st.st_size, match.group(1)


def scan_ollama_roots(roots: Sequence[Path]) -> ScanResult:
    """`scan_ollama_store` over several stores, in order."""
    result = ScanResult()
    for root in roots:
        result.extend(scan_ollama_store(root))
    return result
