"""What the LM Studio routes need from the core, beyond what the OpenAI routes need."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from aiohttp import web

from ...library.discovery import LibraryEntry
from ...library.metadata import GGUFMetadata
from ...store.model_store import ModelStore
from ..context import ProxyBackend


class ModelFileSize(Protocol):
    @property
    def size(self) -> int: ...


class LMStudioBackend(ProxyBackend, Protocol):
    def metadata_for(self, name: str) -> GGUFMetadata | None: ...

    def capabilities_for(self, name: str) -> list[str]: ...

    def model_file(self, name: str) -> ModelFileSize | None: ...

    # The store of pulled models: LM Studio's download jobs run there.
    @property
    def model_store(self) -> ModelStore: ...

    def library_entries(self) -> Mapping[str, LibraryEntry]: ...


LMSTUDIO_BACKEND: web.AppKey[LMStudioBackend] = web.AppKey("lmstudio_backend", LMStudioBackend)
