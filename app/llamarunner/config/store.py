"""Load, validate, atomically save, back up and watch the config file."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import inspect
import json
import logging
import os
import stat
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import platformdirs

from . import defaults
from .locate import KeyLocator
from .migration import is_legacy, legacy_key_path, migrate_legacy
from .schema import (
    Config,
    ConfigError,
    ConfigReadError,
    ConfigSyntaxError,
    ConfigValidationError,
    Problem,
    parse_config,
)

log = logging.getLogger(__name__)

# A file modified this recently may change again within the same mtime tick (coarse
# timestamps on FAT/SMB/some ext4 mounts), so an unchanged (mtime, size) proves nothing yet:
# the same "racily clean" problem git solves by re-reading such files.
_RACY_WINDOW_NS = 2_000_000_000
# Windows refuses to replace a file that an editor or virus scanner holds open; such locks
# are usually released within milliseconds.
_REPLACE_ATTEMPTS = 10 if os.name == "nt" else 1
_REPLACE_RETRY_DELAY = 0.05


def default_config_path() -> Path:
    """The per-user config file: e.g. ~/.config/llamarunner/config.json on Linux."""
    folder = platformdirs.user_config_dir(defaults.APP_DIR_NAME, appauthor=False)
    return Path(folder) / defaults.CONFIG_FILE_NAME


def dump_config_text(data: Mapping[str, Any]) -> str:
    """The exact text the store writes: 2-space indented JSON, UTF-8, final newline."""
    # allow_nan=False: Infinity/NaN would make a file that strict JSON readers reject.
    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _digest(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


def _decode(raw: bytes, file: str) -> str:
    try:
        # utf-8-sig: Windows Notepad writes a byte order mark that json.loads rejects.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        raise ConfigSyntaxError(file, line, column, "the file is not UTF-8 text") from None


def parse_config_bytes(raw: bytes, file: str) -> Config:
    """Decode, parse and validate file content; old llama-runner files are converted."""
    text = _decode(raw, file)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigSyntaxError(file, exc.lineno, exc.colno, exc.msg) from None
    if not is_legacy(data):
        return parse_config(data, text=text, file=file)
    try:
        return parse_config(migrate_legacy(data), file=file)
    except ConfigValidationError as exc:
        # Point at the lines of the file the user actually has, not of the converted one.
        locator = KeyLocator(text)
        problems = [
            dataclasses.replace(p, line=locator.line(legacy_key_path(p.key))) for p in exc.problems
        ]
        problems.sort(key=lambda p: (p.line is None, p.line or 0))
        raise ConfigValidationError(file, problems) from None


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable after a power cut. Windows cannot open a folder for
    # fsync, and some file systems refuse it; the data file was already synced either way.
    if os.name == "nt":
        return
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _replace(source: Path, target: Path) -> None:
    for attempt in range(_REPLACE_ATTEMPTS):
        try:
            os.replace(source, target)
            return
        except PermissionError:
            if attempt == _REPLACE_ATTEMPTS - 1:
                raise
            time.sleep(_REPLACE_RETRY_DELAY)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that readers and crashes see the old or the new file.

    Temp file in the same folder (os.replace is only atomic within one file system), flushed
    and fsynced before the rename, folder fsynced after it. On any failure the temp file is
    removed and `path` is untouched.
    """
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileNotFoundError):
            # mkstemp creates 0600; keep whatever mode the user gave the existing file.
            os.chmod(temp, stat.S_IMODE(path.stat().st_mode))
        _replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    _fsync_dir(path.parent)


OnChange = Callable[[Config], Awaitable[None] | None]
OnError = Callable[[ConfigError], None]


