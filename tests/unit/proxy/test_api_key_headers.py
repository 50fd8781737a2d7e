"""Which API keys a request offers: `Authorization: Bearer` and Anthropic's `x-api-key`."""

from __future__ import annotations

import pytest

from llamarunner.proxy.security import ALLOW_HEADERS, key_matches, presented_keys

KEY = "my-secret-key-0123456789"


@pytest.mark.parametrize(("authorization", "x_api_key", "offered"), [
    (None, None, ()),
    ("", "", ()),
    (f"Bearer {KEY}", None, (KEY,)),
    (f"bearer {KEY}", None, (KEY,)),
    (None, KEY, (KEY,)),
    (None, f"  {KEY}  ", (KEY,)),
    (None, "   ", ()),
    (f"Bearer {KEY}", "other", (KEY, "other")),
    ("Bearer wrong", KEY, ("wrong", KEY)),
    # Only the Bearer scheme carries a key; x-api-key is the key itself, with no scheme.
    (f"Basic {KEY}", None, ()),
    (KEY, None, ()),
    ("Bearer ", None, ()),
    (f"Basic {KEY}", KEY, (KEY,)),
])
def test_presented_keys(authorization: str | None, x_api_key: str | None,
                        offered: tuple[str, ...]) -> None:
    assert presented_keys(authorization, x_api_key) == offered


@pytest.mark.parametrize(("authorization", "x_api_key", "accepted"), [
    (f"Bearer {KEY}", None, True),
    (None, KEY, True),
    (f"Bearer {KEY}", KEY, True),
    ("Bearer wrong", KEY, True),  # one right key is enough, whichever header carries it
    (f"Bearer {KEY}", "wrong", True),
    (None, "wrong", False),
    ("Bearer wrong", "wrong too", False),
    (None, KEY.upper(), False),
    (None, KEY[:-1], False),
    (None, None, False),
    (None, f"Bearer {KEY}", False),  # x-api-key holds the bare key
])
def test_either_header_may_carry_the_key(authorization: str | None, x_api_key: str | None,
                                         accepted: bool) -> None:
    offered = presented_keys(authorization, x_api_key)
    assert any(key_matches(given, KEY) for given in offered) is accepted


def test_browsers_may_send_anthropics_headers() -> None:
    allowed = {name.strip().lower() for name in ALLOW_HEADERS.split(",")}
    assert {"x-api-key", "anthropic-version", "anthropic-beta",
            "anthropic-dangerous-direct-browser-access", "authorization"} <= allowed
