"""The app's store of pulled models: pulls, create, copy, delete and blob uploads in one place.

The Ollama routes use it today; a download dialog, LM Studio download jobs and a
`llamarunner pull` command can drive the same object: `pull()` gives a `PullJob` with
progress events and cancel, `interrupted()` the pulls to resume after a restart.
`on_change` (the Service's rescan) runs after anything that adds or removes a model,
before the operation reports success, so the model is listed (or gone) at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .. import paths
from ..core.errors import BadRequestError, LlamaRunnerError
from ..core.files import atomic_link_or_copy, atomic_write, move_into_place, temp_path_for
from ..library.discovery import split_part
from ..library.gguf import GGUFError, read_gguf
from ..library.metadata import GGUFMetadata, metadata_from_header, read_metadata
from .create import (
    CreateBase,
    CreateRequest,
    ImportFile,
    replaced_media,
    text_layers,
)
from .download import PullEngine, PullJob, PullProgress, PullRecord
from .errors import NotEnoughSpaceError, StoreError
from .layout import (
    MEDIA_ADAPTER,
    MEDIA_CONFIG,
    MEDIA_MODEL,
    MEDIA_PARAMS,
    MEDIA_PROJECTOR,
    Layer,
    Manifest,
    StoreLayout,
    config_blob,
    digest_hex,
)
from .names import ModelName, parse_name
from .transfer import close_synced, human_bytes

__all__ = ["CreatePlan", "ModelStore", "default_store_root"]

_HASH_CHUNK: Final = 4 << 20
_MAX_PARAMS_BYTES: Final = 1024 * 1024
Changed = Callable[[], Awaitable[object]]


def default_store_root() -> Path:
    """Where pulled models live: `store/` in the app's data folder (LLAMARUNNER_DATA_DIR)."""
    return paths.data_dir() / "store"


@dataclass(frozen=True)
class CreatePlan:
    """A checked `create`: the layers to keep or bring in, ready to run."""

    request: CreateRequest
    kept: tuple[Layer, ...]  # from the base manifest, or uploaded blobs
    imports: tuple[ImportFile, ...]
    adapters: tuple[Layer, ...]
    base_params: dict[str, Any] | None


