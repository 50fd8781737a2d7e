"""LM Studio request fields shared by several routes (``ttl``, ``echo_load_config``), checked."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ...core.errors import BadRequestError

__all__ = ["echo_load_config", "requested_ttl"]


def requested_ttl(data: Mapping[str, Any]) -> float | None:
    """``ttl``: seconds the model may stay idle before it unloads; ``None`` when absent.

    It replaces the model's configured TTL until the next request, like Ollama's
    ``keep_alive`` (the route passes it to ``lease.release``).
    """
    value = data.get("ttl")
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value <= 0):
        raise BadRequestError(
            "'ttl' must be a positive number of seconds: how long the model may stay idle "
            "before it is unloaded", param="ttl")
    return float(value)


def echo_load_config(data: Mapping[str, Any]) -> bool:
    """``echo_load_config``: answer a load with the configuration it applied."""
    value = data.get("echo_load_config", False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequestError("'echo_load_config' must be true or false",
                              param="echo_load_config")
    return value
