"""Reading and checking JSON request bodies, with errors a client can act on."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..core.errors import BadRequestError


async def read_json_object(request: web.Request) -> tuple[bytes, dict[str, Any]]:
    """The raw body (forwarded unchanged, no re-encoding) and its decoded JSON object."""
    raw = await request.read()
    if not raw.strip():
        raise BadRequestError("the request body is empty; send a JSON object")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequestError("the request body must be a JSON object")
    return raw, data


def required_model(data: dict[str, Any]) -> str:
    model = data.get("model")
    if model is None:
        raise BadRequestError("you must provide a model parameter", param="model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequestError("'model' must be a non-empty string", param="model")
    return model
