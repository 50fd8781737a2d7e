"""Chat template resolution: setting, the GGUF's own, the family table, none."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from llamarunner.config.schema import ModelConfig
from llamarunner.library.auto_settings import auto_configure
from llamarunner.library.chat_template import (
    BUILTIN_TEMPLATES,
    FAMILY_RULES,
    FAMILY_TEMPLATES,
    LAYER_MARKERS,
    family_template,
    layer_template,
    resolve_chat_template,
    template_file,
)
from llamarunner.library.metadata import GGUFMetadata

BASE = GGUFMetadata(
    path="/models/m.gguf", file_size=1, mtime_ns=1, version=3, architecture="llama",
    name=None, basename=None, size_label=None, parameter_count=None, file_type=15,
    quantization="Q4_K_M", context_length=4096, embedding_length=64, block_count=2,
    head_count=4, head_count_kv=4, feed_forward_length=128, vocab_size=300,
    tokenizer_model="llama", bos_token_id=1, eos_token_id=2, chat_template=None,
    pooling_type=None, is_projector=False, projector_type=None, has_vision_encoder=False,
    model_info={},
)


def meta(**changes: object) -> GGUFMetadata:
    return dataclasses.replace(BASE, **changes)  # type: ignore[arg-type]


# One row per family rule, plus the names that must not match.
FAMILY_CASES = [
    ("gemma", None, "gemma"),
    ("gemma2", None, "gemma"),
    ("gemma3", "gemma-3", "gemma"),
    ("gemma3n", None, "gemma"),
    ("qwen2", "Qwen2.5", "chatml"),
    ("qwen3", None, "chatml"),
    ("qwen3moe", None, "chatml"),
    ("qwen2moe", None, "chatml"),
    ("qwen2vl", None, "chatml"),
    ("qwen", None, "chatml"),
    ("internlm2", None, "chatml"),
    ("phi3", "Phi 3 Mini", "phi3"),
    ("mistral3", "Mistral Small", "mistral-v7"),
    ("llama", "Meta-Llama-3.1", "llama3"),
    ("llama", "Llama 3.2", "llama3"),
    ("llama", "Llama-2-7b-chat", "llama2"),
    ("llama", "Mistral-7B-Instruct-v0.3", "mistral"),
    ("llama", "Mixtral", "mistral"),
    ("llama", "Ministral", "mistral"),
    ("llama", "SmolLM2", "chatml"),
    ("llama", "DeepSeek-R1-Distill-Qwen", "chatml"),
    ("llama", "tiny", None),
    ("llama", None, None),
    ("bert", "all-MiniLM", None),
    ("falcon", None, None),
]


@pytest.mark.parametrize(("architecture", "basename", "expected"), FAMILY_CASES)
def test_family_table(architecture: str, basename: str | None, expected: str | None) -> None:
    assert family_template(meta(architecture=architecture, basename=basename)) == expected


def test_every_family_rule_has_a_row_and_a_template_file() -> None:
    covered = {(a, e) for a, _, e in FAMILY_CASES}
    for rule in FAMILY_RULES:
        assert any(arch in rule.architectures and e == rule.template for arch, e in covered)
        assert template_file(rule.template).is_file()
    for name in FAMILY_TEMPLATES:
        assert template_file(name).is_file()


def test_llama3_is_known_by_its_vocabulary_when_the_name_does_not_say() -> None:
    m = meta(name="My Finetune", tokenizer_model="gpt2", vocab_size=128256)
    assert family_template(m) == "llama3"


def test_the_files_own_template_beats_the_family() -> None:
    result = resolve_chat_template(None, {}, meta(architecture="gemma3", chat_template="{{x}}"))
    assert (result.source, result.text, result.path) == ("file", "{{x}}", None)
    assert result.runner_args() == ({}, ())
    assert result.describe() == "file"


def test_a_family_template_is_passed_as_a_file() -> None:
    result = resolve_chat_template(None, {}, meta(architecture="gemma3"))
    assert result.source == "family" and result.name == "gemma"
    assert result.describe() == "family (gemma)"
    assert result.text and "<start_of_turn>" in result.text
    assert result.runner_args() == ({"chat-template-file": str(template_file("gemma"))},
                                    ("chat-template",))


def test_the_setting_beats_the_files_own_template() -> None:
    result = resolve_chat_template("chatml", {}, meta(chat_template="{{x}}"))
    assert result.source == "setting" and result.name == "chatml"
    assert result.path == str(template_file("chatml"))


def test_a_builtin_name_we_have_no_file_for_turns_jinja_off() -> None:
    # With Jinja on, llama-server reads --chat-template NAME as Jinja source.
    result = resolve_chat_template("zephyr", {}, meta())
    assert result.builtin == "zephyr" and result.can_chat
    assert result.runner_args() == ({"chat-template": "zephyr", "no-jinja": True},
                                    ("jinja", "chat-template-file"))


def test_a_jinja_file_setting(tmp_path: Path) -> None:
    jinja = tmp_path / "t.jinja"
    jinja.write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    result = resolve_chat_template(str(jinja), {}, meta())
    assert (result.source, result.path, result.describe()) == ("setting", str(jinja), "setting")
    assert result.text == jinja.read_text()


def test_a_missing_file_setting_means_no_chat_with_the_reason(tmp_path: Path) -> None:
    result = resolve_chat_template(str(tmp_path / "nope.jinja"), {}, meta())
    assert not result.can_chat
    assert result.problem and "nope.jinja" in result.problem
    assert str(tmp_path) not in result.problem  # shown to remote clients


def test_template_flags_in_args_count_as_the_setting(tmp_path: Path) -> None:
    assert resolve_chat_template(None, {"chat-template": "gemma"}, meta()).path == str(
        template_file("gemma"))
    assert resolve_chat_template(None, {"chat-template": "vicuna"}, meta()).builtin == "vicuna"
    own = resolve_chat_template(None, {"chat-template": "{{ messages }}"}, meta())
    assert (own.source, own.text, own.runner_args()) == ("setting", "{{ messages }}", ({}, ()))
    jinja = tmp_path / "x.jinja"
    jinja.write_text("x")
    assert resolve_chat_template(None, {"chat-template-file": str(jinja)}, meta()).text == "x"


def test_no_template_and_no_family_cannot_chat() -> None:
    result = resolve_chat_template(None, {}, meta(architecture="falcon"))
    assert not result.can_chat and result.describe() == "none"
    assert result.problem and "falcon" in result.problem


def test_an_unreadable_header_leaves_the_template_to_llama_server() -> None:
    assert resolve_chat_template(None, {}, None).can_chat


def test_builtin_names_include_the_ones_users_type() -> None:
    assert {"gemma", "llama3", "chatml", "phi3", "mistral-v7"} <= BUILTIN_TEMPLATES


# ---- auto_configure: what each model is started with


def model(**changes: object) -> ModelConfig:
    return dataclasses.replace(ModelConfig(name="m", path="/models/m.gguf"), **changes)  # type: ignore[arg-type]


def test_a_family_model_is_started_with_its_template_file() -> None:
    configured, template = auto_configure(model(args={"jinja": True}), meta(architecture="gemma3"))
    assert template.name == "gemma"
    assert configured.args == {"jinja": True,
                               "chat-template-file": str(template_file("gemma"))}


def test_a_builtin_setting_replaces_jinja_with_no_jinja() -> None:
    configured, _ = auto_configure(model(args={"jinja": True}, chat_template="vicuna"), meta())
    assert configured.args == {"chat-template": "vicuna", "no-jinja": True}


def test_a_model_with_its_own_template_is_left_alone() -> None:
    original = model(args={"ctx-size": 4096})
    configured, template = auto_configure(original, meta(chat_template="{{x}}"))
    assert configured is original and template.source == "file"


@pytest.mark.parametrize(("pooling_type", "architecture", "pooling"), [
    (1, "llama", "mean"), (2, "bert", "cls"), (3, "qwen3", "last"), (None, "nomic-bert", None),
])
def test_embedding_models_get_embedding_mode_and_pooling(
    pooling_type: int | None, architecture: str, pooling: str | None
) -> None:
    configured, template = auto_configure(
        model(), meta(architecture=architecture, pooling_type=pooling_type))
    expected: dict[str, object] = {"embedding": True}
    if pooling:
        expected["pooling"] = pooling
    assert configured.args == expected
    assert not template.can_chat and template.problem and "embedding" in template.problem


def test_the_users_own_embedding_and_pooling_flags_win() -> None:
    configured, _ = auto_configure(model(args={"embeddings": True, "pooling": "cls"}),
                                   meta(pooling_type=1))
    assert configured.args == {"embeddings": True, "pooling": "cls"}


def test_a_generative_model_is_not_put_in_embedding_mode() -> None:
    configured, _ = auto_configure(model(), meta(pooling_type=0, chat_template="{{x}}"))
    assert "embedding" not in configured.args


# ---- an Ollama manifest's template layer


LAYER_CASES = [
    ("<start_of_turn>user\n{{ .Prompt }}<end_of_turn>\n<start_of_turn>model\n", "gemma"),
    ("{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>", "llama3"),
    ("{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>", "chatml"),
    ("[SYSTEM_PROMPT]{{ .System }}[/SYSTEM_PROMPT][INST]{{ .Prompt }}[/INST]", "mistral-v7"),
    ("[INST] <<SYS>>{{ .System }}<</SYS>>\n\n{{ .Prompt }} [/INST]", "llama2"),
    ("[INST] {{ .Prompt }} [/INST]", "mistral"),
    ("<|user|>\n{{ .Prompt }}<|end|>\n<|assistant|>\n", "phi3"),
    ("<|user|>\n{{ .Prompt }}</s>\n<|assistant|>\n", "zephyr"),
    ("{{ .Prompt }}", None),
    ("### Instruction:\n{{ .Prompt }}\n### Response:\n", None),
]


@pytest.mark.parametrize(("go_template", "expected"), LAYER_CASES)
def test_layer_markers_name_our_template(go_template: str, expected: str | None) -> None:
    assert layer_template(go_template) == expected


def test_every_layer_marker_has_a_row() -> None:
    assert {name for _, name in LAYER_MARKERS} == {e for _, e in LAYER_CASES if e}


def test_the_template_layer_beats_the_family_guess_but_not_the_files_own() -> None:
    layer = "{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>{{ end }}"
    gemma = meta(architecture="gemma3")
    result = resolve_chat_template(None, {}, gemma, layer)
    assert (result.source, result.name, result.describe()) == ("layer", "chatml",
                                                               "layer (chatml)")
    assert result.path == str(template_file("chatml"))
    assert resolve_chat_template(None, {}, meta(chat_template="{{x}}"), layer).source == "file"
    # A layer whose turns we cannot tell leaves the family guess in place.
    assert resolve_chat_template(None, {}, gemma, "{{ .Prompt }}").name == "gemma"
    # A layer naming only llama-server's built-in turns gets Jinja off, like the setting.
    zephyr = "<|user|>\n{{ .Prompt }}</s>\n<|assistant|>\n"
    assert resolve_chat_template(None, {}, meta(), zephyr).builtin == "zephyr"
