"""Pure parts of the OpenAI routes: LM Studio's `ttl` field and Ollama-style model owners."""

from __future__ import annotations

from typing import Any

import pytest

from llamarunner.core.errors import BadRequestError
from llamarunner.proxy.openai.routes import ollama_owner, requested_ttl


@pytest.mark.parametrize(("body", "ttl"), [
    ({}, None),
    ({"ttl": None}, None),
    ({"ttl": 0}, 0.0),
    ({"ttl": 300}, 300.0),
    ({"ttl": 1.5}, 1.5),
    ({"ttl": 86400 * 365}, 86400.0 * 365),
    ({"model": "x", "ttl": 60, "stream": True}, 60.0),
])
def test_ttl_accepted(body: dict[str, Any], ttl: float | None) -> None:
    assert requested_ttl(body) == ttl


@pytest.mark.parametrize("value", [
    -1, -0.5, "300", "5m", True, False, [300], {"seconds": 1},
    float("nan"), float("inf"), float("-inf"), 10**400,
])
def test_ttl_refused_with_a_message_that_says_what_to_send(value: Any) -> None:
    with pytest.raises(BadRequestError) as refused:
        requested_ttl({"ttl": value})
    assert refused.value.status == 400
    assert refused.value.param == "ttl"
    assert "'ttl' must be a number of seconds, 0 or more" in refused.value.message


def test_a_huge_ttl_is_shown_shortened() -> None:
    with pytest.raises(BadRequestError) as refused:
        requested_ttl({"ttl": "x" * 500})
    assert len(refused.value.message) < 250


@pytest.mark.parametrize(("name", "owner"), [
    ("smollm2-135m-instruct", "library"),
    ("smollm2-135m-instruct:latest", "library"),
    ("llama3:8b", "library"),
    ("bartowski/Qwen2.5-0.5B", "bartowski"),
    ("hf.co/bartowski/Qwen2.5-0.5B:Q4_K_M", "bartowski"),
    ("/odd-name", "library"),
])
def test_ollama_owner(name: str, owner: str) -> None:
    assert ollama_owner(name) == owner
