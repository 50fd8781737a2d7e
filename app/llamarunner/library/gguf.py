"""Fast, bounded GGUF header reader: the key/values and tensor infos, never the tensor data."""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import BinaryIO, Final

__all__ = [
    "GGML_TYPES",
    "GGML_TYPE_NAMES",
    "ArraySummary",
    "GGUFError",
    "GGUFHeader",
    "GGUFValueType",
    "TensorInfo",
    "read_gguf",
]

GGUF_MAGIC: Final = b"GGUF"
SUPPORTED_VERSIONS: Final = (2, 3)
DEFAULT_ALIGNMENT: Final = 32

# Limits far above any real model that keep what a hostile header can cost bounded, in
# time and memory. The counts are our own (the largest models have a few thousand
# tensors); the rest follow llama.cpp's gguf.cpp checks (GGML_MAX_DIMS, alignment).
MAX_TENSOR_COUNT: Final = 1_000_000
MAX_KV_COUNT: Final = 1_000_000
MAX_STRING_LENGTH: Final = 64 * 1024 * 1024
MAX_ARRAY_DEPTH: Final = 2
MAX_DIMS: Final = 4  # GGML_MAX_DIMS
# Everything materialised (strings, small arrays) is charged against this budget, at least
# _ITEM_COST per value, so a file of a million tiny arrays cannot build a huge object graph.
MAX_MATERIALISED_BYTES: Final = 64 * 1024 * 1024
_ITEM_COST: Final = 64

# One read-ahead buffer: a 262k-token vocabulary (~4 MB of strings) takes a handful of
# reads, and holding it costs nothing next to the model itself.
_CHUNK: Final = 1 << 20


class GGUFValueType(IntEnum):
    """Metadata value type ids, as in ggml's gguf.h."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


_SCALARS: Final[dict[int, struct.Struct]] = {
    GGUFValueType.UINT8: struct.Struct("<B"),
    GGUFValueType.INT8: struct.Struct("<b"),
    GGUFValueType.UINT16: struct.Struct("<H"),
    GGUFValueType.INT16: struct.Struct("<h"),
    GGUFValueType.UINT32: struct.Struct("<I"),
    GGUFValueType.INT32: struct.Struct("<i"),
    GGUFValueType.FLOAT32: struct.Struct("<f"),
    GGUFValueType.BOOL: struct.Struct("<?"),
    GGUFValueType.UINT64: struct.Struct("<Q"),
    GGUFValueType.INT64: struct.Struct("<q"),
    GGUFValueType.FLOAT64: struct.Struct("<d"),
}
_SCALAR_CODES: Final[dict[int, str]] = {t: s.format[1:] for t, s in _SCALARS.items()}
# Smallest encoding of one array item: used to reject lengths the rest of the file cannot hold.
_MIN_ITEM_SIZE: Final[dict[int, int]] = {
    **{t: s.size for t, s in _SCALARS.items()},
    GGUFValueType.STRING: 8,
    GGUFValueType.ARRAY: 12,
}
_U32: Final = struct.Struct("<I")
_U64: Final = struct.Struct("<Q")
_HEADER: Final = struct.Struct("<4sIQQ")

# ggml_type id -> (name, block size, bytes per block), from ggml.h / gguf-py GGML_QUANT_SIZES.
# Ids missing here are newer than this table: they are accepted, only their size is unchecked.
GGML_TYPES: Final[dict[int, tuple[str, int, int]]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}
GGML_TYPE_NAMES: Final[dict[int, str]] = {t: name for t, (name, _, _) in GGML_TYPES.items()}

_INT64_MAX: Final = (1 << 63) - 1


class GGUFError(Exception):
    """The file is not a usable GGUF model; ``reason`` says what is wrong with it."""

    def __init__(self, reason: str, *, path: str | None = None, offset: int | None = None) -> None:
        self.reason = reason
        self.path = path
        self.offset = offset
        where = f" (at byte {offset})" if offset is not None else ""
        prefix = f"{path}: " if path else ""
        super().__init__(
            f"{prefix}not a usable GGUF model: {reason}{where}; "
            "the file is damaged or not a model, download or convert it again"
        )

    def __reduce__(self) -> tuple[object, ...]:
        # Keep reason/path/offset across pickling (multiprocessing, some executors).
        return (_rebuild_error, (self.reason, self.path, self.offset))


def _rebuild_error(reason: str, path: str | None, offset: int | None) -> GGUFError:
    return GGUFError(reason, path=path, offset=offset)


@dataclass(frozen=True)
class ArraySummary:
    """A metadata array too long to materialise: its item type and length only."""

    item_type: int
    length: int


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's header entry.

    ``shape`` is in ggml order (``ne[0]`` first, the reverse of numpy's), the same as
    gguf-py's ``ReaderTensor.shape``. ``offset`` is as stored in the file: relative to the
    start of the tensor data section (``GGUFHeader.data_offset``).
    """

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def n_bytes(self) -> int | None:
        """Size of the tensor data, or None for a ggml type newer than this reader."""
        known = GGML_TYPES.get(self.ggml_type)
        if known is None:
            return None
        _, block, type_size = known
        return self.n_elements // block * type_size


