"""Anthropic's error shape, `{"type": "error", "error": {"type": ..., "message": ...}}`."""

from __future__ import annotations

import json
from typing import Any, Final

from aiohttp import web

from ...core.errors import LlamaRunnerError, RetryLaterError

# Every route of the Messages API lives under this path, on both ports.
ROUTE_PREFIX: Final = "/v1/messages"

# Anthropic's documented error types by HTTP status; the SDKs pick their exception class
# by status, the type is what a user reads.
_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def is_anthropic_path(path: str) -> bool:
    """Whether a request path belongs to the Messages API (and answers in its shape)."""
    return path == ROUTE_PREFIX or path.startswith(ROUTE_PREFIX + "/")


def error_type(status: int) -> str:
    """Anthropic's error type for an HTTP status; other 4xx are the client's, 5xx ours."""
    if status in _TYPES:
        return _TYPES[status]
    return "invalid_request_error" if status < 500 else "api_error"


def error_body(message: str, status: int) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


def anthropic_error(message: str, status: int, headers: dict[str, str] | None = None
                    ) -> web.Response:
    return web.json_response(error_body(message, status), status=status, headers=headers)


def render_anthropic(
    request: web.Request, status: int, message: str, exc: LlamaRunnerError | None
) -> web.Response:
    """The error renderer for the Messages API's routes (an `ErrorRenderer`)."""
    if exc is None:
        return anthropic_error(message, status)
    headers = None
    if isinstance(exc, RetryLaterError):
        # The SDKs wait for Retry-After before retrying a 429.
        headers = {"Retry-After": str(exc.retry_after)}
    return anthropic_error(exc.message, exc.status, headers)


def anthropic_unauthorized(request: web.Request, message: str) -> web.Response:
    return anthropic_error(message, 401, {"WWW-Authenticate": "Bearer"})


def error_event(message: str, status: int = 500) -> bytes:
    """A server-sent `error` event: how a Messages stream reports a failure midway."""
    data = json.dumps(error_body(message, status)).encode()
    return b"event: error\ndata: " + data + b"\n\n"


def upstream_error(data: Any) -> tuple[str, int]:
    """The message and status of an error object llama-server put in a stream.

    llama-server writes its own `{"code": 500, "message": ..., "type": "server_error"}`
    (sometimes wrapped in `{"error": ...}`); anything else is reported as its text.
    """
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        data = data["error"]
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        code = data.get("code")
        if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
            return data["message"], code
        return data["message"], 500
    if isinstance(data, str) and data.strip():
        return data.strip(), 500
    return "llama-server reported an error in the middle of the response", 500
