"""What the app needs to know about a GGUF model, distilled from its header."""

from __future__ import annotations

import os
import struct
from collections import Counter
from dataclasses import dataclass
from typing import Final

from .gguf import GGML_TYPE_NAMES, ArraySummary, GGUFError, GGUFHeader, GGUFValueType, read_gguf

__all__ = [
    "FILE_TYPE_NAMES",
    "GGUFError",
    "GGUFMetadata",
    "metadata_from_header",
    "parameter_size_label",
    "quantization_name",
    "read_metadata",
]

# llama.cpp's llama_ftype (general.file_type) under the short names Ollama shows; ids 4-6
# and 33-35 were removed from llama.cpp and never appear in current files. 38 is what
# llama.cpp calls MOSTLY_MXFP4_MOE and Ollama shows as "MXFP4" (gpt-oss).
FILE_TYPE_NAMES: Final[dict[int, str]] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4",
    39: "NVFP4",
    40: "Q1_0",
}

# Ollama's /api/show drops these two from model_info (the name and template are shown
# elsewhere in the response).
_NOT_IN_MODEL_INFO: Final = frozenset({"general.name", "tokenizer.chat_template"})


@dataclass(frozen=True)
class GGUFMetadata:
    """One model file's identity and facts, as shown in listings and /api/show."""

    path: str
    file_size: int
    mtime_ns: int
    version: int
    architecture: str | None
    name: str | None
    basename: str | None
    size_label: str | None
    parameter_count: int | None
    file_type: int | None
    quantization: str | None
    context_length: int | None
    embedding_length: int | None
    block_count: int | None
    head_count: int | None
    head_count_kv: int | None
    feed_forward_length: int | None
    vocab_size: int | None
    tokenizer_model: str | None
    bos_token_id: int | None
    eos_token_id: int | None
    chat_template: str | None
    pooling_type: int | None
    is_projector: bool
    projector_type: str | None
    has_vision_encoder: bool
    model_info: dict[str, object]


def read_metadata(path: str | os.PathLike[str]) -> GGUFMetadata:
    """Read the header of the model at ``path``; raises GGUFError for a broken file."""
    real = os.path.realpath(os.fspath(path))
    # Stat before reading: if the file changes meanwhile, its new mtime misses the cache.
    st = os.stat(real)
    header = read_gguf(real)
    return metadata_from_header(header, path=real, mtime_ns=st.st_mtime_ns)


def metadata_from_header(header: GGUFHeader, *, path: str, mtime_ns: int) -> GGUFMetadata:
    """Distil an already parsed header (``read_metadata`` without the I/O)."""
    kv = header.kv
    arch = _str(kv.get("general.architecture"))

    def arch_int(key: str) -> int | None:
        return _int_or_max(kv.get(f"{arch}.{key}")) if arch else None

    file_type = _int(kv.get("general.file_type"))
    parameter_count = _int(kv.get("general.parameter_count"))
    if parameter_count is None and header.tensors:
        parameter_count = sum(t.n_elements for t in header.tensors)
    quantization = quantization_name(file_type) or _dominant_tensor_type(header)

    tokens = kv.get("tokenizer.ggml.tokens")
    vocab_size = _array_length(tokens)
    if vocab_size is None:
        vocab_size = arch_int("vocab_size")

    general_type = _str(kv.get("general.type"))
    is_projector = general_type == "mmproj" or arch == "clip"
    projector_type = _str(kv.get("clip.projector_type")) or _str(
        kv.get("clip.vision.projector_type")
    )
    # Ollama's test for a model with its own vision tower is <arch>.vision.block_count;
    # llama.cpp's mmproj files say so with clip.has_vision_encoder.
    has_vision_encoder = kv.get("clip.has_vision_encoder") is True or (
        arch is not None and f"{arch}.vision.block_count" in kv
    )

    return GGUFMetadata(
        path=path,
        file_size=header.file_size,
        mtime_ns=mtime_ns,
        version=header.version,
        architecture=arch,
        name=_str(kv.get("general.name")),
        basename=_str(kv.get("general.basename")),
        size_label=_str(kv.get("general.size_label")),
        parameter_count=parameter_count,
        file_type=file_type,
        quantization=quantization,
        context_length=arch_int("context_length"),
        embedding_length=arch_int("embedding_length"),
        block_count=arch_int("block_count"),
        head_count=arch_int("attention.head_count"),
        head_count_kv=arch_int("attention.head_count_kv"),
        feed_forward_length=arch_int("feed_forward_length"),
        vocab_size=vocab_size,
        tokenizer_model=_str(kv.get("tokenizer.ggml.model")),
        bos_token_id=_int(kv.get("tokenizer.ggml.bos_token_id")),
        eos_token_id=_int(kv.get("tokenizer.ggml.eos_token_id")),
        chat_template=_str(kv.get("tokenizer.chat_template")),
        pooling_type=arch_int("pooling_type"),
        is_projector=is_projector,
        projector_type=projector_type,
        has_vision_encoder=has_vision_encoder,
        model_info=_model_info(header, parameter_count),
    )


