"""Ollama model views built from metadata: names, times, context, VRAM share, ps entries."""

from __future__ import annotations

import math
import re

import pytest
from ollama._types import ProcessResponse

from llamarunner.proxy.ollama.views import (
    context_length,
    file_digest,
    ollama_name,
    parameters_text,
    ps_entry,
    rfc3339,
    vram_share,
)


@pytest.mark.parametrize("name,shown", [("gemma", "gemma:latest"), ("qwen:7b", "qwen:7b"),
                                         ("org/m", "org/m:latest")])
def test_names_always_carry_a_tag(name: str, shown: str) -> None:
    assert ollama_name(name) == shown


def test_rfc3339_has_nanoseconds_and_utc() -> None:
    assert re.fullmatch(r"2023-11-14T22:13:20\.\d{9}Z", rfc3339(1_700_000_000.25))
    assert rfc3339(1_700_000_000.25).startswith("2023-11-14T22:13:20.250000")


def test_digest_is_stable_and_changes_with_the_file() -> None:
    one = file_digest("/m.gguf", 10, 5)
    assert re.fullmatch(r"[0-9a-f]{64}", one)
    assert one == file_digest("/m.gguf", 10, 5)
    assert one != file_digest("/m.gguf", 11, 5) != file_digest("/m.gguf", 10, 6)


@pytest.mark.parametrize("args,served,expected", [
    ({"ctx-size": 2048}, None, 2048),
    ({"c": 1024}, None, 1024),
    ({}, None, None),  # no metadata, nothing configured
    ({"ctx-size": 2048}, 4096, 4096),  # what llama-server reports wins
    ({"ctx-size": True}, None, None),
])
def test_context_length(args, served, expected) -> None:
    assert context_length(args, None, served) == expected


def test_parameters_use_ollama_names() -> None:
    text = parameters_text({"ctx-size": 4096, "threads": 2, "jinja": True, "temp": 0.7})
    assert text.splitlines() == [
        "num_ctx                       4096",
        "num_thread                    2",
        "temperature                   0.7",
    ]


@pytest.mark.parametrize("lines,expected", [
    (["load_tensors: offloaded 12/24 layers to GPU"], 500),
    (["offloaded 0/24 layers to GPU"], 0),
    (["nothing about GPUs"], 0),
    (["offloaded 24/24 layers to GPU", "other"], 1000),
])
def test_vram_share_from_llama_server_output(lines, expected) -> None:
    assert vram_share(lines, 1000) == expected


def test_ps_entry_parses_with_the_official_client() -> None:
    forever = ps_entry("m", None, size=5, digest="a" * 64, expires_at=math.inf, context=256,
                       size_vram=0)
    soon = ps_entry("m", None, size=5, digest="a" * 64, expires_at=1_700_000_000.0,
                    context=None, size_vram=0)
    parsed = ProcessResponse.model_validate({"models": [forever, soon]})
    assert parsed.models[0].expires_at.year > 2200
    assert parsed.models[1].context_length == 0
