"""Which chat template each model uses: setting, the GGUF's own, its family's, or none.

Order: the model's ``chat_template`` setting (or a chat-template flag in its args) → the
GGUF's own ``tokenizer.chat_template`` → the family template picked from
``general.architecture`` and the model's name → none. A model without a template cannot
chat: llama-server would silently fall back to ChatML, and a model trained on other turns
answers with foreign tokens.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final, Literal

from .metadata import GGUFMetadata

__all__ = [
    "BUILTIN_TEMPLATES",
    "FAMILY_RULES",
    "FAMILY_TEMPLATES",
    "ChatTemplate",
    "FamilyRule",
    "family_template",
    "resolve_chat_template",
    "template_file",
]

TemplateSource = Literal["setting", "file", "layer", "family", "none", "peer"]

# Our own Jinja templates, one file per family, shipped with the package.
TEMPLATE_DIR: Final = Path(__file__).parent / "chat_templates"
FAMILY_TEMPLATES: Final = frozenset(
    {"chatml", "gemma", "llama2", "llama3", "mistral", "mistral-v7", "phi3"}
)
# llama-server's built-in template names (src/llama-chat.cpp). They only work with Jinja
# off: with it on, `--chat-template NAME` is read as Jinja source and every prompt becomes
# the literal NAME. Names we have a file for use the file instead and keep Jinja (tools).
BUILTIN_TEMPLATES: Final = frozenset(
    {
        "chatml", "llama2", "llama2-sys", "llama2-sys-bos", "llama2-sys-strip", "mistral-v1",
        "mistral-v3", "mistral-v3-tekken", "mistral-v7", "mistral-v7-tekken", "phi3", "phi4",
        "falcon3", "zephyr", "monarch", "gemma", "orion", "openchat", "vicuna", "vicuna-orca",
        "deepseek", "deepseek2", "deepseek3", "command-r", "llama3", "chatglm3", "chatglm4",
        "glmedge", "minicpm", "exaone3", "exaone4", "rwkv-world", "granite", "gigachat",
        "megrez", "yandex", "bailing", "bailing-think", "bailing2", "llama4", "smolvlm",
        "hunyuan-moe", "gpt-oss", "hunyuan-dense", "kimi-k2", "seed_oss", "grok-2",
        "pangu-embedded", "solar-open",
    }
)
# The llama-server flags that choose a template; a model's args may carry them directly.
TEMPLATE_FLAGS: Final = ("chat-template", "chat-template-file")


@dataclass(frozen=True)
class FamilyRule:
    """Models of these architectures (and, when given, whose name matches) use `template`."""

    architectures: frozenset[str]
    template: str
    name_pattern: re.Pattern[str] | None = None

    def matches(self, architecture: str, names: str) -> bool:
        if architecture not in self.architectures:
            return False
        return self.name_pattern is None or bool(self.name_pattern.search(names))


def _rule(architectures: str, template: str, name_pattern: str | None = None) -> FamilyRule:
    pattern = re.compile(name_pattern, re.IGNORECASE) if name_pattern else None
    return FamilyRule(frozenset(architectures.split()), template, pattern)


# First match wins. Architecture alone decides where it names one family; the generic
# "llama" architecture (Llama 2 and 3, Mistral, SmolLM...) needs the model's name.
FAMILY_RULES: Final = (
    _rule("gemma gemma2 gemma3 gemma3n", "gemma"),
    _rule("qwen qwen2 qwen2moe qwen2vl qwen3 qwen3moe internlm2", "chatml"),
    _rule("phi3", "phi3"),
    _rule("mistral3", "mistral-v7"),
    _rule("llama", "llama3", r"llama[\s_.-]*3"),
    _rule("llama", "llama2", r"llama[\s_.-]*2"),
    _rule("llama", "mistral", r"mistral|mixtral|ministral"),
    _rule("llama", "chatml", r"smollm|qwen"),
)
# An Ollama template layer is Go template text, which llama-server cannot run; its turn
# markers say which of our templates renders the same turns. First match wins.
LAYER_MARKERS: Final = (
    (("<start_of_turn>",), "gemma"),
    (("<|start_header_id|>",), "llama3"),
    (("<|im_start|>",), "chatml"),
    (("[SYSTEM_PROMPT]",), "mistral-v7"),
    (("<<SYS>>",), "llama2"),
    (("[INST]",), "mistral"),
    (("<|assistant|>", "<|end|>"), "phi3"),
    (("<|assistant|>", "</s>"), "zephyr"),
)
# Llama 3's vocabulary: the name is often just "Meta Llama" or a fine-tune's own.
_LLAMA3_VOCAB_SIZES: Final = frozenset({128256, 128000})


@dataclass(frozen=True)
class ChatTemplate:
    """The chat template a model's llama-server is started with, and where it came from.

    ``source``: "setting" (the model's ``chat_template`` in the config or a chat-template
    flag in its args), "file" (the GGUF's own ``tokenizer.chat_template``), "family" (ours,
    picked from the architecture and name), "peer" (the peer server that runs the model
    applies its own) or "none" (the model cannot chat).
    ``name`` is the built-in or family template's name, ``text`` the Jinja source when
    known, ``path`` a Jinja file for ``--chat-template-file``, ``builtin`` a name for
    ``--no-jinja --chat-template``, ``problem`` why the model cannot chat.
    """

    source: TemplateSource
    name: str | None = None
    text: str | None = None
    path: str | None = None
    builtin: str | None = None
    problem: str | None = None

    @property
    def can_chat(self) -> bool:
        return self.source != "none"

    def describe(self) -> str:
        """A short label for listings: "file", "family (gemma)", "setting (chatml)", "none"."""
        if self.name and self.source in ("family", "setting", "layer"):
            return f"{self.source} ({self.name})"
        return self.source

    def runner_args(self) -> tuple[dict[str, str | bool], tuple[str, ...]]:
        """The llama-server flags that apply this template: (flags to add, flags to drop)."""
        if self.path:
            return {"chat-template-file": self.path}, ("chat-template",)
        if self.builtin:
            return {"chat-template": self.builtin, "no-jinja": True}, ("jinja",
                                                                       "chat-template-file")
        return {}, ()


def template_file(name: str) -> Path:
    """Our Jinja file for a family template name."""
    return TEMPLATE_DIR / f"{name}.jinja"


@cache
def _family_text(name: str) -> str:
    return template_file(name).read_text(encoding="utf-8")


def family_template(meta: GGUFMetadata) -> str | None:
    """The family template name for a model, from its architecture and names, or None."""
    architecture = (meta.architecture or "").lower()
    names = " ".join(n for n in (meta.basename, meta.name) if n)
    for rule in FAMILY_RULES:
        if rule.matches(architecture, names):
            return rule.template
    if (architecture == "llama" and meta.tokenizer_model == "gpt2"
            and meta.vocab_size in _LLAMA3_VOCAB_SIZES):
        return "llama3"
    return None


def layer_template(go_template: str) -> str | None:
    """Our template with the turns of an Ollama template layer, or None when unknown."""
    for markers, name in LAYER_MARKERS:
        if all(marker in go_template for marker in markers):
            return name
    return None


def resolve_chat_template(
    setting: str | None,
    args: Mapping[str, object],
    meta: GGUFMetadata | None,
    ollama_template: str | None = None,
) -> ChatTemplate:
    """The template a model uses. `setting` is its ``chat_template``; `args` its flags;
    `ollama_template` the template layer of its Ollama manifest, if any."""
    if setting:
        return _from_setting(setting)
    for flag in TEMPLATE_FLAGS:
        value = args.get(flag)
        if isinstance(value, str) and value:
            if flag == "chat-template-file":
                return _from_file_setting(value)
            # A built-in name given as a flag gets the same care as the setting; other
            # text is Jinja source the user wrote out.
            if value in FAMILY_TEMPLATES or value in BUILTIN_TEMPLATES:
                return _from_setting(value)
            return ChatTemplate("setting", text=value)
    if meta is None:
        # Unreadable header: llama-server is the judge of this file, and of its template.
        return ChatTemplate("file")
    if meta.chat_template:
        return ChatTemplate("file", text=meta.chat_template)
    layer = layer_template(ollama_template) if ollama_template else None
    if layer is not None:
        return _named("layer", layer)
    family = family_template(meta)
    if family is not None:
        return ChatTemplate("family", name=family, text=_family_text(family),
                            path=str(template_file(family)))
    return ChatTemplate("none", problem=_no_template_reason(meta))


def _from_setting(setting: str) -> ChatTemplate:
    if setting in FAMILY_TEMPLATES or setting in BUILTIN_TEMPLATES:
        return _named("setting", setting)
    return _from_file_setting(setting)


def _named(source: TemplateSource, name: str) -> ChatTemplate:
    """A template by name: our file when we have one, else llama-server's built-in."""
    if name in FAMILY_TEMPLATES:
        return ChatTemplate(source, name=name, text=_family_text(name),
                            path=str(template_file(name)))
    return ChatTemplate(source, name=name, builtin=name)


def _from_file_setting(value: str) -> ChatTemplate:
    path = os.path.expanduser(value)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return ChatTemplate(
            "none",
            problem=f"its chat template {os.path.basename(path)!r} is neither a built-in "
                    f"template name nor a readable Jinja file ({reason})",
        )
    return ChatTemplate("setting", text=text, path=path)


def _no_template_reason(meta: GGUFMetadata) -> str:
    architecture = meta.architecture or "unknown"
    return (f"its GGUF file has no chat template and its architecture ({architecture}) is "
            "not a model family with a known template")
