"""Where the doctor looks for the app, and which key it sends, from the app's config."""

from __future__ import annotations

from typing import Any

import pytest

from llamarunner.config import parse_config
from llamarunner.doctor.target import (
    Endpoint,
    Target,
    connect_host,
    not_running_message,
    target_from_config,
)


@pytest.mark.parametrize(("bind", "expected"), [
    ("127.0.0.1", "127.0.0.1"),
    ("0.0.0.0", "127.0.0.1"),  # a wildcard bind is reached on loopback
    ("", "127.0.0.1"),
    ("::", "[::1]"),
    ("[::]", "[::1]"),
    ("::1", "[::1]"),
    ("[::1]", "[::1]"),
    ("fe80::1", "[fe80::1]"),
    ("192.168.1.20", "192.168.1.20"),
    ("localhost", "localhost"),
    ("my-box.lan", "my-box.lan"),
])
def test_connect_host(bind: str, expected: str) -> None:
    assert connect_host(bind) == expected


def config(**data: Any) -> Any:
    return parse_config(data)


def test_default_ports_on_loopback() -> None:
    target = target_from_config(config(), "/c.json", environ={})
    assert target.ollama == Endpoint("ollama", "http://127.0.0.1:11434")
    assert target.lmstudio == Endpoint("lmstudio", "http://127.0.0.1:1234")
    assert (target.api_key, target.key_source, target.key_missing) == ("", "", "")
    assert target.config_path == "/c.json"


def test_a_listener_that_is_off_or_on_any_port_has_no_url_and_says_why() -> None:
    target = target_from_config(config(proxies={"ollama": {"enabled": False},
                                                "lmstudio": {"port": 0}}), "/c.json",
                                environ={})
    assert target.ollama.url is None
    assert target.ollama.problem == "the Ollama API is off"
    assert target.ollama.fix == "set proxies.ollama.enabled to true in /c.json"
    assert target.lmstudio.url is None
    assert "proxies.lmstudio.port is 0" in target.lmstudio.problem
    assert target.lmstudio.fix == "set a fixed proxies.lmstudio.port in /c.json"


def test_bound_ports_of_a_running_app_win_over_the_config() -> None:
    target = target_from_config(
        config(proxies={"ollama": {"port": 0, "host": "0.0.0.0"}, "lmstudio": {"port": 1234}},
               security={"api_key": "k" * 16}),
        "/c.json", bound_ports={"ollama": 40001, "lmstudio": None}, environ={})
    assert target.ollama.url == "http://127.0.0.1:40001"
    assert target.lmstudio.url == "http://127.0.0.1:1234"


@pytest.mark.parametrize(("security", "environ", "key", "source", "missing"), [
    ({}, {}, "", "", ""),
    ({"api_key": "a" * 16}, {}, "a" * 16, "security.api_key", ""),
    ({"api_key_env": "MY_KEY"}, {"MY_KEY": " b" + "b" * 15 + " "}, "b" * 16, "$MY_KEY", ""),
    ({"api_key_env": "MY_KEY"}, {}, "", "", "MY_KEY"),
])
def test_the_key_comes_from_the_config_or_its_variable(
    security: dict[str, str], environ: dict[str, str], key: str, source: str, missing: str
) -> None:
    target = target_from_config(config(security=security), "/c.json", environ=environ)
    assert (target.api_key, target.key_source, target.key_missing) == (key, source, missing)
    assert target.key_required == bool(key or missing)


@pytest.mark.parametrize(("load_timeout", "expected"), [
    ("2m", 180.0),
    ("1s", 61.0),  # a minute more, for the first answer
    (-1, 300.0),  # "never" gives the default
])
def test_read_timeout_follows_the_load_timeout(load_timeout: object, expected: float) -> None:
    target = target_from_config(config(scheduler={"load_timeout": load_timeout}), "/c.json",
                                environ={})
    assert target.read_timeout == expected


@pytest.mark.parametrize(("ollama", "lmstudio", "where"), [
    ("http://127.0.0.1:11434", "http://127.0.0.1:1234", "127.0.0.1:11434 / 1234"),
    ("http://127.0.0.1:11434", "http://192.168.1.2:1234", "127.0.0.1:11434 / 192.168.1.2:1234"),
    ("http://[::1]:11434", "http://[::1]:1234", "[::1]:11434 / 1234"),
    (None, "http://127.0.0.1:1234", "127.0.0.1:1234"),
])
def test_not_running_message(ollama: str | None, lmstudio: str, where: str) -> None:
    target = Target(Endpoint("ollama", ollama), Endpoint("lmstudio", lmstudio))
    assert not_running_message(target) == (
        f"LlamaRunner Pro is not running on {where}: start it with `llamarunner` (or "
        "`llamarunner --headless`); if it runs with another config file, name that file: "
        "`llamarunner doctor --config PATH`")
