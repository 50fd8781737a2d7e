"""What the Ollama routes need from the core, beyond what the OpenAI routes need."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from ...config.schema import Config
from ...library.metadata import GGUFMetadata
from ..context import ProxyBackend


class ModelFileFacts(Protocol):
    @property
    def size(self) -> int: ...

    @property
    def mtime(self) -> float: ...

    @property
    def mtime_ns(self) -> int: ...

    @property
    def digest(self) -> str | None: ...


class OllamaBackend(ProxyBackend, Protocol):
    config: Config

    def metadata_for(self, name: str) -> GGUFMetadata | None: ...

    def capabilities_for(self, name: str) -> list[str]: ...

    def model_file(self, name: str) -> ModelFileFacts | None: ...

    def ttl_of(self, name: str) -> float: ...

    async def copy_model(self, source: str, destination: str) -> None: ...

    async def delete_model(self, name: str) -> None: ...


OLLAMA_BACKEND: web.AppKey[OllamaBackend] = web.AppKey("ollama_backend", OllamaBackend)
