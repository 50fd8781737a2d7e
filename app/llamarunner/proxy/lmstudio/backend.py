"""What the LM Studio routes need from the core, beyond what the OpenAI routes need."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from ...library.metadata import GGUFMetadata
from ..context import ProxyBackend


class ModelFileSize(Protocol):
    @property
    def size(self) -> int: ...


class LMStudioBackend(ProxyBackend, Protocol):
    def metadata_for(self, name: str) -> GGUFMetadata | None: ...

    def capabilities_for(self, name: str) -> list[str]: ...

    def model_file(self, name: str) -> ModelFileSize | None: ...


LMSTUDIO_BACKEND: web.AppKey[LMStudioBackend] = web.AppKey("lmstudio_backend", LMStudioBackend)
