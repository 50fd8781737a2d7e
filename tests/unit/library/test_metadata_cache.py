"""The on-disk GGUF metadata cache: hits, invalidation, cached failures, corrupt files."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.support.gguf_fixtures import hostile_cases
from tests.support.tiny_gguf import write_tiny_gguf

from llamarunner.library import metadata_cache
from llamarunner.library.gguf import GGUFError
from llamarunner.library.metadata import GGUFMetadata, read_metadata
from llamarunner.library.metadata_cache import MetadataCache, default_cache_file

ParseCounter = Callable[[], int]


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> ParseCounter:
    """Count real parses by wrapping the parser the cache calls."""
    calls: list[str] = []

    def counting(path: str | os.PathLike[str]) -> GGUFMetadata:
        calls.append(os.fspath(path))
        return read_metadata(path)

    monkeypatch.setattr(metadata_cache, "read_metadata", counting)
    return lambda: len(calls)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    (tmp_path / "models").mkdir()
    return write_tiny_gguf(tmp_path / "models" / "tiny.gguf")


def _bump_mtime(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_second_get_does_not_parse(tmp_path: Path, model: Path, parses: ParseCounter) -> None:
    cache = MetadataCache(tmp_path / "cache.json")
    first = cache.get(model)
    second = cache.get(model)
    assert first == second == read_metadata(model)
    assert parses() == 1


def test_cache_survives_a_restart(tmp_path: Path, model: Path, parses: ParseCounter) -> None:
    cache_file = tmp_path / "cache" / "gguf-metadata.json"
    first = MetadataCache(cache_file)
    expected = first.get(model)
    first.save()
    assert cache_file.exists()
    again = MetadataCache(cache_file).get(model)
    assert again == expected
    assert parses() == 1


def test_symlinks_share_one_entry(tmp_path: Path, model: Path, parses: ParseCounter) -> None:
    link = tmp_path / "link.gguf"
    link.symlink_to(model)
    cache = MetadataCache(tmp_path / "cache.json")
    assert cache.get(link) == cache.get(model)
    assert parses() == 1 and len(cache) == 1


def test_changed_mtime_or_size_reparses(tmp_path: Path, model: Path, parses: ParseCounter) -> None:
    cache = MetadataCache(tmp_path / "cache.json")
    cache.get(model)
    _bump_mtime(model)
    cache.get(model)
    assert parses() == 2
    write_tiny_gguf(model, name="renamed", context_length=1024)  # new size too
    assert cache.get(model).context_length == 1024
    assert parses() == 3


def test_failure_is_cached_with_its_reason(tmp_path: Path, parses: ParseCounter) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(hostile_cases()["version 1"])
    cache_file = tmp_path / "cache.json"
    cache = MetadataCache(cache_file)
    with pytest.raises(GGUFError, match="version 1") as first:
        cache.get(bad)
    with pytest.raises(GGUFError) as second:
        cache.get(bad)
    assert second.value.reason == first.value.reason
    assert second.value.path == str(bad.resolve())
    cache.save()
    with pytest.raises(GGUFError) as after_restart:
        MetadataCache(cache_file).get(bad)
    assert after_restart.value.reason == first.value.reason
    assert after_restart.value.offset == first.value.offset
    assert parses() == 1


def test_fixed_file_is_parsed_again(tmp_path: Path, parses: ParseCounter) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"not a model")
    cache = MetadataCache(tmp_path / "cache.json")
    with pytest.raises(GGUFError):
        cache.get(path)
    write_tiny_gguf(path)
    assert cache.get(path).architecture == "llama"
    assert parses() == 2


def test_missing_file_raises_and_is_not_cached(tmp_path: Path) -> None:
    cache = MetadataCache(tmp_path / "cache.json")
    with pytest.raises(FileNotFoundError):
        cache.get(tmp_path / "nope.gguf")
    assert len(cache) == 0 and not cache.dirty


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe\x00garbage",
        b"[]",
        b'{"schema": 999, "entries": {}}',
        b'{"schema": 1, "entries": []}',
        b'{"schema": 1}',
    ],
    ids=["truncated json", "binary", "list", "future schema", "bad entries", "no entries"],
)
def test_corrupt_cache_file_is_ignored_and_rewritten(
    tmp_path: Path, model: Path, parses: ParseCounter, content: bytes
) -> None:
    cache_file = tmp_path / "cache.json"
    cache_file.write_bytes(content)
    cache = MetadataCache(cache_file)
    assert cache.get(model).architecture == "llama"
    cache.save()
    data = json.loads(cache_file.read_text(encoding="utf-8"))
    assert data["schema"] == metadata_cache.SCHEMA
    assert list(data["entries"]) == [str(model.resolve())]
    assert parses() == 1


def test_corrupt_entries_are_dropped_one_by_one(
    tmp_path: Path, model: Path, parses: ParseCounter
) -> None:
    cache_file = tmp_path / "cache.json"
    cache = MetadataCache(cache_file)
    cache.get(model)
    cache.save()
    data = json.loads(cache_file.read_text(encoding="utf-8"))
    real = str(model.resolve())
    good = data["entries"][real]
    tampered = json.loads(json.dumps(good))
    tampered["meta"]["context_length"] = "lots"  # wrong type
    missing_field = json.loads(json.dumps(good))
    del missing_field["meta"]["vocab_size"]
    data["entries"] = {
        real: tampered,
        "/gone/one.gguf": {"size": "x"},
        "/gone/two.gguf": missing_field,
        "/gone/three.gguf": 42,
    }
    cache_file.write_text(json.dumps(data), encoding="utf-8")

    reloaded = MetadataCache(cache_file)
    assert reloaded.get(model).context_length == 256  # tampered entry re-parsed
    assert parses() == 2


def test_save_drops_vanished_files_and_bounds_size(tmp_path: Path, parses: ParseCounter) -> None:
    paths = [write_tiny_gguf(tmp_path / f"m{i}.gguf", seed=i) for i in range(5)]
    cache_file = tmp_path / "cache.json"
    cache = MetadataCache(cache_file, max_entries=3)
    for path in paths:
        cache.get(path)
    cache.get(paths[0])  # a hit makes m0 the most recently used
    paths[4].unlink()
    cache.save()
    kept = json.loads(cache_file.read_text(encoding="utf-8"))["entries"]
    # m4 vanished; of the other four, the least recently used one (m1) goes.
    assert list(kept) == [str(p.resolve()) for p in (paths[2], paths[3], paths[0])]
    assert parses() == 5


def test_save_is_atomic_and_skips_when_clean(tmp_path: Path, model: Path) -> None:
    cache_file = tmp_path / "cache.json"
    cache = MetadataCache(cache_file)
    cache.save()
    assert not cache_file.exists()  # nothing to write yet
    cache.get(model)
    assert cache.dirty
    cache.save()
    assert not cache.dirty
    mtime = cache_file.stat().st_mtime_ns
    cache.get(model)  # a hit changes nothing worth writing
    cache.save()
    assert cache_file.stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_failed_save_leaves_the_old_file_and_stays_dirty(
    tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_file = tmp_path / "cache.json"
    cache_file.write_text('{"schema": 1, "entries": {}}', encoding="utf-8")
    cache = MetadataCache(cache_file)
    cache.get(model)

    def broken_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        cache.save()
    assert cache_file.read_text(encoding="utf-8") == '{"schema": 1, "entries": {}}'
    assert cache.dirty
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_concurrent_gets_from_threads(tmp_path: Path, parses: ParseCounter) -> None:
    paths = [write_tiny_gguf(tmp_path / f"m{i}.gguf", seed=i) for i in range(4)]
    cache = MetadataCache(tmp_path / "cache.json")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                for path in paths:
                    assert cache.get(path).architecture == "llama"
                cache.save()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(cache) == 4
    assert parses() <= 4 * len(threads)  # at worst each thread parses each new file once


def test_default_cache_file_follows_the_cache_dir_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMARUNNER_CACHE_DIR", str(tmp_path / "cache"))
    assert default_cache_file() == tmp_path / "cache" / "gguf-metadata.json"
    assert MetadataCache().cache_file == default_cache_file()
    monkeypatch.delenv("LLAMARUNNER_CACHE_DIR")
    assert default_cache_file().name == "gguf-metadata.json"
    assert "llamarunner" in str(default_cache_file())
