"""LM Studio's own REST API (/api/v0 and /api/v1) on the LM Studio port."""

from .backend import LMSTUDIO_BACKEND, LMStudioBackend
from .routes import add_lmstudio_routes

__all__ = ["LMSTUDIO_BACKEND", "LMStudioBackend", "add_lmstudio_routes"]
