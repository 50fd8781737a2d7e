"""What the replays read from the app's answers, as each client reads it."""

from __future__ import annotations

from typing import Any

import pytest

from llamarunner.doctor.checks import (
    CLIENTS,
    can_chat,
    context_length,
    find_listed,
    num_ctx_parameter,
    strip_latest,
)


def test_the_clients_and_their_order() -> None:
    assert [name for name, _ in CLIENTS] == [
        "GitHub Copilot", "Open WebUI", "JetBrains AI Assistant", "Continue", "OpenAI SDK"]


@pytest.mark.parametrize(("name", "expected"), [
    ("tiny:latest", "tiny"), ("tiny", "tiny"), ("tiny:q4", "tiny:q4"), ("latest", "latest"),
])
def test_strip_latest(name: str, expected: str) -> None:
    assert strip_latest(name) == expected


@pytest.mark.parametrize(("listed", "wanted", "expected"), [
    (["a:latest", "tiny:latest"], "tiny", "tiny:latest"),
    (["a", "tiny"], "tiny:latest", "tiny"),
    (["Tiny:latest"], "tiny", "Tiny:latest"),  # any case, as the app resolves names
    (["tiny", "tiny:latest"], "tiny:latest", "tiny:latest"),  # exact first
    (["a", "b"], "tiny", None),
    ([], "tiny", None),
])
def test_find_listed(listed: list[str], wanted: str, expected: str | None) -> None:
    assert find_listed(listed, wanted) == expected


@pytest.mark.parametrize(("show", "expected"), [
    ({"capabilities": ["completion", "tools"], "template": "{{ messages }}"}, True),
    ({"capabilities": ["completion"], "template": ""}, False),  # no chat template
    ({"capabilities": ["embedding"], "template": "{{ x }}"}, False),
    ({"capabilities": "completion", "template": "x"}, False),
    ({}, False),
])
def test_can_chat(show: dict[str, Any], expected: bool) -> None:
    assert can_chat(show) is expected


@pytest.mark.parametrize(("model_info", "expected"), [
    ({"general.architecture": "llama", "llama.context_length": 1024}, 1024),
    ({"general.architecture": "gemma3", "gemma3.context_length": 32768}, 32768),
    ({"general.architecture": "llama"}, None),
    ({"llama.context_length": 1024}, None),  # no architecture: Copilot finds nothing
    ({"general.architecture": "llama", "llama.context_length": "1024"}, None),
    ({"general.architecture": "llama", "llama.context_length": True}, None),
    (None, None),
])
def test_context_length(model_info: Any, expected: int | None) -> None:
    assert context_length({"model_info": model_info}) == expected


@pytest.mark.parametrize(("parameters", "expected"), [
    ("num_ctx                        1024\nstop                           \"<end>\"", 1024),
    ("stop \"x\"", None),
    ("num_ctx lots", None),
    ("", None),
    (None, None),
])
def test_num_ctx_parameter(parameters: Any, expected: int | None) -> None:
    assert num_ctx_parameter({"parameters": parameters}) == expected
