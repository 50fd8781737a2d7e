"""What a model can be asked to do, in Ollama's capability vocabulary and order."""

from __future__ import annotations

import re
from typing import Final

from .metadata import GGUFMetadata

__all__ = [
    "EMBEDDING_ARCHITECTURES",
    "capabilities",
    "is_embedding_model",
    "supports_insert",
    "supports_thinking",
    "supports_tools",
]

# Architectures llama.cpp only runs as encoders: they embed even when a converter left
# out <arch>.pooling_type.
EMBEDDING_ARCHITECTURES: Final = frozenset(
    {
        "bert",
        "modern-bert",
        "nomic-bert",
        "nomic-bert-moe",
        "neo-bert",
        "jina-bert-v2",
        "jina-bert-v3",
        "gemma-embedding",
        "t5encoder",
    }
)
_POOLING_NONE: Final = 0

# The template is Jinja: only its code ({{ ... }} and {% ... %}) says which variables it
# reads; the text around it is output and may mention anything.
_JINJA_CODE: Final = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_TOOLS_VARS: Final = re.compile(r"\b(?:tools|tool_calls)\b")
_THINKING_VARS: Final = re.compile(
    r"\b(?:enable_thinking|thinking|reasoning_content|reasoning_effort|thinking_budget)\b"
)
# Reasoning markers a template emits or strips: DeepSeek-R1/Qwen3 <think>, Magistral
# [THINK], Seed-OSS <seed:think>.
_THINKING_TAGS: Final = re.compile(r"</?think>|\[/?THINK\]|<seed:think>")

# llama-server's /infill needs all three FIM tokens; older converters used the
# prefix/suffix/middle names for the same ids.
_FIM_KEYS: Final = (
    ("tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.prefix_token_id"),
    ("tokenizer.ggml.fim_suf_token_id", "tokenizer.ggml.suffix_token_id"),
    ("tokenizer.ggml.fim_mid_token_id", "tokenizer.ggml.middle_token_id"),
)


def capabilities(meta: GGUFMetadata, *, has_projector: bool = False) -> list[str]:
    """Ollama's ``capabilities`` list for this model.

    Order follows Ollama's server/images.go: "completion" or "embedding" (never both),
    "vision" from the model's own vision tower, "tools", "insert", "vision" from a
    projector file, then "thinking". A projector file on its own can do nothing.
    Tools, insert and thinking are only offered by generative models: an embedding model
    served for embeddings ignores its chat template.
    """
    if meta.is_projector:
        return []
    caps: list[str] = []
    embedding = is_embedding_model(meta)
    caps.append("embedding" if embedding else "completion")
    if meta.has_vision_encoder:
        caps.append("vision")
    if not embedding and supports_tools(meta):
        caps.append("tools")
    if not embedding and supports_insert(meta):
        caps.append("insert")
    if has_projector and "vision" not in caps:
        caps.append("vision")
    if not embedding and supports_thinking(meta):
        caps.append("thinking")
    return caps


def is_embedding_model(meta: GGUFMetadata) -> bool:
    """True for models that produce embeddings rather than text."""
    if meta.pooling_type is not None:
        return meta.pooling_type != _POOLING_NONE or meta.architecture in EMBEDDING_ARCHITECTURES
    return meta.architecture in EMBEDDING_ARCHITECTURES


def supports_tools(meta: GGUFMetadata) -> bool:
    """The chat template reads ``tools`` or renders ``tool_calls``."""
    return _template_code_matches(meta.chat_template, _TOOLS_VARS)


def supports_thinking(meta: GGUFMetadata) -> bool:
    """The chat template handles reasoning (a thinking switch, field or tags)."""
    template = meta.chat_template
    if not template:
        return False
    return bool(_THINKING_TAGS.search(template)) or _template_code_matches(template, _THINKING_VARS)


def supports_insert(meta: GGUFMetadata) -> bool:
    """The vocabulary names fill-in-the-middle tokens, so llama-server's /infill works.

    Only the metadata keys are checked: llama.cpp can also find FIM tokens by their text
    in the vocabulary, which this header-only view does not read.
    """
    info = meta.model_info
    return all(any(info.get(key) is not None for key in names) for names in _FIM_KEYS)


def _template_code_matches(template: str | None, pattern: re.Pattern[str]) -> bool:
    if not template:
        return False
    return any(pattern.search(code.group()) for code in _JINJA_CODE.finditer(template))
