"""Error answers read in every shape, the fix each failure gets, and the version gate."""

from __future__ import annotations

import json

import pytest

from llamarunner.doctor.advice import error_details, fix_for, problem_text, version_at_least
from llamarunner.doctor.target import Endpoint, Target

CHAT_REFUSAL = ("model 'plain' cannot chat: its GGUF file has no chat template. Set "
                "\"chat_template\" for it under models in the config")


@pytest.mark.parametrize(("body", "expected"), [
    (json.dumps({"error": "model 'x' not found"}), ("model 'x' not found", None)),  # Ollama
    (json.dumps({"error": {"message": "bad key", "type": "invalid_request_error",
                           "code": "invalid_api_key"}}), ("bad key", "invalid_api_key")),
    (json.dumps({"error": {"message": "no code", "code": None}}), ("no code", None)),
    (json.dumps({"error": {"message": "empty code", "code": ""}}), ("empty code", None)),
    (json.dumps({"detail": "Not Found"}), ('{"detail": "Not Found"}', None)),
    ("404 page not found", ("404 page not found", None)),
    ("", ("(empty answer)", None)),
    ("x" * 400, ("x" * 300 + "…", None)),
])
def test_error_details(body: str, expected: tuple[str, str | None]) -> None:
    assert error_details(body.encode()) == expected


@pytest.mark.parametrize(("message", "code", "expected"), [
    ("queue is full", "queue_full", "queue is full (queue_full)"),
    ("unauthorized", None, "unauthorized"),
    # The app's own advice is left out where the report gives a fix of its own.
    (CHAT_REFUSAL, "chat_not_supported",
     "model 'plain' cannot chat: its GGUF file has no chat template (chat_not_supported)"),
    (CHAT_REFUSAL, None, "model 'plain' cannot chat: its GGUF file has no chat template"),
])
def test_problem_text(message: str, code: str | None, expected: str) -> None:
    assert problem_text(message, code) == expected


def target(**fields: object) -> Target:
    return Target(Endpoint("ollama", "http://127.0.0.1:11434"),
                  Endpoint("lmstudio", "http://127.0.0.1:1234"), config_path="/c.json",
                  **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("status", "message", "code", "key", "wanted"), [
    (401, "unauthorized", None, {}, "the app wants an API key but /c.json has none"),
    (401, "unauthorized", None, {"api_key": "k", "key_source": "security.api_key"},
     "the key from security.api_key in /c.json was refused"),
    (401, "unauthorized", None, {"key_missing": "MY_KEY"},
     "security.api_key_env names MY_KEY, which is not set here"),
    (403, "host not allowed", None, {}, "security.allowed_hosts"),
    (404, "model 'tiny' not found", "model_not_found", {}, "`llamarunner models` lists"),
    (404, "model 'tiny' not found", None, {}, "`llamarunner models` lists"),
    (404, "404 page not found", None, {}, "another program (Ollama or LM Studio itself?)"),
    (400, CHAT_REFUSAL, "chat_not_supported", {}, "\"chat_template\" in models.tiny in /c.json"),
    (400, CHAT_REFUSAL, None, {}, "give the model a chat template"),
    (400, "messages must be a list", "invalid_request", {}, "please report this line"),
    (413, "too big", None, {}, "security.max_body_bytes"),
    (429, "queue is full", "queue_full", {}, "scheduler.max_queue"),
    (502, "llama-server for model 'tiny' failed", "runner_failed", {}, "Logs window"),
    (503, "runtime 'default' not found", "runtime_not_found", {}, "llamarunner runtime list"),
    (504, "no first token", None, {}, "scheduler.first_token_timeout in /c.json"),
])
def test_fix_for(status: int, message: str, code: str | None, key: dict[str, str],
                 wanted: str) -> None:
    assert wanted in fix_for(status, message, code, path="/api/chat", target=target(**key),
                             model="tiny")


@pytest.mark.parametrize(("version", "minimum", "expected"), [
    ("0.13.0", "0.6.4", True),  # numbers, not text: 13 > 6
    ("0.6.4", "0.6.4", True),
    ("0.6.3", "0.6.4", False),
    ("0.6", "0.6.4", False),
    ("0.6.4.1", "0.6.4", True),
    ("1.0", "0.6.4", True),
    ("0.6.4-rc1", "0.6.4", True),  # a part's leading digits count
    ("v0.7.0", "0.6.4", True),
    ("0.0.0", "0.6.4", False),
    ("garbage", "0.6.4", False),
])
def test_version_at_least(version: str, minimum: str, expected: bool) -> None:
    assert version_at_least(version, minimum) is expected