@dataclass(frozen=True)
class GGUFHeader:
    """Everything in a GGUF file before the tensor data."""

    version: int
    tensor_count: int
    kv: dict[str, object]
    tensors: list[TensorInfo]
    file_size: int
    alignment: int = DEFAULT_ALIGNMENT
    data_offset: int = 0
    # The GGUFValueType of each key (ARRAY for arrays): Python values alone cannot tell a
    # float32 from a float64 or a uint8 from an int64.
    kv_types: dict[str, int] = field(default_factory=dict)


def read_gguf(path: str | os.PathLike[str], *, small_array_limit: int = 64) -> GGUFHeader:
    """Read the header of the GGUF file at ``path``.

    Arrays of at most ``small_array_limit`` items become lists; longer ones become an
    ``ArraySummary`` and are skipped without being materialised. Raises ``GGUFError`` for
    any malformed, truncated or hostile file, and ``OSError`` when the file can't be read.
    """
    name = os.fspath(path)
    with open(name, "rb", buffering=0) as raw:
        size = os.fstat(raw.fileno()).st_size
        reader = _Reader(raw, size, small_array_limit)
        try:
            return reader.header()
        except GGUFError as exc:
            raise GGUFError(exc.reason, path=name, offset=exc.offset) from None
        except (struct.error, OverflowError) as exc:
            # Defence in depth: the checks in _Reader should make these impossible.
            raise GGUFError(f"unreadable header ({type(exc).__name__})", path=name) from None


