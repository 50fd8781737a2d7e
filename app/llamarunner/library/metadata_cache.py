"""On-disk cache of parsed GGUF metadata, so each model file is read once per change."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import types
import typing
from pathlib import Path
from typing import Any, Final

from ..core.files import atomic_write
from ..runtime.installer import cache_root
from .gguf import GGUFError
from .metadata import GGUFMetadata, read_metadata

__all__ = ["CACHE_FILE_NAME", "MetadataCache", "default_cache_file"]

log = logging.getLogger(__name__)

CACHE_FILE_NAME: Final = "gguf-metadata.json"
# Bump whenever GGUFMetadata or what the reader extracts changes: older entries are then
# dropped instead of being served with missing or stale fields.
SCHEMA: Final = 1
DEFAULT_MAX_ENTRIES: Final = 4096


def default_cache_file() -> Path:
    """``gguf-metadata.json`` in the app's cache dir (``$LLAMARUNNER_CACHE_DIR`` overrides)."""
    # cache_root() is "<cache dir>/runtimes"; sharing its base keeps one override for both.
    return cache_root().parent / CACHE_FILE_NAME


@dataclasses.dataclass
class _Entry:
    size: int
    mtime_ns: int
    meta: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    # The GGUFMetadata rebuilt from ``meta`` on the first hit, kept for later hits.
    built: GGUFMetadata | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "meta": self.meta,
            "error": self.error,
        }


class MetadataCache:
    """Maps a model file, keyed by (real path, size, mtime), to its GGUFMetadata.

    Parse failures are cached too, so a broken or hostile file is not re-read on every
    start. ``get`` and ``save`` may be called from several threads (asyncio.to_thread):
    parsing runs outside the lock, so two threads may parse the same new file once each.
    Hits return one shared GGUFMetadata per file: treat its ``model_info`` as read-only.
    Entries are kept in least-recently-used order (dicts keep insertion order, and the JSON
    file keeps the dict's), which is what ``max_entries`` evicts by.
    """

    def __init__(
        self, cache_file: Path | None = None, *, max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        self.cache_file = Path(cache_file) if cache_file is not None else default_cache_file()
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._dirty = False
        self._load()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def dirty(self) -> bool:
        """Whether there are changes that ``save`` has not written yet."""
        with self._lock:
            return self._dirty

    def get(self, path: str | os.PathLike[str]) -> GGUFMetadata:
        """Metadata for ``path``, parsing the file only when it is new or has changed.

        Raises GGUFError (cached) for a broken file and OSError when it can't be read.
        """
        real = os.path.realpath(os.fspath(path))
        st = os.stat(real)
        with self._lock:
            entry = self._entries.pop(real, None)
            if entry and entry.size == st.st_size and entry.mtime_ns == st.st_mtime_ns:
                hit = _from_entry(entry, real)
                if hit is not None:
                    self._entries[real] = entry  # now the most recently used
                    if isinstance(hit, GGUFError):
                        raise hit
                    return hit
            if entry is not None:
                self._dirty = True  # stale or unreadable: dropped, replaced below
        try:
            meta = read_metadata(real)
        except GGUFError as exc:
            error = {"reason": exc.reason, "offset": exc.offset}
            self._store(real, _Entry(st.st_size, st.st_mtime_ns, error=error))
            raise
        self._store(
            real, _Entry(meta.file_size, meta.mtime_ns, meta=dataclasses.asdict(meta), built=meta)
        )
        return meta

    def save(self) -> None:
        """Write the cache atomically if it changed, dropping entries for vanished files."""
        with self._lock:
            gone = [p for p in self._entries if not os.path.exists(p)]
            for path in gone:
                del self._entries[path]
            overflow = len(self._entries) - self.max_entries
            if overflow > 0:
                for path in list(self._entries)[:overflow]:
                    del self._entries[path]
            if not (self._dirty or gone or overflow > 0):
                return
            payload = {
                "schema": SCHEMA,
                "entries": {p: e.to_json() for p, e in self._entries.items()},
            }
            self._dirty = False
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.cache_file, json.dumps(
                payload, ensure_ascii=False, separators=(",", ":")).encode())
        except OSError:
            with self._lock:
                self._dirty = True
            raise

    def _store(self, path: str, entry: _Entry) -> None:
        with self._lock:
            self._entries.pop(path, None)
            self._entries[path] = entry
            self._dirty = True

    def _load(self) -> None:
        try:
            text = self.cache_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("ignoring unreadable metadata cache %s: %s", self.cache_file, exc)
            self._dirty = True
            return
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("schema") != SCHEMA:
                raise ValueError("unknown schema")
            raw_entries = data["entries"]
            if not isinstance(raw_entries, dict):
                raise ValueError("entries is not an object")
        except (ValueError, KeyError, RecursionError) as exc:
            # A corrupt or outdated cache only costs one re-parse of each model; the next
            # save replaces it.
            log.warning("ignoring corrupt metadata cache %s: %s", self.cache_file, exc)
            self._dirty = True
            return
        for path, raw in raw_entries.items():
            entry = _entry_from_json(raw)
            if entry is None:
                self._dirty = True
                continue
            self._entries[path] = entry


def _entry_from_json(raw: object) -> _Entry | None:
    if not isinstance(raw, dict):
        return None
    size, mtime_ns = raw.get("size"), raw.get("mtime_ns")
    meta, error = raw.get("meta"), raw.get("error")
    if not (isinstance(size, int) and isinstance(mtime_ns, int)):
        return None
    if (meta is None) == (error is None):
        return None
    if meta is not None and not isinstance(meta, dict):
        return None
    if error is not None and not (isinstance(error, dict) and isinstance(error.get("reason"), str)):
        return None
    return _Entry(size, mtime_ns, meta=meta, error=error)


def _from_entry(entry: _Entry, path: str) -> GGUFMetadata | GGUFError | None:
    """Rebuild what an entry stands for, or None when it does not hold together."""
    if entry.built is not None:
        return entry.built
    if entry.error is not None:
        # A new exception each time: re-raising one instance would grow its traceback.
        offset = entry.error.get("offset")
        return GGUFError(
            str(entry.error["reason"]),
            path=path,
            offset=offset if isinstance(offset, int) else None,
        )
    if entry.meta is None:
        return None
    entry.built = _metadata_from_json(entry.meta)
    return entry.built


def _metadata_from_json(raw: dict[str, Any]) -> GGUFMetadata | None:
    hints = _field_hints()
    if set(raw) != set(hints):
        return None
    for name, hint in hints.items():
        if not _matches(raw[name], hint):
            return None
    return GGUFMetadata(**raw)


_HINTS: dict[str, object] = {}


def _field_hints() -> dict[str, object]:
    if not _HINTS:
        _HINTS.update(typing.get_type_hints(GGUFMetadata))
    return _HINTS


def _matches(value: object, hint: object) -> bool:
    """Whether a JSON value fits a GGUFMetadata field's type (only the kinds it uses)."""
    if isinstance(hint, types.UnionType):
        return any(_matches(value, arm) for arm in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if typing.get_origin(hint) is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    return False
