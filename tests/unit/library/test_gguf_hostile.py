"""Broken and hostile GGUF files: each is rejected with a reason, quickly, in little memory."""

from __future__ import annotations

import pickle
import random
import time
import tracemalloc
from pathlib import Path

import pytest
from tests.support.gguf_fixtures import (
    T,
    array_payload,
    hostile_cases,
    kv_bytes,
    raw_gguf,
    string_bytes,
    write_all_types_gguf,
)

from llamarunner.library.gguf import GGUFError, read_gguf
from llamarunner.library.metadata import read_metadata

CASES = hostile_cases()

# What each rejection must say, so that a user (and a log reader) learns what was wrong.
EXPECTED_REASON = {
    "empty file": "truncated",
    "only magic": "truncated",
    "wrong magic": "magic",
    "zip file": "magic",
    "short text file": "magic",
    "version 1": "version 1",
    "version 99": "version 99",
    "version 0": "version 0",
    "big-endian": "big-endian",
    "key length 2^62": "string length",
    "string value length 2^62": "string length",
    "string value length 65 MiB": "exceeds",
    "string past end": "past the end",
    "kv count 2^40": "key/value count",
    "kv count over 1e6": "key/value count",
    "kv count larger than file": "cannot fit",
    "tensor count 2^40": "tensor count",
    "tensor count over 1e6": "tensor count",
    "unknown value type 200": "unknown value type 200",
    "unknown value type 13": "unknown value type 13",
    "array of unknown type": "unknown value type 77",
    "empty array of unknown type": "unknown value type 77",
    "array length 2^60 of u8": "array length",
    "array length 2^60 of strings": "array length",
    "array length 2^60 of arrays": "array length",
    "string array item length 2^62": "string length",
    "string array item length 2^64-1": "string length",
    "nested arrays depth 3": "nested",
    "nested arrays depth 3, skipped": "nested",
    "duplicate key": "duplicate key",
    "alignment not a power of two": "power of two",
    "alignment zero": "power of two",
    "alignment wrong type": "uint32",
    "tensor offset past end": "past the end",
    "tensor data past end": "past the end",
    "tensor offset misaligned": "aligned",
    "tensor without data section": "past the end",
    "tensor with 5 dims": "dimensions",
    "tensor dims overflow": "absurd shape",
    "tensor name length 2^62": "string length",
    "duplicate tensor": "duplicate tensor",
    "Q4_0 row not a multiple of 32": "block size",
}

# Bounded time and memory for every input: generous against CI noise, far below what an
# unchecked length (seconds, gigabytes) would cost.
MAX_SECONDS = 1.0
MAX_PEAK_BYTES = 4 * 2**20


def test_every_case_has_an_expected_reason() -> None:
    assert set(EXPECTED_REASON) == set(CASES)


def _rejects(path: Path, **kwargs: int) -> GGUFError:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(GGUFError) as info:
            read_gguf(path, **kwargs)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < MAX_SECONDS, f"{path.name}: {elapsed:.2f} s"
    assert peak < MAX_PEAK_BYTES, f"{path.name}: peak {peak} bytes"
    assert info.value.reason
    return info.value


@pytest.mark.parametrize("limit", [0, 64])
@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_file_is_rejected_with_a_reason(tmp_path: Path, case: str, limit: int) -> None:
    path = tmp_path / "hostile.gguf"
    path.write_bytes(CASES[case])
    error = _rejects(path, small_array_limit=limit)
    assert EXPECTED_REASON[case] in error.reason, error.reason


def test_error_names_the_file_and_survives_pickling(tmp_path: Path) -> None:
    path = tmp_path / "v99.gguf"
    path.write_bytes(CASES["version 99"])
    with pytest.raises(GGUFError) as info:
        read_gguf(path)
    error = info.value
    assert error.path == str(path) and error.offset == 4
    assert str(path) in str(error) and "version 99" in str(error)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.reason, copy.path, copy.offset) == (error.reason, error.path, error.offset)


def test_read_metadata_raises_the_same_error(tmp_path: Path) -> None:
    path = tmp_path / "v1.gguf"
    path.write_bytes(CASES["version 1"])
    with pytest.raises(GGUFError, match="version 1"):
        read_metadata(path)


def test_missing_file_is_an_os_error_not_a_gguf_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_gguf(tmp_path / "nope.gguf")


@pytest.fixture(scope="module")
def small_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = write_all_types_gguf(tmp_path_factory.mktemp("small") / "small.gguf")
    return path.read_bytes()


def _data_end(path: Path) -> int:
    """Where the last tensor's data ends: cutting the file anywhere before must fail."""
    header = read_gguf(path)
    return max(header.data_offset + t.offset + (t.n_bytes or 0) for t in header.tensors)


