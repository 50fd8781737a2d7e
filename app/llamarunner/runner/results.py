"""Outcomes of load/unload actions, shared by the API, the CLI and the tray."""

from __future__ import annotations

import enum


class LoadResult(enum.Enum):
    LOADED = "loaded"
    ALREADY_LOADED = "already_loaded"
    FAILED = "failed"


class UnloadResult(enum.Enum):
    UNLOADED = "unloaded"
    NOT_LOADED = "not_loaded"
