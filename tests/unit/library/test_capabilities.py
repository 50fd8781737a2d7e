"""Capabilities in Ollama's vocabulary, and Ollama-style parameter size labels."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from tests.support.gguf_fixtures import write_embedding_gguf, write_mmproj_gguf
from tests.support.tiny_gguf import DEFAULT_TEMPLATE, write_tiny_gguf

from llamarunner.library.capabilities import (
    capabilities,
    is_embedding_model,
    supports_insert,
    supports_thinking,
    supports_tools,
)
from llamarunner.library.metadata import GGUFMetadata, parameter_size_label, read_metadata

BASE = GGUFMetadata(
    path="/models/m.gguf",
    file_size=1,
    mtime_ns=1,
    version=3,
    architecture="llama",
    name="m",
    basename=None,
    size_label=None,
    parameter_count=None,
    file_type=15,
    quantization="Q4_K_M",
    context_length=4096,
    embedding_length=64,
    block_count=2,
    head_count=4,
    head_count_kv=4,
    feed_forward_length=128,
    vocab_size=300,
    tokenizer_model="llama",
    bos_token_id=1,
    eos_token_id=2,
    chat_template=None,
    pooling_type=None,
    is_projector=False,
    projector_type=None,
    has_vision_encoder=False,
    model_info={},
)


def meta(**changes: Any) -> GGUFMetadata:
    return dataclasses.replace(BASE, **changes)


# Abridged from real GGUF chat templates: the parts that decide the answer are verbatim.
LLAMA31 = (
    "{%- if tools is not none %}{%- set tools_in_user_message = true %}{%- endif %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
)
QWEN3 = (
    "{%- if tools %}<tools>{% for tool in tools %}{{ tool | tojson }}{% endfor %}</tools>"
    "{%- endif %}{%- set reasoning_content = '' %}"
    "{%- if '</think>' in content %}{%- set reasoning_content = content.split('</think>')[0] %}"
    "{%- endif %}{%- if enable_thinking is defined and enable_thinking is false %}"
    "<think>\n\n</think>\n\n{%- endif %}"
)
DEEPSEEK_R1 = (
    "{% for message in messages %}{% if message['role'] == 'assistant' %}"
    "{% set content = message['content'] %}{% if '</think>' in content %}"
    "{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{'<\uff5cAssistant\uff5c>' + content + '<\uff5cend\u2581of\u2581sentence\uff5c>'}}"
    "{% endif %}{% endfor %}"
)
GEMMA3 = (
    "{{ bos_token }}{%- for message in messages -%}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim }}"
    "{{ '<end_of_turn>\\n' }}{%- endfor -%}"
)
GPT_OSS = (
    "{%- if reasoning_effort is not defined %}{%- set reasoning_effort = 'medium' %}"
    "{%- endif %}{%- if message.thinking %}{{- '<|channel|>analysis<|message|>' + "
    "message.thinking + '<|end|>' }}{%- endif %}"
)
# Mentions tools and thinking only as output text, never as template variables.
PROSE_ONLY = "You are a helpful assistant with no tools, thinking step by step. {{ messages }}"

FIM = {
    "tokenizer.ggml.fim_pre_token_id": 1,
    "tokenizer.ggml.fim_suf_token_id": 2,
    "tokenizer.ggml.fim_mid_token_id": 3,
}
OLD_FIM = {
    "tokenizer.ggml.prefix_token_id": 1,
    "tokenizer.ggml.suffix_token_id": 2,
    "tokenizer.ggml.middle_token_id": 3,
}

CASES: list[tuple[str, GGUFMetadata, bool, list[str]]] = [
    ("base model, no template", meta(), False, ["completion"]),
    ("gemma 3 template", meta(chat_template=GEMMA3), False, ["completion"]),
    ("llama 3.1 tools", meta(chat_template=LLAMA31), False, ["completion", "tools"]),
    ("qwen3 tools+thinking", meta(chat_template=QWEN3), False,
     ["completion", "tools", "thinking"]),
    ("deepseek r1 thinking", meta(chat_template=DEEPSEEK_R1), False, ["completion", "thinking"]),
    ("gpt-oss thinking", meta(chat_template=GPT_OSS), False, ["completion", "thinking"]),
    ("prose is not variables", meta(chat_template=PROSE_ONLY), False, ["completion"]),
    ("tiny default template", meta(chat_template=DEFAULT_TEMPLATE), False,
     ["completion", "tools"]),
    ("pooling mean", meta(pooling_type=1), False, ["embedding"]),
    ("pooling cls", meta(pooling_type=2), False, ["embedding"]),
    ("pooling last", meta(pooling_type=3, chat_template=QWEN3), False, ["embedding"]),
    ("pooling rank", meta(pooling_type=4), False, ["embedding"]),
    ("pooling none on llama", meta(pooling_type=0), False, ["completion"]),
    ("bert without pooling key", meta(architecture="bert"), False, ["embedding"]),
    ("nomic-bert", meta(architecture="nomic-bert", pooling_type=1), False, ["embedding"]),
    ("gemma-embedding", meta(architecture="gemma-embedding"), False, ["embedding"]),
    ("own vision tower", meta(has_vision_encoder=True, chat_template=LLAMA31), False,
     ["completion", "vision", "tools"]),
    ("projector alongside", meta(chat_template=QWEN3), True,
     ["completion", "tools", "vision", "thinking"]),
    ("projector, vision already known", meta(has_vision_encoder=True), True,
     ["completion", "vision"]),
    ("FIM tokens", meta(model_info=FIM), False, ["completion", "insert"]),
    ("old FIM key names", meta(model_info=OLD_FIM), False, ["completion", "insert"]),
    ("FIM prefix only", meta(model_info={"tokenizer.ggml.fim_pre_token_id": 1}), False,
     ["completion"]),
    ("everything", meta(model_info=FIM, chat_template=QWEN3), True,
     ["completion", "tools", "insert", "vision", "thinking"]),
    ("mmproj file", meta(architecture="clip", is_projector=True, has_vision_encoder=True),
     False, []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("meta_", "has_projector", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_capabilities(meta_: GGUFMetadata, has_projector: bool, expected: list[str]) -> None:
    assert capabilities(meta_, has_projector=has_projector) == expected


def test_predicates() -> None:
    assert supports_tools(meta(chat_template=QWEN3))
    assert not supports_tools(meta(chat_template=GEMMA3))
    assert supports_thinking(meta(chat_template=QWEN3))
    assert not supports_thinking(meta(chat_template=LLAMA31))
    assert not supports_tools(meta()) and not supports_thinking(meta())
    assert supports_insert(meta(model_info=FIM))
    assert is_embedding_model(meta(pooling_type=1))
    assert not is_embedding_model(meta(pooling_type=0))


def test_thinking_tags_in_output_text_count() -> None:
    """A template that emits <think> itself (outside any variable) still handles reasoning."""
    template = "{% for m in messages %}{{ m.content }}{% endfor %}<|assistant|>\n<think>\n"
    assert supports_thinking(meta(chat_template=template))


def test_capabilities_of_generated_files(tmp_path: Path) -> None:
    tiny = read_metadata(write_tiny_gguf(tmp_path / "tiny.gguf"))
    assert capabilities(tiny) == ["completion", "tools"]
    assert capabilities(tiny, has_projector=True) == ["completion", "tools", "vision"]
    no_template = read_metadata(write_tiny_gguf(tmp_path / "plain.gguf", chat_template=None))
    assert capabilities(no_template) == ["completion"]
    embed = read_metadata(write_embedding_gguf(tmp_path / "embed.gguf"))
    assert capabilities(embed) == ["embedding"]
    unpooled = read_metadata(write_embedding_gguf(tmp_path / "bert.gguf", pooling_type=None))
    assert capabilities(unpooled) == ["embedding"]
    mmproj = read_metadata(write_mmproj_gguf(tmp_path / "mmproj.gguf"))
    assert capabilities(mmproj) == []


# Ollama's format.HumanNumber, including the cases from its format_test.go.
@pytest.mark.parametrize(
    ("count", "label"),
    [
        (0, "0"),
        (999, "999"),
        (1_000, "1K"),
        (1_500, "2K"),
        (120_640, "121K"),
        (1_000_000, "1M"),
        (125_000_000, "125M"),
        (136_731_648, "136.73M"),
        (268_098_176, "268.10M"),
        (500_500_000, "500.50M"),
        (500_550_000, "500.55M"),
        (1_000_000_000, "1B"),
        (2_800_000_000, "2.8B"),
        (2_850_000_000, "2.9B"),
        (3_212_749_888, "3.2B"),
        (7_615_616_512, "7.6B"),
        (1_000_000_000_000, "1000B"),
    ],
)
def test_parameter_size_label(count: int, label: str) -> None:
    assert parameter_size_label(meta(parameter_count=count)) == label


def test_parameter_size_label_without_a_count() -> None:
    assert parameter_size_label(meta(size_label="270M")) == "270M"
    assert parameter_size_label(meta()) == "unknown"
