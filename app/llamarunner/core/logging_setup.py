"""Log to stderr and to a rotating file in the user log folder."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# The app's log file inside the log folder (paths.log_dir()).
LOG_FILE_NAME = "llamarunner.log"


def configure_logging(level: str, log_dir: Path | None) -> Path | None:
    """Set up the root logger once; returns the log file path (None when not writable)."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    for handler in list(root.handlers):
        root.removeHandler(handler)
    stderr = logging.StreamHandler()
    stderr.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(stderr)
    if log_dir is None:
        return None
    log_file = log_dir / LOG_FILE_NAME
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=5 * 1024 * 1024, backupCount=3, encoding="utf-8"
        )
    except OSError as exc:
        root.warning("cannot write log file %s (%s); logging to stderr only", log_file, exc)
        return None
    file_handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(file_handler)
    # aiohttp's access log would cost a line per request; our own log says what matters.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return log_file
