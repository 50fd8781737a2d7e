"""The generated tiny GGUF: its metadata, its determinism, and that real llama-server runs it."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import gguf
from tests.support.tiny_gguf import (
    BLOCK_COUNT,
    DEFAULT_TEMPLATE,
    EMBEDDING_LENGTH,
    WORD_TOKENS,
    tokens,
    write_tiny_gguf,
)


def fields(path: Path) -> dict[str, Any]:
    reader = gguf.GGUFReader(path)
    return {name: f.contents() for name, f in reader.fields.items()}


def test_metadata_has_what_llama_cpp_needs(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "m.gguf", name="tiny-x", context_length=512)
    meta = fields(path)
    expected = {
        "general.architecture": "llama",
        "general.name": "tiny-x",
        "general.basename": "tiny-x",
        "general.file_type": 0,
        "llama.context_length": 512,
        "llama.embedding_length": EMBEDDING_LENGTH,
        "llama.block_count": BLOCK_COUNT,
        "llama.feed_forward_length": 128,
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 4,
        "llama.rope.dimension_count": 16,
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.chat_template": DEFAULT_TEMPLATE,
    }
    assert {key: meta.get(key) for key in expected} == expected
    assert meta["general.size_label"]
    assert meta["llama.attention.layer_norm_rms_epsilon"] > 0


def test_vocabulary_is_specials_bytes_then_words(tmp_path: Path) -> None:
    meta = fields(write_tiny_gguf(tmp_path / "m.gguf"))
    pieces, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    assert pieces[:3] == ["<unk>", "<s>", "</s>"]
    assert pieces[3:259] == [f"<0x{b:02X}>" for b in range(256)]
    assert set(types[3:259]) == {int(gguf.TokenType.BYTE)}
    assert pieces[259:] == list(WORD_TOKENS)
    assert len(WORD_TOKENS) >= 24
    assert len(meta["tokenizer.ggml.scores"]) == len(pieces) == len(tokens())
    assert "{%- if tools" in meta["tokenizer.chat_template"]


def test_tensors_have_ggml_shapes(tmp_path: Path) -> None:
    reader = gguf.GGUFReader(write_tiny_gguf(tmp_path / "m.gguf"))
    shapes = {t.name: list(t.shape) for t in reader.tensors}
    n_vocab = len(tokens())
    assert shapes["token_embd.weight"] == [EMBEDDING_LENGTH, n_vocab]
    assert shapes["output.weight"] == [EMBEDDING_LENGTH, n_vocab]
    assert shapes["output_norm.weight"] == [EMBEDDING_LENGTH]
    for b in range(BLOCK_COUNT):
        assert shapes[f"blk.{b}.attn_q.weight"] == [EMBEDDING_LENGTH, EMBEDDING_LENGTH]
        assert shapes[f"blk.{b}.ffn_gate.weight"] == [EMBEDDING_LENGTH, 128]
        assert shapes[f"blk.{b}.ffn_down.weight"] == [128, EMBEDDING_LENGTH]
    assert len(shapes) == 3 + 9 * BLOCK_COUNT
    assert {t.tensor_type for t in reader.tensors} == {gguf.GGMLQuantizationType.F32}


def test_same_arguments_give_the_same_bytes(tmp_path: Path) -> None:
    a = write_tiny_gguf(tmp_path / "a.gguf", seed=7).read_bytes()
    b = write_tiny_gguf(tmp_path / "b.gguf", seed=7).read_bytes()
    c = write_tiny_gguf(tmp_path / "c.gguf", seed=8).read_bytes()
    assert a == b
    assert a != c
    assert 300_000 < len(a) < 700_000


def test_template_can_be_left_out_and_metadata_overridden(tmp_path: Path) -> None:
    path = write_tiny_gguf(
        tmp_path / "m.gguf",
        chat_template=None,
        architecture_extras={
            "general.file_type": 15,
            "llama.pooling_type": 1,
            "general.tags": ["a", "b"],
            "general.basename": None,
        },
    )
    meta = fields(path)
    assert "tokenizer.chat_template" not in meta
    assert "general.basename" not in meta
    assert meta["general.file_type"] == 15
    assert meta["llama.pooling_type"] == 1
    assert meta["general.tags"] == ["a", "b"]


# ---------------------------------------------------------------------------------------
# the real server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_real_llama_server_loads_and_chats(llama_server_bin: Path, tmp_path: Path) -> None:
    model = write_tiny_gguf(tmp_path / "tiny.gguf")
    port = _free_port()
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [str(llama_server_bin), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
         "-c", "256", "-t", "1", "--alias", "tiny"],
        stdout=log, stderr=log, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            with contextlib.suppress(OSError):
                if _call(port, "GET", "/health")[0] == 200:
                    break
            time.sleep(0.02)
        status, reply = _call(port, "POST", "/v1/chat/completions", {
            "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8,
            "temperature": 0,
        })
        assert status == 200, reply
        assert reply["choices"][0]["message"]["content"].strip()
        assert reply["timings"]["predicted_n"] == 8
        # Greedy output is made of whole words, so it is plain ASCII text.
        assert reply["choices"][0]["message"]["content"].isascii()
        _, props = _call(port, "GET", "/props")
        assert props["chat_template_caps"]["supports_tools"] is True
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()

