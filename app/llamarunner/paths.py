"""Where the app keeps its files on each OS (config, models, logs, caches)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "llamarunner"


def data_dir() -> Path:
    override = os.environ.get("LLAMARUNNER_DATA_DIR")
    if override:
        return Path(override)
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def models_dir() -> Path:
    """The app's own models folder: the default model_dirs entry and the demo's home."""
    return data_dir() / "models"


def cache_dir() -> Path:
    """Downloads and builds that can be redone (runtimes, demo models).

    `LLAMARUNNER_CACHE_DIR` overrides it.
    """
    override = os.environ.get("LLAMARUNNER_CACHE_DIR")
    if override:
        return Path(override)
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def log_dir() -> Path:
    override = os.environ.get("LLAMARUNNER_LOG_DIR")
    if override:
        return Path(override)
    return Path(platformdirs.user_log_dir(APP_NAME, appauthor=False))


def runner_log_dir() -> Path:
    return log_dir() / "runners"
