"""Let a test run the app's logging set-up, and give pytest its own handlers back after."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import pytest

from llamarunner.core import logging_setup


@contextlib.contextmanager
def restored_root_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """configure_logging replaces the root logger's handlers; this undoes it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    aiohttp_level = logging.getLogger("aiohttp.access").level
    monkeypatch.setattr(logging_setup, "_installed", None)
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
        logging.getLogger("aiohttp.access").setLevel(aiohttp_level)
        logging.captureWarnings(False)