class ModelStore:
    """See the module docstring. Pulls are delegated to a `PullEngine`."""

    def __init__(self, root: Path, *, on_change: Changed | None = None,
                 **engine_options: Any) -> None:
        self.layout = StoreLayout(root)
        self._on_change = on_change
        self.pulls = PullEngine(self.layout, on_pulled=on_change, **engine_options)
        self._write_lock = asyncio.Lock()

    @property
    def root(self) -> Path:
        return self.layout.root

    async def start(self) -> None:
        await self.pulls.start()

    async def close(self) -> None:
        await self.pulls.close()

    async def _changed(self) -> None:
        if self._on_change is not None:
            await self._on_change()

    # ---- pulls ---------------------------------------------------------------------

    def pull(self, name: str, *, insecure: bool = False,
             cancel_when_unwatched: bool = True) -> PullJob:
        return self.pulls.pull(name, insecure=insecure,
                               cancel_when_unwatched=cancel_when_unwatched)

    def jobs(self) -> list[PullJob]:
        return self.pulls.jobs()

    def job(self, job_id: str) -> PullJob | None:
        return self.pulls.job(job_id)

    async def interrupted(self) -> list[PullRecord]:
        return await self.pulls.interrupted()

    # ---- names ---------------------------------------------------------------------

    async def find(self, text: str) -> ModelName | None:
        """The stored model `text` names (any case), or None (also for a bad name)."""
        try:
            name = parse_name(text)
        except LlamaRunnerError:
            return None
        return await asyncio.to_thread(self.layout.find, name)

    def name_of_manifest(self, path: str) -> ModelName | None:
        """The name of a manifest file of this store (as the library reports it)."""
        try:
            parts = Path(path).resolve().relative_to(self.layout.manifests_dir.resolve()).parts
        except (ValueError, OSError):
            return None
        if len(parts) != 4:
            return None
        try:
            name = parse_name(f"{parts[0]}/{parts[1]}/{parts[2]}:{parts[3]}")
        except LlamaRunnerError:
            return None
        return name if name.parts == parts else None

    # ---- copy and delete -----------------------------------------------------------

    async def copy(self, source: ModelName, destination: str) -> ModelName:
        """Write `source`'s manifest under `destination` (blobs are shared, not copied)."""
        target = parse_name(destination)
        async with self._write_lock:
            def copy() -> None:
                data = self.layout.read_manifest_bytes(source)
                stored = self.layout.find(target)
                if stored is not None and stored != target:
                    self.layout.manifest_path(stored).unlink()
                self.layout.write_manifest(target, data)

            await asyncio.to_thread(copy)
        await self._changed()
        return target

    async def delete(self, name: ModelName,
                     release: Callable[[set[str]], Awaitable[None]] | None = None) -> set[str]:
        """Remove `name` and the blobs no other manifest uses; returns their digests.

        `release(paths)` runs first with the blob files that will go, so that the
        runners serving them stop before their files do.
        """
        async with self._write_lock:
            keep = self.pulls.in_use()
            freed = await asyncio.to_thread(self.layout.blobs_freed_by_delete, name, keep)
            if release is not None and freed:
                await release({str(self.layout.blob_path(d)) for d in freed})
            removed = await asyncio.to_thread(self.layout.delete_model, name, keep)
        await self._changed()
        return removed

    # ---- blobs ---------------------------------------------------------------------

    async def has_blob(self, digest: str) -> bool:
        """Whether the blob is stored; raises StoreError (400) for a malformed digest."""
        digest_hex(digest)
        return await asyncio.to_thread(self.layout.has_blob, digest)

    async def upload_blob(self, digest: str, chunks: AsyncIterator[bytes],
                          size: int | None = None) -> bool:
        """Store a blob from `chunks` if its sha256 is `digest`; False if it was there.

        A body whose sha256 differs is thrown away: StoreError (400) "digest mismatch".
        """
        digest_hex(digest)
        blob = self.layout.blob_path(digest)
        if await asyncio.to_thread(blob.is_file):
            return False
        await asyncio.to_thread(self.layout.ensure_folders)
        if size is not None:
            free = await asyncio.to_thread(self.layout.free_bytes)
            if size > free:
                raise NotEnoughSpaceError(
                    f"not enough disk space for a blob of {human_bytes(size)} ({size} bytes): "
                    f"{human_bytes(free)} ({free} bytes) are free in {self.root}", needed=size,
                    free=free)
        temp = temp_path_for(blob)
        hasher = hashlib.sha256()
        try:
            file = await asyncio.to_thread(open, temp, "wb")
            try:
                async for chunk in chunks:
                    await asyncio.to_thread(_write, file, hasher, chunk)
            finally:
                await asyncio.to_thread(close_synced, file)
            got = f"sha256:{hasher.hexdigest()}"
            if got != digest:
                raise StoreError(f"digest mismatch, expected {digest!r}, got {got!r}", status=400)
            if await asyncio.to_thread(blob.is_file):
                return False
            await asyncio.to_thread(move_into_place, temp, blob)
            return True
        finally:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(temp.unlink, True)

    # ---- create --------------------------------------------------------------------

    async def plan_create(self, request: CreateRequest, base: CreateBase | None
                          ) -> CreatePlan:
        """Check everything a create needs (400s before anything is written)."""
        return await asyncio.to_thread(self._plan_create, request, base)

    def _plan_create(self, request: CreateRequest, base: CreateBase | None) -> CreatePlan:
        kept: list[Layer] = []
        imports: tuple[ImportFile, ...] = ()
        base_params: dict[str, Any] | None = None
        if request.source is not None:
            if base is None:
                raise BadRequestError(f"model '{request.source}' not found")
            replaced = replaced_media(request)
            for media_type, digest, size in base.layers:
                if media_type == MEDIA_CONFIG:
                    continue
                if media_type == MEDIA_PARAMS:
                    base_params = self._read_params(digest)
                if media_type in replaced:
                    continue
                if not self.layout.has_blob(digest):
                    raise BadRequestError(f"model '{request.source}' is incomplete: its layer "
                                          f"{digest} is missing; pull it again")
                kept.append(Layer(media_type, digest, size))
            imports = base.files
            for item in imports:
                if not os.path.isfile(item.path):
                    raise BadRequestError(f"the file of model '{request.source}' cannot be "
                                          "read (does it still exist?)")
        else:
            kept = self._uploaded_models(request)
        adapters = [self._uploaded(file_name, digest, MEDIA_ADAPTER)
                    for file_name, digest in sorted(request.adapters.items())]
        return CreatePlan(request, tuple(kept), imports, tuple(adapters), base_params)

    def _read_params(self, digest: str) -> dict[str, Any] | None:
        try:
            path = self.layout.blob_path(digest)
            if path.stat().st_size > _MAX_PARAMS_BYTES:
                return None
            data = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _uploaded(self, file_name: str, digest: str, media_type: str) -> Layer:
        path = self.layout.blob_path(digest)
        try:
            size = path.stat().st_size
        except OSError:
            raise BadRequestError(f"blob {digest} ({file_name}) was not found: upload it first "
                                  f"with POST /api/blobs/{digest}") from None
        return Layer(media_type, digest, size)

    def _uploaded_models(self, request: CreateRequest) -> list[Layer]:
        layers: list[Layer] = []
        for file_name, digest in sorted(request.files.items()):
            layer = self._uploaded(file_name, digest, MEDIA_MODEL)
            meta, split_count = _metadata(self.layout.blob_path(digest), file_name)
            if split_part(file_name.rsplit("/", 1)[-1]) is not None or split_count > 1:
                raise BadRequestError(f"{file_name!r} is one part of a split GGUF, which "
                                      "cannot be stored as one blob; merge the parts first "
                                      "(llama-gguf-split --merge)")
            media = MEDIA_PROJECTOR if meta.is_projector else MEDIA_MODEL
            layers.append(Layer(media, layer.digest, layer.size))
        models = [layer for layer in layers if layer.media_type == MEDIA_MODEL]
        if len(models) != 1:
            raise BadRequestError("files must hold exactly one model GGUF (and optionally its "
                                  f"projector); found {len(models)}")
        return sorted(layers, key=lambda layer: layer.media_type != MEDIA_MODEL)

    async def create(self, plan: CreatePlan) -> AsyncGenerator[PullProgress, None]:
        """Run a checked create, as Ollama's status lines; the last one is "success"."""
        request = plan.request
        yield PullProgress("reading model metadata" if request.source is not None
                           else "parsing GGUF")
        layers: list[Layer] = []
        for layer in plan.kept:
            yield PullProgress(f"using existing layer {layer.digest}")
            layers.append(layer)
        for item in plan.imports:
            layer, created = await asyncio.to_thread(self._import, item)
            yield PullProgress(f"{'creating new' if created else 'using existing'} layer "
                               f"{layer.digest}")
            layers.append(layer)
        for layer in plan.adapters:
            yield PullProgress(f"using existing layer {layer.digest}")
            layers.append(layer)
        for media_type, data in text_layers(request, plan.base_params):
            layer, created = await asyncio.to_thread(self._put, data, media_type)
            yield PullProgress(f"{'creating new' if created else 'using existing'} layer "
                               f"{layer.digest}")
            layers.append(layer)
        model = next(layer for layer in layers if layer.media_type == MEDIA_MODEL)
        config, _ = await asyncio.to_thread(self._config_layer, model, layers)
        yield PullProgress("writing manifest")
        manifest = Manifest(config, tuple(layers))
        async with self._write_lock:
            await asyncio.to_thread(self._write_created, request.name, manifest)
        await self._changed()
        yield PullProgress("success")

    def _import(self, item: ImportFile) -> tuple[Layer, bool]:
        source = Path(item.path)
        size = source.stat().st_size
        digest = item.digest or _sha256_file(source)
        blob = self.layout.blob_path(digest)
        if blob.is_file():
            return Layer(item.media_type, digest, size), False
        self.layout.ensure_folders()
        # A hard link costs no space; across disks the file is copied.
        if source.stat().st_dev != self.layout.blobs_dir.stat().st_dev:
            free = self.layout.free_bytes()
            if size > free:
                raise NotEnoughSpaceError(
                    f"not enough disk space to copy {source.name} ({human_bytes(size)}) into "
                    f"the store: {human_bytes(free)} ({free} bytes) are free in {self.root}",
                    needed=size, free=free)
        atomic_link_or_copy(source, blob)
        return Layer(item.media_type, digest, size), True

    def _put(self, data: bytes, media_type: str) -> tuple[Layer, bool]:
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        blob = self.layout.blob_path(digest)
        if blob.is_file():
            return Layer(media_type, digest, len(data)), False
        self.layout.ensure_folders()
        atomic_write(blob, data, keep_mode=False)
        return Layer(media_type, digest, len(data)), True

    def _config_layer(self, model: Layer, layers: Iterable[Layer]) -> tuple[Layer, bool]:
        meta: GGUFMetadata | None = None
        with contextlib.suppress(GGUFError, OSError):
            meta = read_metadata(self.layout.blob_path(model.digest))
        family = (meta.architecture or "") if meta else ""
        extra = {"model_family": family, "model_families": [family] if family else None}
        data = config_blob(file_type=(meta.quantization or "") if meta else "",
                           diff_ids=[layer.digest for layer in layers], extra=extra)
        return self._put(data, MEDIA_CONFIG)

    def _write_created(self, name: ModelName, manifest: Manifest) -> None:
        old: set[str] = set()
        stored = self.layout.find(name)
        if stored is not None:
            with contextlib.suppress(StoreError):
                old = self.layout.read_manifest(stored).digests()
            if stored != name:
                self.layout.manifest_path(stored).unlink()
        self.layout.write_manifest(name, manifest.to_bytes())
        self.layout.remove_unreferenced(old - manifest.digests(), self.pulls.in_use())


def _write(file: Any, hasher: Any, chunk: bytes) -> None:
    file.write(chunk)
    hasher.update(chunk)


def _sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_HASH_CHUNK):
            hasher.update(chunk)
    return f"sha256:{hasher.hexdigest()}"


def _metadata(path: Path, file_name: str) -> tuple[GGUFMetadata, int]:
    """The file's metadata and its split count (1 for a whole file)."""
    try:
        header = read_gguf(path)
        meta = metadata_from_header(header, path=str(path), mtime_ns=path.stat().st_mtime_ns)
        count = header.kv.get("split.count")
        return meta, count if isinstance(count, int) and not isinstance(count, bool) else 1
    except (GGUFError, OSError, ValueError):
        raise BadRequestError(f"only GGUF files are supported: {file_name!r} is not a GGUF "
                              "file (convert safetensors with llama.cpp's convert_hf_to_gguf.py "
                              "first)") from None
