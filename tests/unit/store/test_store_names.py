"""Ollama model names: what parses to which parts, and what is refused (and why)."""

from __future__ import annotations

import pytest

from llamarunner.store.errors import InvalidNameError
from llamarunner.store.names import ModelName, parse_name


@pytest.mark.parametrize(
    ("text", "parts", "display"),
    [
        ("tiny", ("registry.ollama.ai", "library", "tiny", "latest"), "tiny:latest"),
        ("llama3.2:3b", ("registry.ollama.ai", "library", "llama3.2", "3b"), "llama3.2:3b"),
        ("jmorgan/tiny:q4", ("registry.ollama.ai", "jmorgan", "tiny", "q4"), "jmorgan/tiny:q4"),
        ("hf.co/bartowski/Llama-3.2-1B-GGUF:Q4_K_M",
         ("hf.co", "bartowski", "Llama-3.2-1B-GGUF", "Q4_K_M"),
         "hf.co/bartowski/Llama-3.2-1B-GGUF:Q4_K_M"),
        ("localhost:5000/team/model", ("localhost:5000", "team", "model", "latest"),
         "localhost:5000/team/model:latest"),
        ("https://example.com/a/b:c", ("example.com", "a", "b", "c"), "example.com/a/b:c"),
        ("_x/_y:_z", ("registry.ollama.ai", "_x", "_y", "_z"), "_x/_y:_z"),
    ],
)
def test_names_parse_with_ollamas_defaults(text: str, parts: tuple[str, ...],
                                           display: str) -> None:
    name = parse_name(text)
    assert name.parts == parts
    assert name.display == display


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "model is required"),
        (None, "model is required"),
        (42, "model is required"),
        ("../etc/passwd", "host '..' must start"),
        ("a/../b", "namespace '..' must start"),
        ("../b", "namespace '..' must start"),
        ("a..b", "contains '..'"),
        ("tiny:a..b", "tag 'a..b' contains '..'"),
        ("tiny:", "tag is empty"),
        ("/tiny", "namespace is empty"),
        ("a/b/c/d", "more than three"),
        ("lib.rary/tiny", "namespace 'lib.rary' may only hold"),
        ("ti ny", "may only hold"),
        ("ti\\ny", "may only hold"),
        ("-tiny", "must start with"),
        ("x" * 81, "longer than 80"),
        ("tiny:" + "t" * 81, "longer than 80"),
        ("tiny@sha256:abc", "by digest"),
        ("ftp://host/a/b", "unknown scheme"),
        ("host:port/a/b", "bad port"),
        ("host:123456/a/b", "bad port"),
    ],
)
def test_bad_names_say_which_part_is_wrong(text: object, reason: str) -> None:
    with pytest.raises(InvalidNameError) as refused:
        parse_name(text)
    assert reason in refused.value.message
    assert refused.value.status == 400


def test_http_scheme_is_kept_and_names_compare_caselessly() -> None:
    assert parse_name("http://localhost:5000/a/b").scheme == "http"
    assert parse_name("Tiny:Latest").same(ModelName("registry.ollama.ai", "library", "tiny",
                                                    "latest"))
    assert parse_name("hf.co/a/b").is_huggingface
    assert parse_name("huggingface.co/a/b").is_huggingface
    assert not parse_name("a/b").is_huggingface
