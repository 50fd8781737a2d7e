"""Log to stderr and to a size-rotated file in the user log folder, as text or JSON lines."""

from __future__ import annotations

import logging
import logging.handlers
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import orjson

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# The app's log file inside the log folder (paths.log_dir()).
LOG_FILE_NAME = "llamarunner.log"
TEXT: Final = "text"
JSON: Final = "json"
# The same as the config's defaults (config/defaults.py; core does not import config).
DEFAULT_MAX_BYTES: Final = 10 * 1024 * 1024
DEFAULT_BACKUPS: Final = 5

# What every LogRecord has; anything else on a record came from `extra=` and is a field
# of its own in a JSON line.
_STANDARD_ATTRIBUTES: Final = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__
) | {"message", "asctime", "taskName"}
_INT64: Final = range(-(2**63), 2**64)  # what orjson writes as a number


class LogSettings(Protocol):
    """The config's `logging` section (config.schema.LoggingConfig), as read here."""

    @property
    def format(self) -> str: ...
    @property
    def max_bytes(self) -> int: ...
    @property
    def backups(self) -> int: ...


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, extras, exc_info.

    Log collectors (journald, Loki, Elasticsearch) read these without a parsing rule. A
    record is never lost to its content: a value JSON cannot hold is written as text.
    """

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception:  # a bad %-format in a log call must not lose the line
            message = f"{_text_of(record.msg)} {_text_of(record.args)}"
        entry: dict[Any, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES and key not in entry:
                entry[key] = value
        if record.exc_info and not record.exc_text:
            # Cached on the record as the text formatter does, so both write it once.
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return _dumps(entry)


def _text_of(value: object) -> str:
    """`value` as text that any JSON writer takes, whatever its str() does."""
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception:
        try:
            text = repr(value)
        except Exception:
            text = f"<unprintable {type(value).__name__}>"
    # Lone surrogates (undecodable file names) are not UTF-8.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _dumps(entry: dict[Any, Any]) -> str:
    try:
        return orjson.dumps(entry, default=_text_of, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # orjson.JSONEncodeError: a huge int, a surrogate, odd nested keys
        plain: dict[str, object] = {}
        for key, value in entry.items():
            keep = value is None or isinstance(value, (bool, float)) or (
                isinstance(value, int) and value in _INT64)
            plain[_text_of(key)] = value if keep else _text_of(value)
        return orjson.dumps(plain).decode()


def make_formatter(log_format: str) -> logging.Formatter:
    """The formatter for "text" or "json"; anything else means text."""
    return JsonFormatter() if log_format == JSON else logging.Formatter(FORMAT)


class SizeRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """RotatingFileHandler that keeps the file under `maxBytes` even with no backups.

    The stdlib never rolls over when backupCount is 0, so the file would grow without
    bound; here it starts afresh instead.
    """

    def doRollover(self) -> None:
        if self.backupCount > 0:
            super().doRollover()
            return
        if self.stream is None:
            self.stream = self._open()
        self.stream.seek(0)
        self.stream.truncate()


@dataclass
class _Installed:
    """The handlers configure_logging put on the root logger; later changes touch these."""

    stderr: logging.Handler
    file: SizeRotatingFileHandler | None
    log_format: str
    # Chosen on the command line: a config change does not override it.
    format_fixed: bool


_installed: _Installed | None = None


def configure_logging(level: str, log_dir: Path | None, *, log_format: str = TEXT,
                      max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS,
                      format_fixed: bool = False) -> Path | None:
    """Set up the root logger once; returns the log file path (None when not writable).

    The file is rotated when it would pass `max_bytes`, keeping `backups` old files.
    `format_fixed`: the format came from the command line, so `apply_logging_config`
    changes only the rotation.
    """
    global _installed
    root = logging.getLogger()
    root.setLevel(level.upper())
    for handler in list(root.handlers):
        root.removeHandler(handler)
    formatter = make_formatter(log_format)
    stderr = logging.StreamHandler()
    stderr.setFormatter(formatter)
    root.addHandler(stderr)
    # Python's warnings go through the same handlers, so a JSON log stays all JSON.
    logging.captureWarnings(True)
    # aiohttp's access log would cost a line per request; proxy/access_log.py writes ours.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    _installed = _Installed(stderr, None, log_format, format_fixed)
    if log_dir is None:
        return None
    log_file = log_dir / LOG_FILE_NAME
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        file_handler = SizeRotatingFileHandler(
            log_file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
    except OSError as exc:
        root.warning("cannot write log file %s (%s); logging to stderr only", log_file, exc)
        return None
    file_handler.setFormatter(formatter)
    root.addHandler(file_handler)
    _installed.file = file_handler
    return log_file


def apply_logging_config(settings: LogSettings) -> bool:
    """Apply the config's `logging` section to the handlers configure_logging set up.

    Idempotent; True when something changed. Does nothing before configure_logging (the
    tests' Services, an embedding app): other handlers are never touched.
    """
    installed = _installed
    if installed is None:
        return False
    changed = False
    if not installed.format_fixed and settings.format != installed.log_format:
        formatter = make_formatter(settings.format)
        installed.stderr.setFormatter(formatter)
        if installed.file is not None:
            installed.file.setFormatter(formatter)
        installed.log_format = settings.format
        changed = True
    file = installed.file
    if file is not None and (file.maxBytes, file.backupCount) != (settings.max_bytes,
                                                                   settings.backups):
        file.acquire()  # the handler's own lock: emit() reads both under it
        try:
            file.maxBytes, file.backupCount = settings.max_bytes, settings.backups
        finally:
            file.release()
        changed = True
    return changed


def current_log_format() -> str | None:
    """The format the app's handlers write now; None before configure_logging."""
    return _installed.log_format if _installed is not None else None
