"""Ollama's error shape, `{"error": "..."}`, with OpenAI's kept for its /v1 routes."""

from __future__ import annotations

from aiohttp import web

from ...core.errors import LlamaRunnerError, RetryLaterError
from ..errors import render_openai


def ollama_error(message: str, status: int, headers: dict[str, str] | None = None
                 ) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def render_ollama_port(
    request: web.Request, status: int, message: str, exc: LlamaRunnerError | None
) -> web.Response:
    """The Ollama port serves OpenAI's /v1 routes too; each answers in its own shape."""
    if request.path.startswith("/v1/"):
        return render_openai(request, status, message, exc)
    headers = None
    if isinstance(exc, RetryLaterError):
        headers = {"Retry-After": str(exc.retry_after)}
    if exc is None and status == 404:
        message = "404 page not found"  # what Ollama's router answers for unknown paths
    return ollama_error(message, status, headers)
