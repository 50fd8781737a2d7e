"""Table tests for the LM Studio request fields several routes share."""

from __future__ import annotations

from typing import Any

import pytest

from llamarunner.core.errors import BadRequestError
from llamarunner.proxy.lmstudio.request_fields import echo_load_config, requested_ttl


@pytest.mark.parametrize("body,ttl", [
    ({}, None),
    ({"ttl": None}, None),
    ({"ttl": 0}, 0.0),  # unload right after the answer
    ({"ttl": 1}, 1.0),
    ({"ttl": 300}, 300.0),
    ({"ttl": 0.5}, 0.5),
])
def test_requested_ttl(body: dict[str, Any], ttl: float | None) -> None:
    assert requested_ttl(body) == ttl


@pytest.mark.parametrize("value", [-1, -0.5, "60", "5m", True, False, [60], float("inf"),
                                   float("nan")])
def test_requested_ttl_refuses_what_is_not_seconds(value: object) -> None:
    with pytest.raises(BadRequestError) as info:
        requested_ttl({"ttl": value})
    assert info.value.param == "ttl"
    assert "number of seconds" in info.value.message


@pytest.mark.parametrize("body,echo", [
    ({}, False), ({"echo_load_config": None}, False), ({"echo_load_config": False}, False),
    ({"echo_load_config": True}, True),
])
def test_echo_load_config(body: dict[str, Any], echo: bool) -> None:
    assert echo_load_config(body) is echo


@pytest.mark.parametrize("value", ["yes", 1, 0, {}])
def test_echo_load_config_must_be_a_boolean(value: object) -> None:
    with pytest.raises(BadRequestError) as info:
        echo_load_config({"echo_load_config": value})
    assert info.value.param == "echo_load_config"
