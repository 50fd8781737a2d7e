"""Which models a request's API key may see and use (`models` of a named key).

A key without `models` sees everything. One with `models` sees only those (by name or
alias) in every listing, and a request naming another model is refused as if that
model did not exist (404) on the OpenAI, Anthropic and Ollama routes, whose clients
treat an unknown model as a 404, or with 403 on LM Studio's REST routes.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

from ..core.errors import ModelForbiddenError, ModelNotFoundError
from .context import BACKEND
from .security import key_of

__all__ = ["may_use", "resolve_for", "visible"]

# LM Studio's own REST API says "forbidden" rather than pretending a model is not there.
_FORBIDDING_PREFIXES = ("/api/v0/", "/api/v1/")


def may_use(request: web.Request, name: str) -> bool:
    """Whether the request's key may use the configured model `name`."""
    key = key_of(request)
    if key is None or not key.models:
        return True
    model = request.app[BACKEND].models().get(name)
    return key.allows(name, model.alias if model is not None else ())


def visible(request: web.Request, names: Iterable[str]) -> list[str]:
    """`names` that the request's key may see, in their order."""
    key = key_of(request)
    if key is None or not key.models:
        return list(names)
    return [name for name in names if may_use(request, name)]


def resolve_for(request: web.Request, requested: str) -> str:
    """The model `requested` means (as `resolve_model`), if the request's key may use it."""
    name: str = request.app[BACKEND].resolve_model(requested)
    if not may_use(request, name):
        key = key_of(request)
        if request.path.startswith(_FORBIDDING_PREFIXES) and key is not None:
            raise ModelForbiddenError(requested, key.name)
        raise ModelNotFoundError(requested)
    return name
