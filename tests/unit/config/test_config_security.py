"""The `security` config section: defaults, validation with key paths, round trip, diff."""

from __future__ import annotations

import json

import pytest

from llamarunner.config import ConfigValidationError, diff_configs, parse_config
from llamarunner.config.schema import SecurityConfig


def problems(data: dict[str, object]) -> list[tuple[str, str, int | None]]:
    text = json.dumps(data, indent=2)
    with pytest.raises(ConfigValidationError) as info:
        parse_config(data, text=text)
    return [(p.path, p.message, p.line) for p in info.value.problems]


def test_defaults() -> None:
    security = parse_config({}).security
    assert security == SecurityConfig()
    assert security.api_key == "" and security.api_key_env == ""
    assert security.allowed_hosts == () and security.cors_origins == ()
    assert security.max_body_bytes == 33554432
    assert security.body_timeout == 60.0


def test_a_full_section_parses() -> None:
    security = parse_config({"security": {
        "api_key": "k" * 16,
        "allowed_hosts": ["My-PC.local.", "[::1]", "10.0.0.5"],
        "cors_origins": ["https://app.example.com", "http://*.example.com:*", "*"],
        "max_body_bytes": 2048,
        "body_timeout": "2m",
    }}).security
    assert security.resolved_api_key() == "k" * 16
    assert security.allowed_hosts == ("my-pc.local", "[::1]", "10.0.0.5")
    assert security.cors_origins == ("https://app.example.com", "http://*.example.com:*", "*")
    assert (security.max_body_bytes, security.body_timeout) == (2048, 120.0)


def test_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    security = parse_config({"security": {"api_key_env": "LR_TEST_KEY"}}).security
    monkeypatch.delenv("LR_TEST_KEY", raising=False)
    assert security.resolved_api_key() == ""
    monkeypatch.setenv("LR_TEST_KEY", "from-the-environment")
    assert security.resolved_api_key() == "from-the-environment"


@pytest.mark.parametrize(("section", "path", "message"), [
    ({"api_key": "short"}, "security.api_key", "use at least 16 characters"),
    ({"api_key": 12345678901234567}, "security.api_key", "must be a string"),
    ({"api_key": " " + "k" * 16}, "security.api_key", "remove the spaces"),
    ({"api_key_env": "NOT A NAME"}, "security.api_key_env", "environment variable name"),
    ({"api_key": "k" * 16, "api_key_env": "KEY"}, "security.api_key_env", "not both"),
    ({"allowed_hosts": "my-pc"}, "security.allowed_hosts", "must be a list"),
    ({"allowed_hosts": ["http://my-pc"]}, "security.allowed_hosts[0]", "host names"),
    ({"allowed_hosts": ["my-pc:8080"]}, "security.allowed_hosts[0]", "no scheme or port"),
    ({"cors_origins": ["example.com"]}, "security.cors_origins[0]", "must look like"),
    ({"cors_origins": ["https://a.example/path"]}, "security.cors_origins[0]",
     "must look like"),
    ({"cors_origins": [7]}, "security.cors_origins[0]", "not the number 7"),
    ({"max_body_bytes": 10}, "security.max_body_bytes", "1024 or more"),
    ({"max_body_bytes": "32MiB"}, "security.max_body_bytes", "whole number"),
    ({"body_timeout": -1}, "security.body_timeout", "finite duration"),
    ({"body_timeout": 0}, "security.body_timeout", "more than 0"),
    ({"body_timeout": "soon"}, "security.body_timeout", "not a duration"),
    ({"apikey": "x"}, "security.apikey", "did you mean 'api_key'"),
    ({"api_keys": "x"}, "security.api_keys", "must be a list like"),
    ({"api_keys": [{"name": "a", "key": "k" * 16}, {"name": "a", "key": "j" * 16}]},
     "security.api_keys[1].name", "another key is already named 'a'"),
    ({"api_keys": [{"name": "a", "key": "k" * 16}, {"name": "b", "key": "k" * 16}]},
     "security.api_keys[1].key", "already in use"),
    ({"api_keys": [{"name": "a b", "key": "k" * 16}]}, "security.api_keys[0].name",
     "give each key a name"),
    ({"api_keys": [{"name": "a", "key": "short"}]}, "security.api_keys[0].key",
     "at least 16 characters"),
    ({"api_keys": [{"name": "a", "key": "k" * 16, "requests_per_minute": 0}]},
     "security.api_keys[0].requests_per_minute", "must be 1 or more"),
    ({"api_keys": [{"name": "a", "key": "k" * 16, "scope": []}]},
     "security.api_keys[0].scope", "unknown key"),
    ({"client_requests_per_minute": -1}, "security.client_requests_per_minute",
     "must be 0 or more"),
])
def test_problems_name_the_key_and_line(section: dict[str, object], path: str,
                                        message: str) -> None:
    found = problems({"security": section})
    assert len(found) == 1, found
    where, what, line = found[0]
    assert where == path and message in what
    assert line is not None and line >= 2


def test_section_must_be_an_object() -> None:
    assert problems({"security": []})[0][:2] == (
        "security", "must be an object {...}, not a list")


def test_to_dict_leaves_the_section_out_when_default() -> None:
    assert "security" not in parse_config({}).to_dict()


def test_to_dict_keeps_a_section_written_in_the_file() -> None:
    shaped = parse_config({"security": {}}).to_dict()
    assert shaped["security"] == {
        "api_key": "", "api_key_env": "", "allowed_hosts": [], "cors_origins": [],
        "max_body_bytes": 33554432, "max_audio_bytes": 25000000, "body_timeout": "1m",
    }


def test_round_trip() -> None:
    config = parse_config({"security": {
        "_why": "a comment survives", "api_key_env": "LR_KEY", "allowed_hosts": ["box.lan"],
        "cors_origins": ["chrome-extension://*"], "max_body_bytes": 4096,
        "body_timeout": "1m30s",
    }})
    shaped = config.to_dict()
    assert shaped["security"]["_why"] == "a comment survives"
    assert shaped["security"]["body_timeout"] == "1m30s"
    assert parse_config(json.loads(json.dumps(shaped))) == config


def test_diff_reports_security_changes_and_nothing_else() -> None:
    old = parse_config({})
    new = parse_config({"security": {"api_key": "k" * 16}})
    changes = diff_configs(old, new)
    assert changes.security_changed
    # No listener restart: the middlewares read the live config on every request.
    assert not changes.listeners_changed
    assert diff_configs(new, new).empty