@pytest.mark.parametrize("limit", [0, 64])
def test_truncated_at_every_7_bytes(tmp_path: Path, small_file: bytes, limit: int) -> None:
    whole = tmp_path / "whole.gguf"
    whole.write_bytes(small_file)
    needed = _data_end(whole)
    cut = tmp_path / "cut.gguf"
    rejected = 0
    for size in range(0, len(small_file), 7):
        cut.write_bytes(small_file[:size])
        if size < needed:
            started = time.perf_counter()
            with pytest.raises(GGUFError):
                read_gguf(cut, small_array_limit=limit)
            assert time.perf_counter() - started < MAX_SECONDS
            rejected += 1
        else:  # only the padding after the last tensor is gone
            read_gguf(cut, small_array_limit=limit)
    assert rejected > 100


def test_random_corruption_never_escapes_as_another_exception(
    tmp_path: Path, small_file: bytes
) -> None:
    """Flip bytes and stamp hostile integers all over a valid file."""
    rng = random.Random(1234)
    path = tmp_path / "fuzz.gguf"
    hostile_words = [0, 1, 2**31, 2**32 - 1, 2**62, 2**63, 2**64 - 1, 9, 200, 64 * 2**20 + 1]
    header_end = 2_000  # most structure (and most interesting damage) is up front
    for _ in range(400):
        data = bytearray(small_file)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(min(header_end, len(data) - 8))
            if rng.random() < 0.5:
                data[pos] = rng.randrange(256)
            else:
                data[pos : pos + 8] = rng.choice(hostile_words).to_bytes(8, "little")
        path.write_bytes(bytes(data))
        started = time.perf_counter()
        try:
            read_gguf(path, small_array_limit=rng.choice([0, 3, 64]))
        except GGUFError as exc:
            assert exc.reason
        assert time.perf_counter() - started < MAX_SECONDS


def test_string_array_whose_last_item_is_huge(tmp_path: Path) -> None:
    """The fast skip loop must still check the one string it jumped over last."""
    items = string_bytes("a") * 99 + string_bytes("b", length=65 * 2**20)
    data = raw_gguf([kv_bytes("k", T.ARRAY, array_payload(T.STRING, 100, items))])
    data += b"\0" * (65 * 2**20 + 64)  # enough file for the length to "fit"
    path = tmp_path / "huge-last.gguf"
    path.write_bytes(data)
    error = _rejects(path, small_array_limit=0)
    assert "exceeds" in error.reason


def test_strings_just_under_the_limit_are_skipped(tmp_path: Path) -> None:
    """A big (but legal) string inside an array is fine; the window cap must not reject it."""
    big = 64 * 2**20
    items = string_bytes("a") * 3 + string_bytes(b"\0" * big) + string_bytes("z")
    data = raw_gguf(
        [
            kv_bytes("k", T.ARRAY, array_payload(T.STRING, 5, items)),
            kv_bytes("after", T.UINT32, b"\x2a\0\0\0"),
        ]
    )
    path = tmp_path / "big-ok.gguf"
    path.write_bytes(data)
    header = read_gguf(path, small_array_limit=0)
    assert header.kv["after"] == 42


@pytest.mark.parametrize("limit", [0, 1000])
def test_string_limit_holds_on_every_skip_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    """With a tiny limit, the window cap and the re-checked stretches all come into play."""
    from llamarunner.library import gguf as gguf_module

    monkeypatch.setattr(gguf_module, "MAX_STRING_LENGTH", 1000)
    ok_items = [string_bytes(bytes([65 + i % 26]) * (i % 1001)) for i in range(5000)]
    for position in (0, 1234, 2500, 4999, None):
        items = list(ok_items)
        if position is not None:
            items[position] = string_bytes(b"x" * 1001)
        data = raw_gguf(
            [
                kv_bytes("k", T.ARRAY, array_payload(T.STRING, len(items), b"".join(items))),
                kv_bytes("after", T.UINT32, b"\x2a\0\0\0"),
            ]
        )
        path = tmp_path / f"limit-{position}.gguf"
        path.write_bytes(data)
        if position is None:
            header = read_gguf(path, small_array_limit=limit)
            assert header.kv["after"] == 42
        else:
            with pytest.raises(GGUFError, match="exceeds"):
                read_gguf(path, small_array_limit=limit)


def test_materialised_metadata_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many small arrays are each fine, but together they must not build a huge object graph."""
    from llamarunner.library import gguf as gguf_module

    monkeypatch.setattr(gguf_module, "MAX_MATERIALISED_BYTES", 2**20)
    kvs = [kv_bytes(f"k{i}", T.ARRAY, array_payload(T.UINT8, 64, bytes(64))) for i in range(1000)]
    path = tmp_path / "many-arrays.gguf"
    path.write_bytes(raw_gguf(kvs))
    with pytest.raises(GGUFError, match="more than 1 MiB"):
        read_gguf(path)
    read_gguf(path, small_array_limit=0)  # summaries cost nothing
