"""Pure checks behind the listener guards: origins, Host names, keys, start-up refusal."""

from __future__ import annotations

import hmac

import pytest

from llamarunner.config.schema import ProxyConfig, SecurityConfig
from llamarunner.proxy import security
from llamarunner.proxy.security import (
    bearer_token,
    host_allowed,
    is_loopback_bind,
    key_matches,
    origin_allowed,
    origin_matches,
    refusal,
)


@pytest.mark.parametrize(("origin", "allowed"), [
    # Ollama's built-in list: localhost names over http/https, any port.
    ("http://localhost", True),
    ("https://localhost", True),
    ("http://localhost:3000", True),
    ("https://127.0.0.1:8443", True),
    ("http://0.0.0.0:8080", True),
    ("http://[::1]:5173", True),
    ("HTTP://LOCALHOST:3000", True),
    # Editor and desktop webviews.
    ("app://obsidian.md", True),
    ("file://", True),
    ("tauri://localhost", True),
    ("vscode-webview://1a2b3c", True),
    ("vscode-file://vscode-app", True),
    # Not in Ollama's list: browser extensions must be added by the user.
    ("chrome-extension://abcdefghijklmnop", False),
    ("moz-extension://1234-5678", False),
    ("safari-web-extension://abc", False),
    # Look-alikes and other sites.
    ("http://localhost.attacker.example", False),
    ("http://localhost.attacker.example:3000", False),
    ("http://127.0.0.1.nip.io", False),
    ("https://attacker.example", False),
    ("ftp://localhost", False),
    ("http://[::2]", False),
    ("null", False),  # sandboxed iframes send it: allowing it would allow any site
    ("", False),
    ("not an origin", False),
])
def test_default_origins(origin: str, allowed: bool) -> None:
    assert origin_allowed(origin) is allowed


@pytest.mark.parametrize(("pattern", "origin", "matches"), [
    ("https://app.example.com", "https://app.example.com", True),
    ("https://app.example.com", "http://app.example.com", False),
    ("https://app.example.com", "https://app.example.com:8443", False),
    ("https://*.example.com", "https://a.example.com", True),
    ("https://*.example.com", "https://a.b.example.com", True),
    ("https://*.example.com", "https://example.com", False),
    ("https://*.example.com", "https://a.example.com.attacker.example", False),
    ("https://*.example.com", "https://a.example.com:8443", False),
    ("http://*.example.com:*", "http://a.example.com:8080", True),
    ("http://192.168.1.*:*", "http://192.168.1.20:3000", True),
    ("http://192.168.1.*:*", "http://192.168.10.20:3000", False),
    ("http://localhost:3000", "http://localhost:3001", False),
    ("chrome-extension://*", "chrome-extension://abcdef", True),
    ("chrome-extension://abcdef", "chrome-extension://abcdeg", False),
    ("*", "https://anything.example", True),
])
def test_origin_patterns(pattern: str, origin: str, matches: bool) -> None:
    assert origin_matches(pattern, origin) is matches


def test_configured_origins_add_to_the_defaults() -> None:
    extra = ("chrome-extension://*", "https://*.example.com")
    assert origin_allowed("chrome-extension://abc", extra)
    assert origin_allowed("https://ui.example.com", extra)
    assert origin_allowed("http://localhost:3000", extra)
    assert not origin_allowed("https://attacker.example", extra)


