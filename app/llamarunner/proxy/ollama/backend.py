"""What the Ollama routes need from the core, beyond what the OpenAI routes need."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from aiohttp import web

from ...config.schema import Config
from ...library.discovery import LibraryEntry
from ...library.metadata import GGUFMetadata
from ...store.model_store import ModelStore
from ...store.names import ModelName
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

    def default_messages_for(self, name: str) -> Sequence[Mapping[str, Any]]: ...

    async def copy_model(self, source: str, destination: str) -> None: ...

    async def delete_model(self, name: str) -> None: ...

    # The store of pulled models (pull, create, blobs; copy and delete of its models).
    @property
    def model_store(self) -> ModelStore: ...

    def library_entries(self) -> Mapping[str, LibraryEntry]: ...

    async def delete_stored(self, name: ModelName) -> None: ...


OLLAMA_BACKEND: web.AppKey[OllamaBackend] = web.AppKey("ollama_backend", OllamaBackend)