class ConfigStore:
    """Owns one config file: the last good config, its text, and what the watcher has seen.

    `load()` and `save()` may be called from any thread; `watch()` runs on the event loop.
    A config that `save()` returned is not announced again by the watcher: the caller that
    saved applies it.
    """

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        self._config: Config | None = None
        self._good_raw: bytes | None = None
        # Content the watcher treats as already handled: the last good content, or a bad
        # version that was already reported (so it is reported once, not every poll).
        self._handled: bytes | None = None
        self._signature: tuple[int, int] | None = None
        # A bad version seen once: reported only if it is still there at the next poll,
        # because editors that write in place show a half-written file for a moment.
        self._unsettled: bytes | None = None
        self._read_error: str | None = None

    @property
    def path(self) -> Path:
        return self._path

    @property
    def backup_path(self) -> Path:
        """`config.json.bak`: the last good file before the latest save."""
        return self._path.with_name(self._path.name + defaults.BACKUP_SUFFIX)

    @property
    def config(self) -> Config | None:
        """The last good config loaded, saved or picked up by the watcher (None before)."""
        return self._config

    @property
    def last_good_text(self) -> str | None:
        """The text that produced `config`."""
        return None if self._good_raw is None else self._good_raw.decode("utf-8-sig")

    def load(self) -> Config:
        """Read and validate the file, creating it with the defaults on first start.

        An old llama-runner file is converted in memory; the file itself is left as it is
        until the next save. Raises ConfigSyntaxError, ConfigValidationError or
        ConfigReadError.
        """
        file = str(self._path)
        with self._lock:
            raw = self._read()
            if raw is None:
                config = Config.default()
                raw = dump_config_text(config.to_dict()).encode()
                try:
                    self._path.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write(self._path, raw)
                except OSError as exc:
                    # A read-only home or service folder: the defaults still work, and
                    # a later save reports the same problem where the user can act on it.
                    log.warning("cannot create the config file %s (%s); running with the "
                                "default settings", file, exc.strerror or exc)
                self._remember(raw, config)
                return config
            try:
                config = parse_config_bytes(raw, file)
            except ConfigError:
                # The caller gets this error now; the watcher need not repeat it.
                self._handled = _digest(raw)
                self._signature = self._stat_signature()
                raise
            self._remember(raw, config)
            return config

    def save(self, data: Mapping[str, Any]) -> Config:
        """Validate `data` and write it atomically; an invalid config is never written.

        The previous file is first copied to `config.json.bak` when it is valid (otherwise
        the last good content goes there), so the backup always loads. Returns the new
        config. Raises ConfigValidationError; OSError when the disk refuses.
        """
        file = str(self._path)
        try:
            text = dump_config_text(data)
        except (TypeError, ValueError) as exc:
            problem = Problem("", f"cannot be written as JSON: {exc}")
            raise ConfigValidationError(file, [problem]) from None
        # Validate what will be on disk (tuples became lists...), with its line numbers.
        config = parse_config(json.loads(text), text=text, file=file)
        raw = text.encode()
        with self._lock:
            current = self._read_quietly()
            if current != raw:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                backup = self._backup_content(current)
                if backup is not None:
                    atomic_write(self.backup_path, backup)
                atomic_write(self._path, raw)
            self._remember(raw, config)
        return config

    async def watch(self, on_change: OnChange, on_error: OnError, interval: float = 1.0) -> None:
        """Poll the file until cancelled, reporting edits made outside this store.

        A valid edit becomes the current config and is passed to `on_change` (which may be
        async); an invalid one goes to `on_error` once and the old config stays. Content this
        store wrote or loaded is ignored. Call `load()` first: changes are relative to it.
        """
        while True:
            await asyncio.sleep(interval)
            try:
                outcome = self._poll()
            except Exception:
                log.exception("config watcher: polling %s failed", self._path)
                continue
            if outcome is None:
                continue
            try:
                if isinstance(outcome, ConfigError):
                    on_error(outcome)
                else:
                    result = on_change(outcome)
                    if inspect.isawaitable(result):
                        await result
            except Exception:
                # A failing subscriber must not stop config reloads for good.
                log.exception("config watcher: change handler failed")

    def _poll(self) -> Config | ConfigError | None:
        file = str(self._path)
        with self._lock:
            try:
                info = self._path.stat()
            except FileNotFoundError:
                # Editors that save by delete-and-rename leave a short gap; keep the config.
                return None
            except OSError as exc:
                return self._report_read_error(exc)
            signature = (info.st_mtime_ns, info.st_size)
            racy = abs(time.time_ns() - info.st_mtime_ns) < _RACY_WINDOW_NS
            if signature == self._signature and not racy and self._unsettled is None:
                return None
            try:
                raw = self._path.read_bytes()
            except FileNotFoundError:
                return None
            except OSError as exc:
                return self._report_read_error(exc)
            self._read_error = None
            self._signature = signature
            digest = _digest(raw)
            if digest == self._handled:
                self._unsettled = None
                return None
            try:
                config = parse_config_bytes(raw, file)
            except ConfigError as exc:
                if self._unsettled != digest:
                    self._unsettled = digest
                    return None
                self._unsettled = None
                self._handled = digest
                return exc
            self._unsettled = None
            self._remember(raw, config, signature)
            return config

    def _report_read_error(self, exc: OSError) -> ConfigReadError | None:
        reason = exc.strerror or str(exc)
        if reason == self._read_error:
            return None
        self._read_error = reason
        return ConfigReadError(str(self._path), reason)

    def _remember(
        self, raw: bytes, config: Config, signature: tuple[int, int] | None = None
    ) -> None:
        self._config = config
        self._good_raw = raw
        self._handled = _digest(raw)
        self._unsettled = None
        self._signature = signature or self._stat_signature()

    def _stat_signature(self) -> tuple[int, int] | None:
        try:
            info = self._path.stat()
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size)

    def _read(self) -> bytes | None:
        try:
            return self._path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigReadError(str(self._path), exc.strerror or str(exc)) from None

    def _read_quietly(self) -> bytes | None:
        try:
            return self._path.read_bytes()
        except OSError:
            return None

    def _backup_content(self, current: bytes | None) -> bytes | None:
        if current is None:
            return self._good_raw
        if current == self._good_raw:
            return current
        try:
            parse_config_bytes(current, str(self._path))
        except ConfigError:
            # A broken hand edit must not replace the good backup.
            return self._good_raw
        return current