class _Reader:
    """Parses the header through one read-ahead buffer over an unbuffered file.

    Invariant: the file position is always ``_base + len(_buf)``, so refills never seek.
    """

    def __init__(self, file: BinaryIO, size: int, small_array_limit: int) -> None:
        self._file = file
        self._size = size
        self._limit = small_array_limit
        self._buf = b""
        self._pos = 0
        self._base = 0
        self._budget = MAX_MATERIALISED_BYTES

    # -- low level ---------------------------------------------------------------------

    def _tell(self) -> int:
        return self._base + self._pos

    def _left(self) -> int:
        """Bytes of the file after the current position."""
        return self._size - self._base - self._pos

    def _error(self, reason: str, offset: int | None = None) -> GGUFError:
        return GGUFError(reason, offset=self._tell() if offset is None else offset)

    def _fill(self, n: int) -> None:
        """Make at least ``n`` bytes available at ``_pos``."""
        if n > self._left():
            raise self._error(f"file is truncated: {n} more bytes needed, {self._left()} left")
        keep = self._buf[self._pos :]
        # Drop the old buffer before reading so that at most two chunks are ever alive.
        self._base += self._pos
        self._buf = b""
        self._pos = 0
        parts = [keep] if keep else []
        have = len(keep)
        want = max(n - have, _CHUNK)
        while have < n:
            chunk = self._file.read(want)
            if not chunk:
                raise self._error("file is truncated (it shrank while being read)")
            parts.append(chunk)
            have += len(chunk)
            want -= len(chunk)
        self._buf = parts[0] if len(parts) == 1 else b"".join(parts)

    def _unpack(self, st: struct.Struct) -> object:
        pos = self._pos
        if pos + st.size > len(self._buf):
            self._fill(st.size)
            pos = self._pos
        self._pos = pos + st.size
        return st.unpack_from(self._buf, pos)[0]

    def _u32(self) -> int:
        pos = self._pos
        if pos + 4 > len(self._buf):
            self._fill(4)
            pos = self._pos
        self._pos = pos + 4
        value: int = _U32.unpack_from(self._buf, pos)[0]
        return value

    def _u64(self) -> int:
        pos = self._pos
        if pos + 8 > len(self._buf):
            self._fill(8)
            pos = self._pos
        self._pos = pos + 8
        value: int = _U64.unpack_from(self._buf, pos)[0]
        return value

    def _take(self, n: int) -> bytes:
        pos = self._pos
        if pos + n > len(self._buf):
            self._fill(n)
            pos = self._pos
        self._pos = pos + n
        return self._buf[pos : pos + n]

    def _skip(self, n: int) -> None:
        avail = len(self._buf) - self._pos
        if n <= avail:
            self._pos += n
            return
        if n > self._left():
            raise self._error(f"file is truncated: {n} bytes to skip, {self._left()} left")
        target = self._tell() + n
        self._file.seek(target)
        self._buf = b""
        self._pos = 0
        self._base = target

    def _charge(self, cost: int) -> None:
        self._budget -= max(cost, _ITEM_COST)
        if self._budget < 0:
            raise self._error(
                f"metadata needs more than {MAX_MATERIALISED_BYTES >> 20} MiB to hold"
            )

    def _string_length(self) -> int:
        start = self._tell()
        n = self._u64()
        if n > MAX_STRING_LENGTH:
            raise self._error(f"string length {n} exceeds {MAX_STRING_LENGTH} bytes", start)
        if n > self._left():
            raise self._error(f"string length {n} runs past the end of the file", start)
        return n

    def _string(self) -> str:
        n = self._string_length()
        self._charge(n)
        # Token texts and templates are UTF-8 by spec; a stray bad byte must not make the
        # whole model unusable, so it becomes U+FFFD instead of an error.
        return self._take(n).decode("utf-8", "replace")

    # -- values ------------------------------------------------------------------------

    def _value(self, vtype: int, depth: int) -> object:
        st = _SCALARS.get(vtype)
        if st is not None:
            self._charge(st.size)
            return self._unpack(st)
        if vtype == GGUFValueType.STRING:
            return self._string()
        if vtype == GGUFValueType.ARRAY:
            return self._array(depth + 1, materialise=True)
        raise self._error(f"unknown value type {vtype}", self._tell() - 4)

    def _array(self, depth: int, *, materialise: bool) -> object:
        start = self._tell()
        item_type = self._u32()
        length = self._u64()
        min_size = _MIN_ITEM_SIZE.get(item_type)
        if min_size is None:
            raise self._error(f"array of unknown value type {item_type}", start)
        if item_type == GGUFValueType.ARRAY and depth >= MAX_ARRAY_DEPTH:
            raise self._error(f"arrays nested deeper than {MAX_ARRAY_DEPTH} levels", start)
        if length > self._left() // min_size:
            raise self._error(
                f"array length {length} cannot fit in the {self._left()} bytes left", start
            )
        if materialise and length <= self._limit:
            code = _SCALAR_CODES.get(item_type)
            if code is not None:
                self._charge(length * _ITEM_COST)
                data = self._take(length * min_size)
                return list(struct.unpack(f"<{length}{code}", data))
            if item_type == GGUFValueType.STRING:
                return [self._string() for _ in range(length)]
            return [self._array(depth + 1, materialise=True) for _ in range(length)]
        if item_type in _SCALARS:
            self._skip(length * min_size)
        elif item_type == GGUFValueType.STRING:
            self._skip_strings(length)
        else:
            for _ in range(length):
                self._array(depth + 1, materialise=False)
        return ArraySummary(item_type, length)

    def _skip_strings(self, count: int) -> None:
        """Step over ``count`` strings by their lengths: the hot loop for vocabularies."""
        unpack = _U64.unpack_from
        remaining = count
        while remaining:
            start = self._pos
            window: bytes | memoryview = self._buf
            if len(window) - start > MAX_STRING_LENGTH + 8:
                # Cap the window so that any string ending inside it is within the limit.
                window = memoryview(self._buf)[: start + MAX_STRING_LENGTH + 8]
            # The hot loop has no checks at all (each one costs ~10% here): unpack_from
            # fails as soon as a length field is not wholly inside the window, so every
            # string stepped over except perhaps the last one ends inside it.
            pos = start
            done = 0
            try:
                for done in range(remaining):  # noqa: B007 - `done` is read after the loop
                    (n,) = unpack(window, pos)
                    pos += 8 + n
                done = remaining
            except (struct.error, OverflowError):
                # OverflowError: a hostile length pushed pos beyond what an index can hold.
                pass
            window_end = len(window)
            del window  # a refill below can then free the old buffer
            if done == 0:
                # The next length field straddles the window's end: one checked step.
                self._skip(self._string_length())
                remaining -= 1
            elif pos > window_end and pos - start - 8 > MAX_STRING_LENGTH:
                # The last string may be over the limit: redo this stretch with checks.
                for _ in range(done):
                    self._skip(self._string_length())
                remaining -= done
            else:
                self._skip(pos - start)
                remaining -= done

    # -- sections ----------------------------------------------------------------------

    def header(self) -> GGUFHeader:
        if self._size < _HEADER.size:
            if self._size >= 4 and self._take(4) != GGUF_MAGIC:
                raise self._error("wrong magic: not a GGUF file", 0)
            raise self._error(f"file is truncated: {self._size} bytes, header needs 24", 0)
        magic, version, tensor_count, kv_count = _HEADER.unpack(self._take(_HEADER.size))
        if magic != GGUF_MAGIC:
            raise self._error(f"wrong magic {magic!r}: not a GGUF file", 0)
        if version & 0xFFFF == 0 and version != 0:
            raise self._error("big-endian GGUF files are not supported", 4)
        if version == 1:
            raise self._error(
                "GGUF version 1 (2023, 32-bit counts) is no longer supported; "
                "convert the model again with a current llama.cpp",
                4,
            )
        if version not in SUPPORTED_VERSIONS:
            raise self._error(f"unsupported GGUF version {version} (this app reads 2 and 3)", 4)
        if tensor_count > MAX_TENSOR_COUNT:
            raise self._error(f"tensor count {tensor_count} exceeds {MAX_TENSOR_COUNT}", 8)
        if kv_count > MAX_KV_COUNT:
            raise self._error(f"key/value count {kv_count} exceeds {MAX_KV_COUNT}", 16)
        # Each key/value takes at least 13 bytes and each tensor info at least 24.
        if kv_count * 13 + tensor_count * 24 > self._left():
            raise self._error(
                f"{kv_count} key/values and {tensor_count} tensors cannot fit in the file", 8
            )

        kv, kv_types = self._key_values(kv_count)
        alignment = self._alignment(kv, kv_types)
        tensors = self._tensor_infos(tensor_count)
        end_of_infos = self._tell()
        data_offset = -(-end_of_infos // alignment) * alignment
        self._check_tensor_data(tensors, alignment, data_offset)
        return GGUFHeader(
            version=version,
            tensor_count=tensor_count,
            kv=kv,
            tensors=tensors,
            file_size=self._size,
            alignment=alignment,
            data_offset=data_offset,
            kv_types=kv_types,
        )

    def _key_values(self, count: int) -> tuple[dict[str, object], dict[str, int]]:
        kv: dict[str, object] = {}
        kv_types: dict[str, int] = {}
        for _ in range(count):
            start = self._tell()
            key = self._string()
            vtype = self._u32()
            if key in kv:
                raise self._error(f"duplicate key {key!r}", start)
            kv[key] = self._value(vtype, 0)
            kv_types[key] = vtype
        return kv, kv_types

    def _alignment(self, kv: dict[str, object], kv_types: dict[str, int]) -> int:
        if "general.alignment" not in kv:
            return DEFAULT_ALIGNMENT
        value = kv["general.alignment"]
        if kv_types["general.alignment"] != GGUFValueType.UINT32 or not isinstance(value, int):
            raise self._error("general.alignment must be a uint32")
        if value == 0 or value & (value - 1):
            raise self._error(f"general.alignment {value} is not a power of two")
        return value

    def _tensor_infos(self, count: int) -> list[TensorInfo]:
        tensors: list[TensorInfo] = []
        names: set[str] = set()
        for _ in range(count):
            start = self._tell()
            name = self._string()
            if name in names:
                raise self._error(f"duplicate tensor {name!r}", start)
            names.add(name)
            n_dims = self._u32()
            if n_dims > MAX_DIMS:
                raise self._error(f"tensor {name!r} has {n_dims} dimensions (max {MAX_DIMS})")
            shape: tuple[int, ...] = struct.unpack(f"<{n_dims}Q", self._take(8 * n_dims))
            elements = 1
            for dim in shape:
                elements *= dim
                if elements > _INT64_MAX:
                    raise self._error(f"tensor {name!r} has an absurd shape {shape}", start)
            ggml_type = self._u32()
            offset = self._u64()
            known = GGML_TYPES.get(ggml_type)
            if known is not None and shape and shape[0] % known[1]:
                raise self._error(
                    f"tensor {name!r}: first dimension {shape[0]} is not a multiple of "
                    f"the {known[0]} block size {known[1]}",
                    start,
                )
            tensors.append(TensorInfo(name, shape, ggml_type, offset))
        return tensors

    def _check_tensor_data(
        self, tensors: list[TensorInfo], alignment: int, data_offset: int
    ) -> None:
        if not tensors:
            return
        room = self._size - data_offset
        if room < 0:
            raise self._error("tensor data section starts past the end of the file", data_offset)
        for tensor in tensors:
            if tensor.offset % alignment:
                raise self._error(
                    f"tensor {tensor.name!r} offset {tensor.offset} is not aligned to {alignment}"
                )
            size = tensor.n_bytes or 0
            if tensor.offset > room or size > room - tensor.offset:
                raise self._error(
                    f"tensor {tensor.name!r} data ({size} bytes at {tensor.offset}) runs past "
                    f"the end of the file"
                )
