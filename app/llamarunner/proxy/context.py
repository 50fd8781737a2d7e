"""What route handlers need from the core, as one narrow interface."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import aiohttp
from aiohttp import web

from ..config.schema import Config, ModelConfig
from ..library.chat_template import ChatTemplate
from ..peers.directory import PeerStatus
from ..runner.manager import RunnerManager
from .metrics import Metrics


class ProxyBackend(Protocol):
    """Implemented by the Service; handlers depend on this, not on the whole Service."""

    @property
    def manager(self) -> RunnerManager: ...

    @property
    def http(self) -> aiohttp.ClientSession: ...

    @property
    def config(self) -> Config: ...

    @property
    def metrics(self) -> Metrics:
        """The Service's Prometheus metrics: /metrics and the request observer."""
        ...

    def models(self) -> Mapping[str, ModelConfig]: ...

    def resolve_model(self, requested: str) -> str: ...

    def model_created(self, name: str) -> int: ...

    def chat_template_for(self, name: str) -> ChatTemplate:
        """The chat template the model's runner uses, and where it comes from."""
        ...

    def peer_status(self, name: str) -> PeerStatus | None:
        """The state of the peer serving model `name`; None for a local model."""
        ...

    def require_chat(self, name: str, requested: str | None = None) -> None:
        """Raise ChatNotSupportedError (400) when the model has no chat template."""
        ...


BACKEND: web.AppKey[ProxyBackend] = web.AppKey("backend", ProxyBackend)