@pytest.mark.parametrize(("host", "bind", "allowed"), [
    ("localhost", "127.0.0.1", True),
    ("localhost:11434", "127.0.0.1", True),
    ("LOCALHOST.:1234", "127.0.0.1", True),
    ("127.0.0.1:1234", "127.0.0.1", True),
    ("[::1]:1234", "127.0.0.1", True),
    ("[0:0:0:0:0:0:0:1]", "::1", True),
    ("my-pc.local", "127.0.0.1", True),  # in allowed_hosts below
    (None, "127.0.0.1", True),  # HTTP/1.0 without Host is not a browser
    # DNS rebinding: the attacker's name re-pointed at 127.0.0.1.
    ("attacker.example", "127.0.0.1", False),
    ("attacker.example:11434", "127.0.0.1", False),
    ("localhost.attacker.example", "127.0.0.1", False),
    ("192.168.1.5", "127.0.0.1", False),
    ("", "127.0.0.1", False),
    ("::1", "127.0.0.1", False),  # unbracketed IPv6 is malformed
    ("localhost:http", "127.0.0.1", False),
    # A listener on another address also answers to its own address and to IP literals.
    ("192.168.1.5:11434", "192.168.1.5", True),
    ("10.0.0.7:11434", "0.0.0.0", True),
    ("[fe80::1]:11434", "::", True),
    ("attacker.example", "0.0.0.0", False),
    ("localhost", "0.0.0.0", True),
])
def test_host_header(host: str | None, bind: str, allowed: bool) -> None:
    assert host_allowed(host, bind, ("my-pc.local",)) is allowed


def test_machine_name_passes_on_a_network_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(security.socket, "gethostname", lambda: "Studio-PC")
    security._machine_names.cache_clear()
    try:
        assert host_allowed("studio-pc:11434", "0.0.0.0", ())
        assert not host_allowed("studio-pc:11434", "127.0.0.1", ())
    finally:
        security._machine_names.cache_clear()


@pytest.mark.parametrize(("bind", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("0.0.0.0", False), ("::", False), ("", False),
    ("192.168.1.5", False), ("my-pc.local", False),
])
def test_loopback_binds(bind: str, loopback: bool) -> None:
    assert is_loopback_bind(bind) is loopback


@pytest.mark.parametrize(("header", "token"), [
    ("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("BEARER abc", "abc"),
    ("Basic abc", None), ("Bearer", None), ("Bearer ", None), ("", None), (None, None),
])
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_keys_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    key = "correct-horse-battery"
    assert key_matches(key, key)
    assert not key_matches("wrong-horse-battery", key)
    assert not key_matches("ключ-не-тот-совсем", key)  # non-ASCII must not raise
    assert calls == [
        (key.encode(), key.encode()),
        (b"wrong-horse-battery", key.encode()),
        ("ключ-не-тот-совсем".encode(), key.encode()),
    ]
    assert not key_matches(None, key)
    assert not key_matches("anything", "")  # no key configured: nothing matches


def proxy(host: str) -> ProxyConfig:
    return ProxyConfig(True, host, 11434)


def test_loopback_needs_no_key() -> None:
    assert refusal("ollama", "Ollama API", proxy("127.0.0.1"), SecurityConfig(), "c.json") is None


def test_network_address_without_key_is_refused() -> None:
    message = refusal("ollama", "Ollama API", proxy("0.0.0.0"), SecurityConfig(), "/x/c.json")
    assert message is not None
    assert "Ollama API" in message and "0.0.0.0:11434" in message
    assert "security.api_key" in message and "/x/c.json" in message
    assert "proxies.ollama.host" in message


def test_network_address_with_key_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    with_key = SecurityConfig(api_key="k" * 16)
    assert refusal("lmstudio", "LM Studio", proxy("0.0.0.0"), with_key, "c.json") is None
    monkeypatch.setenv("LR_UNIT_KEY", "k" * 20)
    from_env = SecurityConfig(api_key_env="LR_UNIT_KEY")
    assert refusal("lmstudio", "LM Studio", proxy("0.0.0.0"), from_env, "c.json") is None


def test_missing_key_variable_is_refused_even_on_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LR_UNIT_KEY", raising=False)
    message = refusal("lmstudio", "LM Studio", proxy("127.0.0.1"),
                      SecurityConfig(api_key_env="LR_UNIT_KEY"), "c.json")
    assert message is not None and "LR_UNIT_KEY" in message and "not set" in message
