"""The store's files in Ollama's layout: manifests, blobs, partial downloads, ref-counted deletes.

``<root>/manifests/<host>/<namespace>/<model>/<tag>`` holds a manifest (JSON, as Ollama's
server/manifest.go writes it) and ``<root>/blobs/sha256-<hex>`` each layer's bytes, so
Ollama could read the same folder. A download in progress is ``sha256-<hex>-partial`` next
to its blob, as Ollama names its own. Blocking I/O throughout: call it from a thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..core.errors import LlamaRunnerError
from ..core.files import atomic_write
from ..library.ollama_store import (
    MEDIA_ADAPTER,
    MEDIA_LICENSE,
    MEDIA_MESSAGES,
    MEDIA_MODEL,
    MEDIA_PARAMS,
    MEDIA_PROJECTOR,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
    MEDIA_TENSOR,
)
from .errors import StoreError
from .names import ModelName, parse_name

__all__ = [
    "MEDIA_ADAPTER",
    "MEDIA_CONFIG",
    "MEDIA_LICENSE",
    "MEDIA_MANIFEST",
    "MEDIA_MESSAGES",
    "MEDIA_MODEL",
    "MEDIA_PARAMS",
    "MEDIA_PROJECTOR",
    "MEDIA_SYSTEM",
    "MEDIA_TEMPLATE",
    "MEDIA_TENSOR",
    "STALE_AFTER",
    "Layer",
    "Manifest",
    "ManifestError",
    "StoreLayout",
    "config_blob",
    "digest_hex",
    "is_digest",
]

MEDIA_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_CONFIG: Final = "application/vnd.docker.container.image.v1+json"

# A digest names a file, so it must be exactly this (CVE-2024-37032: "sha256:../x").
_DIGEST: Final = re.compile(r"sha256:([0-9a-f]{64})")
_PARTIAL_SUFFIX: Final = "-partial"
# Partial downloads and temp files untouched this long are from a pull nobody resumed.
STALE_AFTER: Final = 24 * 3600.0
# Manifests are a few KB; tensor-layer ones list many layers. Anything bigger is not one.
_MAX_MANIFEST_BYTES: Final = 8 * 1024 * 1024
_log = logging.getLogger(__name__)


def is_digest(value: object) -> bool:
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def digest_hex(digest: str) -> str:
    """The 64 hex digits of `sha256:<hex>`; raises StoreError (400) for anything else."""
    match = _DIGEST.fullmatch(digest)
    if match is None:
        shown = digest if len(digest) <= 80 else digest[:77] + "..."
        raise StoreError(f"invalid digest {shown!r}: expected sha256:<64 lowercase hex digits>",
                         status=400)
    return match.group(1)


class ManifestError(StoreError):
    """A manifest that cannot be used; the message says why."""


@dataclass(frozen=True)
class Layer:
    media_type: str
    digest: str
    size: int

    @classmethod
    def from_json(cls, item: object) -> Layer:
        if not isinstance(item, dict):
            raise ManifestError("the manifest has a layer that is not an object")
        media, digest, size = item.get("mediaType"), item.get("digest"), item.get("size")
        if not isinstance(media, str) or not is_digest(digest):
            raise ManifestError("the manifest has a layer without a media type or a valid "
                                "sha256 digest")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ManifestError(f"layer {digest} has no valid size")
        assert isinstance(digest, str)
        return cls(media, digest, size)

    def to_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Manifest:
    """A v2 manifest: the config blob and the layers, in order."""

    config: Layer | None
    layers: tuple[Layer, ...]

    @classmethod
    def parse(cls, data: bytes) -> Manifest:
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"the manifest is not valid JSON: {exc}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("layers"), list):
            raise ManifestError("the manifest has no layers list")
        config = Layer.from_json(raw["config"]) if raw.get("config") else None
        return cls(config, tuple(Layer.from_json(item) for item in raw["layers"]))

    def to_bytes(self) -> bytes:
        """Compact JSON with a newline and keys in Ollama's order, as Go's encoder writes."""
        body: dict[str, Any] = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST}
        if self.config is not None:
            body["config"] = self.config.to_json()
        body["layers"] = [layer.to_json() for layer in self.layers]
        return json.dumps(body, separators=(",", ":")).encode() + b"\n"

    def digests(self) -> set[str]:
        found = {layer.digest for layer in self.layers}
        if self.config is not None:
            found.add(self.config.digest)
        return found

    def layers_of(self, media_type: str) -> list[Layer]:
        return [layer for layer in self.layers if layer.media_type == media_type]


class StoreLayout:
    """Paths and file operations of one store folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.manifests_dir = self.root / "manifests"
        self.blobs_dir = self.root / "blobs"

    # ---- paths ---------------------------------------------------------------------

    def manifest_path(self, name: ModelName) -> Path:
        return self.manifests_dir.joinpath(*name.parts)

    def blob_path(self, digest: str) -> Path:
        return self.blobs_dir / f"sha256-{digest_hex(digest)}"

    def partial_path(self, key: str) -> Path:
        """Where a download in progress is kept: `key` is the blob's hex digest (or, for a
        file whose digest is not known in advance, another stable hex key)."""
        if not re.fullmatch(r"[0-9a-f]{16,64}", key):
            raise StoreError(f"bad partial download key {key!r}")
        return self.blobs_dir / f"sha256-{key}{_PARTIAL_SUFFIX}"

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def ensure_folders(self) -> None:
        self.manifests_dir.mkdir(parents=True, exist_ok=True)
        self.blobs_dir.mkdir(parents=True, exist_ok=True)

    # ---- manifests -----------------------------------------------------------------

    def names(self) -> Iterator[ModelName]:
        """Every valid manifest name in the store, in path order (invalid ones are skipped)."""
        base = self.manifests_dir
        if not base.is_dir():
            return
        for path in sorted(base.glob("*/*/*/*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            host, namespace, model, tag = path.relative_to(base).parts
            try:
                name = parse_name(f"{host}/{namespace}/{model}:{tag}")
            except LlamaRunnerError:
                continue
            if name.parts == (host, namespace, model, tag):
                yield name

    def find(self, name: ModelName) -> ModelName | None:
        """The stored name `name` means (Ollama matches names caselessly), or None."""
        if self.manifest_path(name).is_file():
            return name
        return next((stored for stored in self.names() if stored.same(name)), None)

    def read_manifest_bytes(self, name: ModelName) -> bytes:
        path = self.manifest_path(name)
        try:
            size = path.stat().st_size
            if size > _MAX_MANIFEST_BYTES:
                raise ManifestError(f"the manifest of {name.display} is {size} bytes, too "
                                    "big to be one")
            return path.read_bytes()
        except FileNotFoundError:
            raise StoreError(f"model '{name.display}' not found", status=404) from None
        except OSError as exc:
            raise StoreError(f"cannot read the manifest of {name.display}: "
                             f"{exc.strerror or exc}") from None

    def read_manifest(self, name: ModelName) -> Manifest:
        return Manifest.parse(self.read_manifest_bytes(name))

    def write_manifest(self, name: ModelName, data: bytes) -> None:
        path = self.manifest_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data, keep_mode=False)

    def referenced(self, *, skip: ModelName | None = None) -> set[str]:
        """Every digest a manifest in the store refers to (`skip`'s manifest left out).

        A manifest that cannot be read keeps nothing alive, as in Ollama: a broken file
        must not pin its blobs forever.
        """
        found: set[str] = set()
        for name in self.names():
            if skip is not None and name == skip:
                continue
            try:
                found |= self.read_manifest(name).digests()
            except StoreError as exc:
                _log.warning("ignoring an unreadable manifest in the store: %s", exc)
        return found

    def blobs_freed_by_delete(self, name: ModelName, keep: Iterable[str] = ()) -> set[str]:
        """The digests deleting `name` would remove: its own, minus those another manifest
        (or `keep`: downloads in progress) still needs."""
        own = self.read_manifest(name).digests()
        return own - self.referenced(skip=name) - set(keep)

    def delete_model(self, name: ModelName, keep: Iterable[str] = ()) -> set[str]:
        """Remove `name`'s manifest and every blob no other manifest uses; returns those."""
        freed = self.blobs_freed_by_delete(name, keep)
        path = self.manifest_path(name)
        path.unlink()
        self._prune_empty_folders(path.parent)
        for digest in sorted(freed):
            with contextlib.suppress(FileNotFoundError):
                self.blob_path(digest).unlink()
        return freed

    def remove_unreferenced(self, digests: Iterable[str], keep: Iterable[str] = ()) -> set[str]:
        """Remove those of `digests` no manifest (nor `keep`) refers to; returns them."""
        candidates = set(digests) - set(keep)
        if not candidates:
            return set()
        unused = candidates - self.referenced()
        for digest in sorted(unused):
            with contextlib.suppress(FileNotFoundError):
                self.blob_path(digest).unlink()
        return unused

    def _prune_empty_folders(self, folder: Path) -> None:
        # Up to, not including, manifests/: an empty model folder would list as nothing.
        while folder != self.manifests_dir and self.manifests_dir in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    # ---- space and leftovers -------------------------------------------------------

    def free_bytes(self) -> int:
        """Free space on the disk that holds (or will hold) the store."""
        folder = self.root
        while not folder.exists() and folder.parent != folder:
            folder = folder.parent
        return shutil.disk_usage(folder).free

    def partial_size(self, key: str) -> int:
        try:
            return self.partial_path(key).stat().st_size
        except OSError:
            return 0

    def cleanup_stale(self, max_age: float = STALE_AFTER, now: float | None = None
                      ) -> list[Path]:
        """Remove partial downloads and temp files untouched for `max_age` seconds.

        A pull resumes from its partial file, so these are kept for a day; after that they
        are leftovers of a pull nobody finished, and only take space.
        """
        now = time.time() if now is None else now
        removed: list[Path] = []
        for folder in (self.blobs_dir, self.manifests_dir):
            if not folder.is_dir():
                continue
            for path in _leftovers(folder):
                try:
                    if now - path.stat().st_mtime < max_age:
                        continue
                    path.unlink()
                except OSError:
                    continue
                removed.append(path)
        return removed


def _leftovers(folder: Path) -> Iterator[Path]:
    for dirpath, _, filenames in os.walk(folder):
        for filename in filenames:
            # Ollama's and our partial downloads, and core.files' temp files (".x.tmp").
            if filename.endswith(_PARTIAL_SUFFIX) or (
                    filename.startswith(".") and filename.endswith(".tmp")):
                yield Path(dirpath) / filename


def config_blob(model_format: str = "gguf", file_type: str = "",
                diff_ids: Iterable[str] = (), extra: Mapping[str, Any] | None = None) -> bytes:
    """The small config blob every manifest points at (Ollama's ConfigV2 fields)."""
    body: dict[str, Any] = {
        "model_format": model_format,
        "model_family": "",
        "model_families": None,
        "model_type": "",
        "file_type": file_type,
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
    }
    body.update(extra or {})
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"