def quantization_name(file_type: int | None) -> str | None:
    """Ollama's name for a general.file_type value, or None when unknown."""
    return None if file_type is None else FILE_TYPE_NAMES.get(file_type)


def parameter_size_label(meta: GGUFMetadata) -> str:
    """The parameter count the way Ollama prints it ("268.10M", "7.6B", "137M").

    Mirrors Ollama's format.HumanNumber: whole numbers lose their decimals, millions keep
    two decimals and billions one. Without a count, falls back to general.size_label.
    """
    count = meta.parameter_count
    if count is None:
        return meta.size_label or "unknown"
    for scale, unit, decimals in ((1_000_000_000, "B", 1), (1_000_000, "M", 2)):
        if count >= scale:
            value = count / scale
            places = 0 if value == int(value) else decimals
            return f"{value:.{places}f}{unit}"
    if count >= 1_000:
        return f"{count / 1_000:.0f}K"
    return str(count)


def _model_info(header: GGUFHeader, parameter_count: int | None) -> dict[str, object]:
    """The key/values as Ollama's non-verbose /api/show ``model_info`` has them.

    Ollama reads arrays only up to a size of 0 when not verbose, so every non-empty array
    is null there; float32 values are printed the way Go prints a float32 (shortest form).
    """
    info: dict[str, object] = {}
    for key, value in header.kv.items():
        if key in _NOT_IN_MODEL_INFO:
            continue
        if isinstance(value, list | ArraySummary):
            info[key] = [] if _array_length(value) == 0 else None
        elif isinstance(value, float) and header.kv_types.get(key) == GGUFValueType.FLOAT32:
            info[key] = _shortest_float32(value)
        else:
            info[key] = value
    # Ollama adds the computed count when the file has none.
    if parameter_count is not None:
        info.setdefault("general.parameter_count", parameter_count)
    return info


def _shortest_float32(value: float) -> float:
    """The shortest decimal that reads back as the same float32 (1e-06, not 9.99999997e-07)."""
    if value != value or value in (float("inf"), float("-inf")):
        return value
    pack = struct.Struct("<f")
    for digits in range(1, 10):
        candidate = float(f"{value:.{digits}g}")
        if pack.unpack(pack.pack(candidate))[0] == value:
            return candidate
    return value


def _dominant_tensor_type(header: GGUFHeader) -> str | None:
    """The ggml type holding the most weights, ignoring 1-D tensors (norms stay F32)."""
    weights: Counter[int] = Counter()
    for tensor in header.tensors:
        if len(tensor.shape) >= 2:
            weights[tensor.ggml_type] += tensor.n_elements
    if not weights:
        return None
    ggml_type = weights.most_common(1)[0][0]
    return GGML_TYPE_NAMES.get(ggml_type)


def _array_length(value: object) -> int | None:
    if isinstance(value, ArraySummary):
        return value.length
    if isinstance(value, list):
        return len(value)
    return None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _int_or_max(value: object) -> int | None:
    # Some architectures store per-layer values (head counts, feed-forward sizes) as an
    # array; the largest one is what sizing the KV cache and buffers needs.
    if isinstance(value, list):
        ints = [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
        return max(ints) if ints and len(ints) == len(value) else None
    return _int(value)
