"""The `peers` section and a model's `rpc` workers: parsed, checked, written back."""

from __future__ import annotations

from typing import Any

import pytest

from llamarunner.config import ConfigValidationError, PeerConfig, parse_config


def _problems(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigValidationError) as caught:
        parse_config(data)
    return str(caught.value)


def test_a_peer_with_a_url_only_gets_the_defaults() -> None:
    config = parse_config({"peers": {"box": {"url": "http://gpu-box:1234/v1/"}}})
    assert config.peers == {"box": PeerConfig(url="http://gpu-box:1234/v1")}
    assert config.peers["box"].refresh == 60.0
    assert config.to_dict()["peers"] == {"box": {"url": "http://gpu-box:1234/v1"}}


def test_every_peer_key_round_trips() -> None:
    raw = {"url": "https://lab.example:8443/v1", "api_key": "sk-1", "models": ["a", "b"],
           "refresh": "5m"}
    config = parse_config({"peers": {"lab": raw}})
    peer = config.peers["lab"]
    assert (peer.api_key, peer.models, peer.refresh) == ("sk-1", ("a", "b"), 300.0)
    assert parse_config(config.to_dict()) == config
    assert "sk-1" not in repr(peer)


def test_a_config_without_peers_is_saved_without_the_section() -> None:
    assert "peers" not in parse_config({}).to_dict()


@pytest.mark.parametrize(("entry", "expected"), [
    ({}, "peers.box.url: missing"),
    ({"url": "gpu-box:1234"}, "must be an http:// or https:// URL"),
    ({"url": "ftp://x/v1"}, "must be an http:// or https:// URL"),
    ({"url": "http://x/v1", "refresh": 0}, "must be more than 0"),
    ({"url": "http://x/v1", "models": "a"}, "must be a list"),
    ({"url": "http://x/v1", "colour": "red"}, "colour"),
])
def test_bad_peer_entries_are_named(entry: dict[str, Any], expected: str) -> None:
    assert expected in _problems({"peers": {"box": entry}})


def test_a_peer_name_cannot_hold_a_slash() -> None:
    assert "NAME/model" in _problems({"peers": {"a/b": {"url": "http://x/v1"}}})


def test_rpc_workers_are_host_port_pairs() -> None:
    config = parse_config({"models": {"big": {
        "path": "/m/big.gguf", "rpc": ["10.0.0.5:50052", "gpu-box:50053"]}}})
    assert config.models["big"].rpc == ("10.0.0.5:50052", "gpu-box:50053")
    assert config.to_dict()["models"]["big"]["rpc"] == list(config.models["big"].rpc)


@pytest.mark.parametrize(("workers", "expected"), [
    (["10.0.0.5"], "must look like"),
    (["[::1]:50052"], "must look like"),
    (["10.0.0.5:99999"], "not between 1 and 65535"),
    ("10.0.0.5:50052", "must be a list"),
])
def test_bad_rpc_workers_are_named(workers: object, expected: str) -> None:
    text = _problems({"models": {"big": {"path": "/m/big.gguf", "rpc": workers}}})
    assert "models.big.rpc" in text and expected in text


def test_rpc_alone_is_a_setting_for_a_discovered_model() -> None:
    config = parse_config({"models": {"found": {"rpc": ["h:1"]}}})
    assert config.models["found"].settings_only
    assert config.models["found"].rpc == ("h:1",)
