"""GGUF files for reader tests: every value type, v2/v3, mmproj, embedding, big vocab, hostile."""

# Well-formed files are written with gguf-py's GGUFWriter so that they are what the
# ecosystem really produces; hostile ones are assembled byte by byte with the helpers at
# the bottom, because no writer will produce them.

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

__all__ = [
    "ALL_TYPES_KV",
    "KV",
    "T",
    "array_payload",
    "hostile_cases",
    "kv_bytes",
    "patch_version",
    "raw_gguf",
    "string_bytes",
    "tensor_info_bytes",
    "write_all_types_gguf",
    "write_big_vocab_gguf",
    "write_embedding_gguf",
    "write_gguf",
    "write_mmproj_gguf",
]

T = gguf.GGUFValueType


@dataclass(frozen=True)
class KV:
    key: str
    value: Any
    vtype: gguf.GGUFValueType
    sub_type: gguf.GGUFValueType | None = None


# One key per value type, including the edges of each integer range, plus arrays of each
# kind and an array of arrays (the deepest nesting the reader accepts).
ALL_TYPES_KV: tuple[KV, ...] = (
    KV("general.name", "all-types", T.STRING),
    KV("test.uint8", 255, T.UINT8),
    KV("test.int8", -128, T.INT8),
    KV("test.uint16", 65535, T.UINT16),
    KV("test.int16", -32768, T.INT16),
    KV("test.uint32", 4_294_967_295, T.UINT32),
    KV("test.int32", -2_147_483_648, T.INT32),
    KV("test.float32", 0.1, T.FLOAT32),
    KV("test.bool_true", True, T.BOOL),
    KV("test.bool_false", False, T.BOOL),
    KV("test.string", "héllo ✓ wörld", T.STRING),
    KV("test.empty_string", "", T.STRING),
    KV("test.uint64", 18_446_744_073_709_551_615, T.UINT64),
    KV("test.int64", -9_223_372_036_854_775_808, T.INT64),
    KV("test.float64", 2.718281828459045, T.FLOAT64),
    KV("test.array_u8", [0, 1, 2, 255], T.ARRAY, T.UINT8),
    KV("test.array_i16", [-1, 0, 1], T.ARRAY, T.INT16),
    KV("test.array_i32", list(range(-5, 5)), T.ARRAY, T.INT32),
    KV("test.array_u64", [0, 2**64 - 1], T.ARRAY, T.UINT64),
    KV("test.array_f32", [0.5, -1.25, 3.0], T.ARRAY, T.FLOAT32),
    KV("test.array_f64", [1e-300, 1e300], T.ARRAY, T.FLOAT64),
    KV("test.array_bool", [True, False, True], T.ARRAY, T.BOOL),
    KV("test.array_str", ["a", "", "ünïcode", "x" * 300], T.ARRAY, T.STRING),
    KV("test.array_big_i32", list(range(1000)), T.ARRAY, T.INT32),
    KV("test.array_big_str", [f"tok{i}" for i in range(1000)], T.ARRAY, T.STRING),
    KV("test.array_nested", [[1, 2], [3], [4, 5, 6]], T.ARRAY, T.ARRAY),
    KV("test.array_nested_str", [["a", "b"], ["c"]], T.ARRAY, T.ARRAY),
)


def write_gguf(
    path: Path,
    kvs: Iterable[KV],
    *,
    arch: str = "llama",
    tensors: Sequence[tuple[str, np.ndarray[Any, Any]]] = (),
    raw_tensors: Sequence[tuple[str, np.ndarray[Any, Any], gguf.GGMLQuantizationType]] = (),
    alignment: int | None = None,
) -> Path:
    """Write a GGUF v3 file with exactly these key/values (plus general.architecture)."""
    path = Path(path)
    writer = gguf.GGUFWriter(path, arch)
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    for kv in kvs:
        writer.add_key_value(kv.key, kv.value, kv.vtype, kv.sub_type)
    for name, array in tensors:
        writer.add_tensor(name, array)
    for name, data, qtype in raw_tensors:
        writer.add_tensor(name, data, raw_dtype=qtype)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return path


def _small_tensors() -> list[tuple[str, np.ndarray[Any, Any]]]:
    rng = np.random.default_rng(0)
    return [
        ("token_embd.weight", rng.standard_normal((8, 32)).astype(np.float32)),
        ("output_norm.weight", np.ones(32, dtype=np.float32)),
        ("blk.0.attn_q.weight", rng.standard_normal((32, 32)).astype(np.float16)),
        ("blk.0.ffn_up.weight", rng.standard_normal((2, 3, 4, 32)).astype(np.float32)),
    ]


