"""LM Studio request fields shared by several routes (``ttl``, ``echo_load_config``), checked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...core.errors import BadRequestError

# One rule for `ttl` on every route of the port: the /v1 routes' (0 or more seconds; 0
# unloads the model right after the answer).
from ..openai.routes import requested_ttl

__all__ = ["echo_load_config", "requested_ttl"]


def echo_load_config(data: Mapping[str, Any]) -> bool:
    """``echo_load_config``: answer a load with the configuration it applied."""
    value = data.get("echo_load_config", False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequestError("'echo_load_config' must be true or false",
                              param="echo_load_config")
    return value
