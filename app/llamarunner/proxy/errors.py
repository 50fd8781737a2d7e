"""Error bodies in each API's own shape, and the middleware that guarantees one is sent."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..core.errors import LlamaRunnerError, RetryLaterError
from .anthropic.errors import is_anthropic_path, render_anthropic
from .redact import redact_error_response

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def openai_error_body(
    message: str, *, status: int, code: str | None = None, param: str | None = None,
    error_type: str | None = None,
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": error_type or _OPENAI_TYPES.get(status, "server_error"),
            "param": param,
            "code": code,
        }
    }


def openai_error(
    message: str, *, status: int, code: str | None = None, param: str | None = None,
    error_type: str | None = None, headers: dict[str, str] | None = None,
) -> web.Response:
    body = openai_error_body(message, status=status, code=code, param=param,
                             error_type=error_type)
    return web.json_response(body, status=status, headers=headers, dumps=json.dumps)


def response_for_exception(exc: LlamaRunnerError) -> web.Response:
    headers = {}
    if isinstance(exc, RetryLaterError):
        # Clients such as the openai SDK honour Retry-After on 429.
        headers["Retry-After"] = str(exc.retry_after)
    return openai_error(
        exc.message, status=exc.status, code=exc.code, error_type=exc.error_type,
        param=getattr(exc, "param", None), headers=headers,
    )


ErrorRenderer = Callable[[web.Request, int, str, LlamaRunnerError | None], web.Response]


def render_openai(
    request: web.Request, status: int, message: str, exc: LlamaRunnerError | None
) -> web.Response:
    """OpenAI's shape for the /v1 routes of both ports; Anthropic's Messages API, served
    under /v1/messages next to them, answers in its own (its SDKs read no other)."""
    if is_anthropic_path(request.path):
        return render_anthropic(request, status, message, exc)
    if exc is not None:
        return response_for_exception(exc)
    return openai_error(message, status=status)


def error_middleware(render: ErrorRenderer) -> Any:
    """Turn every failure into the API's own error shape; never leak a traceback.

    Every error answer of a route passes here, raised or returned, so this is also where
    file system paths are taken out of error texts for callers on other machines.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        response: web.StreamResponse
        try:
            response = await handler(request)
        except LlamaRunnerError as exc:
            response = render(request, exc.status, exc.message, exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = render(request, exc.status, exc.reason or "error", None)
        except (ConnectionResetError, BrokenPipeError):
            raise  # the client is gone; nobody is left to read an error body
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            response = render(request, 500, "internal server error", None)
        redact_error_response(request, response)
        return response

    return middleware