def write_all_types_gguf(path: Path, *, version: int = 3, alignment: int | None = None) -> Path:
    """Every value type, small and big arrays of each kind, nested arrays and a few tensors.

    A Q8_0 tensor (written as raw blocks) checks block-quantised sizes too.
    """
    q8_rows, q8_cols = 4, 64
    q8_bytes = q8_rows * (q8_cols // 32) * 34
    q8 = np.zeros((q8_rows, q8_bytes // q8_rows), dtype=np.uint8)
    write_gguf(
        path,
        ALL_TYPES_KV,
        tensors=_small_tensors(),
        raw_tensors=[("blk.0.attn_k.weight", q8, gguf.GGMLQuantizationType.Q8_0)],
        alignment=alignment,
    )
    if version != 3:
        patch_version(path, version)
    return Path(path)


def patch_version(path: Path, version: int) -> None:
    """Rewrite the header's version field in place.

    v2 and v3 share the little-endian layout (v3 only added big-endian files), so a v3 file
    relabelled 2 is a genuine v2 file. Other values make files to be rejected.
    """
    with open(path, "r+b") as f:
        f.seek(4)
        f.write(struct.pack("<I", version))


def write_mmproj_gguf(path: Path) -> Path:
    """A vision projector as llama.cpp's mmproj converter writes it (arch "clip")."""
    kvs = [
        KV("general.type", "mmproj", T.STRING),
        KV("general.name", "tiny-mmproj", T.STRING),
        KV("general.file_type", 1, T.UINT32),
        KV("clip.projector_type", "gemma3", T.STRING),
        KV("clip.has_vision_encoder", True, T.BOOL),
        KV("clip.has_audio_encoder", False, T.BOOL),
        KV("clip.use_gelu", True, T.BOOL),
        KV("clip.vision.image_size", 224, T.UINT32),
        KV("clip.vision.patch_size", 14, T.UINT32),
        KV("clip.vision.embedding_length", 32, T.UINT32),
        KV("clip.vision.feed_forward_length", 64, T.UINT32),
        KV("clip.vision.projection_dim", 64, T.UINT32),
        KV("clip.vision.block_count", 1, T.UINT32),
        KV("clip.vision.attention.head_count", 2, T.UINT32),
        KV("clip.vision.attention.layer_norm_epsilon", 1e-6, T.FLOAT32),
        KV("clip.vision.image_mean", [0.5, 0.5, 0.5], T.ARRAY, T.FLOAT32),
        KV("clip.vision.image_std", [0.5, 0.5, 0.5], T.ARRAY, T.FLOAT32),
    ]
    rng = np.random.default_rng(1)
    tensors = [
        ("v.patch_embd.weight", rng.standard_normal((32, 3, 14, 14)).astype(np.float16)),
        ("v.blk.0.attn_q.weight", rng.standard_normal((32, 32)).astype(np.float16)),
        ("mm.input_projection.weight", rng.standard_normal((64, 32)).astype(np.float16)),
    ]
    return write_gguf(path, kvs, arch="clip", tensors=tensors)


EMBEDDING_POOLING_MEAN = 1


def write_embedding_gguf(path: Path, *, pooling_type: int | None = EMBEDDING_POOLING_MEAN) -> Path:
    """A BERT-style embedding model with a WordPiece vocabulary and a pooling type."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "##s"]
    kvs = [
        KV("general.type", "model", T.STRING),
        KV("general.name", "tiny-embed", T.STRING),
        KV("general.file_type", 0, T.UINT32),
        KV("bert.context_length", 512, T.UINT32),
        KV("bert.embedding_length", 32, T.UINT32),
        KV("bert.feed_forward_length", 64, T.UINT32),
        KV("bert.block_count", 1, T.UINT32),
        KV("bert.attention.head_count", 2, T.UINT32),
        KV("bert.attention.layer_norm_epsilon", 1e-12, T.FLOAT32),
        KV("bert.attention.causal", False, T.BOOL),
        KV("tokenizer.ggml.model", "bert", T.STRING),
        KV("tokenizer.ggml.tokens", vocab, T.ARRAY, T.STRING),
        KV("tokenizer.ggml.token_type", [3, 2, 3, 3, 3, 1, 1, 1], T.ARRAY, T.INT32),
        KV("tokenizer.ggml.unknown_token_id", 1, T.UINT32),
        KV("tokenizer.ggml.seperator_token_id", 3, T.UINT32),
        KV("tokenizer.ggml.padding_token_id", 0, T.UINT32),
        KV("tokenizer.ggml.cls_token_id", 2, T.UINT32),
    ]
    if pooling_type is not None:
        kvs.append(KV("bert.pooling_type", pooling_type, T.UINT32))
    rng = np.random.default_rng(2)
    tensors = [
        ("token_embd.weight", rng.standard_normal((len(vocab), 32)).astype(np.float32)),
        ("blk.0.attn_q.weight", rng.standard_normal((32, 32)).astype(np.float32)),
    ]
    return write_gguf(path, kvs, arch="bert", tensors=tensors)


def write_big_vocab_gguf(path: Path, n_tokens: int = 200_000) -> Path:
    """A llama header with an ``n_tokens`` vocabulary, scores, types and BPE merges."""
    tokens = [f"tok_{i:06d}" for i in range(n_tokens)]
    merges = [f"t{i} k{i}" for i in range(n_tokens // 2)]
    kvs = [
        KV("general.name", "big-vocab", T.STRING),
        KV("general.file_type", 1, T.UINT32),
        KV("llama.context_length", 8192, T.UINT32),
        KV("llama.vocab_size", n_tokens, T.UINT32),
        KV("tokenizer.ggml.model", "gpt2", T.STRING),
        KV("tokenizer.ggml.tokens", tokens, T.ARRAY, T.STRING),
        KV("tokenizer.ggml.scores", [0.0] * n_tokens, T.ARRAY, T.FLOAT32),
        KV("tokenizer.ggml.token_type", [1] * n_tokens, T.ARRAY, T.INT32),
        KV("tokenizer.ggml.merges", merges, T.ARRAY, T.STRING),
        KV("tokenizer.ggml.bos_token_id", 0, T.UINT32),
        KV("tokenizer.ggml.eos_token_id", 1, T.UINT32),
    ]
    tensors = [("output_norm.weight", np.ones(16, dtype=np.float16))]
    return write_gguf(path, kvs, tensors=tensors)


# -- raw bytes, for files no writer would produce ------------------------------------------


def string_bytes(text: str | bytes, *, length: int | None = None) -> bytes:
    """A GGUF string; ``length`` overrides the stored length (hostile files)."""
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data) if length is None else length) + data


def kv_bytes(key: str, vtype: int, payload: bytes) -> bytes:
    """One key/value: the key, the type id and the already encoded value."""
    return string_bytes(key) + struct.pack("<I", vtype) + payload


def array_payload(item_type: int, length: int, items: bytes = b"") -> bytes:
    return struct.pack("<IQ", item_type, length) + items


def tensor_info_bytes(name: str, dims: Sequence[int], ggml_type: int, offset: int) -> bytes:
    return (
        string_bytes(name)
        + struct.pack("<I", len(dims))
        + struct.pack(f"<{len(dims)}Q", *dims)
        + struct.pack("<IQ", ggml_type, offset)
    )


def raw_gguf(
    kvs: Sequence[bytes] = (),
    tensors: Sequence[bytes] = (),
    *,
    magic: bytes = b"GGUF",
    version: int = 3,
    kv_count: int | None = None,
    tensor_count: int | None = None,
    data: bytes = b"",
    alignment: int = 32,
) -> bytes:
    """Assemble a file: header, key/values, tensor infos, padding, then ``data``."""
    body = struct.pack(
        "<4sIQQ",
        magic,
        version,
        len(tensors) if tensor_count is None else tensor_count,
        len(kvs) if kv_count is None else kv_count,
    )
    body += b"".join(kvs) + b"".join(tensors)
    if tensors or data:
        body += b"\0" * (-len(body) % alignment)
    return body + data


def hostile_cases() -> dict[str, bytes]:
    """Named files that a reader must reject, each quickly and without big allocations."""
    u32 = struct.pack("<I", 7)
    name_kv = kv_bytes("general.name", T.STRING, string_bytes("x"))
    f32_tensor = tensor_info_bytes("t", [4], 0, 0)
    return {
        "empty file": b"",
        "only magic": b"GGUF",
        "wrong magic": raw_gguf([name_kv], magic=b"GGML"),
        "zip file": b"PK\x03\x04" + b"\0" * 60,
        "short text file": b"hello world\n",
        "version 1": raw_gguf([name_kv], version=1),
        "version 99": raw_gguf([name_kv], version=99),
        "version 0": raw_gguf([name_kv], version=0),
        "big-endian": raw_gguf([name_kv], version=3 << 24),
        "key length 2^62": raw_gguf([string_bytes("k", length=2**62) + u32]),
        "string value length 2^62": raw_gguf(
            [kv_bytes("s", T.STRING, string_bytes("abc", length=2**62))]
        ),
        "string value length 65 MiB": raw_gguf(
            [kv_bytes("s", T.STRING, string_bytes("abc", length=65 * 2**20))]
        ),
        "string past end": raw_gguf([kv_bytes("s", T.STRING, string_bytes("abc", length=4096))]),
        "kv count 2^40": raw_gguf([name_kv], kv_count=2**40),
        "kv count over 1e6": raw_gguf([name_kv], kv_count=1_000_001),
        "kv count larger than file": raw_gguf([name_kv], kv_count=1000),
        "tensor count 2^40": raw_gguf([name_kv], tensor_count=2**40),
        "tensor count over 1e6": raw_gguf([name_kv], tensor_count=1_000_001),
        "unknown value type 200": raw_gguf([kv_bytes("k", 200, u32)]),
        "unknown value type 13": raw_gguf([kv_bytes("k", 13, u32)]),
        "array of unknown type": raw_gguf([kv_bytes("k", T.ARRAY, array_payload(77, 1, u32))]),
        "empty array of unknown type": raw_gguf([kv_bytes("k", T.ARRAY, array_payload(77, 0))]),
        "array length 2^60 of u8": raw_gguf(
            [kv_bytes("k", T.ARRAY, array_payload(T.UINT8, 2**60))]
        ),
        "array length 2^60 of strings": raw_gguf(
            [kv_bytes("k", T.ARRAY, array_payload(T.STRING, 2**60))]
        ),
        "array length 2^60 of arrays": raw_gguf(
            [kv_bytes("k", T.ARRAY, array_payload(T.ARRAY, 2**60))]
        ),
        "string array item length 2^62": raw_gguf(
            [
                kv_bytes(
                    "k",
                    T.ARRAY,
                    array_payload(T.STRING, 100, string_bytes("a", length=2**62) + b"\0" * 900),
                )
            ]
        ),
        "string array item length 2^64-1": raw_gguf(
            [
                kv_bytes(
                    "k",
                    T.ARRAY,
                    array_payload(
                        T.STRING, 100, string_bytes("a") + string_bytes("b", length=2**64 - 1)
                    )
                    + b"\0" * 900,
                )
            ]
        ),
        "nested arrays depth 3": raw_gguf(
            [
                kv_bytes(
                    "k",
                    T.ARRAY,
                    array_payload(
                        T.ARRAY, 1, array_payload(T.ARRAY, 1, array_payload(T.UINT8, 1, b"\1"))
                    ),
                )
            ]
        ),
        "nested arrays depth 3, skipped": raw_gguf(
            [
                kv_bytes(
                    "k",
                    T.ARRAY,
                    array_payload(
                        T.ARRAY,
                        100,
                        array_payload(T.ARRAY, 1, array_payload(T.UINT8, 1, b"\1")) * 100,
                    ),
                )
            ]
        ),
        "duplicate key": raw_gguf([name_kv, name_kv]),
        "alignment not a power of two": raw_gguf(
            [kv_bytes("general.alignment", T.UINT32, struct.pack("<I", 24))],
            [f32_tensor],
            data=b"\0" * 64,
        ),
        "alignment zero": raw_gguf(
            [kv_bytes("general.alignment", T.UINT32, struct.pack("<I", 0))],
            [f32_tensor],
            data=b"\0" * 64,
        ),
        "alignment wrong type": raw_gguf(
            [kv_bytes("general.alignment", T.UINT64, struct.pack("<Q", 32))],
            [f32_tensor],
            data=b"\0" * 64,
        ),
        "tensor offset past end": raw_gguf(
            [name_kv], [tensor_info_bytes("t", [4], 0, 1 << 40)], data=b"\0" * 64
        ),
        "tensor data past end": raw_gguf(
            [name_kv], [tensor_info_bytes("t", [1024, 1024], 0, 0)], data=b"\0" * 64
        ),
        "tensor offset misaligned": raw_gguf(
            [name_kv], [tensor_info_bytes("t", [4], 0, 3)], data=b"\0" * 64
        ),
        "tensor without data section": raw_gguf([name_kv], tensor_count=1) + f32_tensor,
        "tensor with 5 dims": raw_gguf(
            [name_kv], [tensor_info_bytes("t", [1, 1, 1, 1, 1], 0, 0)], data=b"\0" * 64
        ),
        "tensor dims overflow": raw_gguf(
            [name_kv], [tensor_info_bytes("t", [2**40, 2**40], 0, 0)], data=b"\0" * 64
        ),
        "tensor name length 2^62": raw_gguf(
            [name_kv],
            [string_bytes("t", length=2**62) + struct.pack("<I", 1) + b"\0" * 28],
        ),
        "duplicate tensor": raw_gguf([name_kv], [f32_tensor, f32_tensor], data=b"\0" * 64),
        "Q4_0 row not a multiple of 32": raw_gguf(
            [name_kv], [tensor_info_bytes("t", [33], 2, 0)], data=b"\0" * 64
        ),
    }
