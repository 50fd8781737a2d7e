"""Load, validate, save (merged into the file as it is now), back up and watch config.json."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import inspect
import json
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from ..core.errors import LlamaRunnerError
from ..core.files import atomic_write
from . import defaults
from .locate import KeyLocator, KeyPath, render_path
from .merge import MergeConflict, merge
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
# A new config file (and its backup) may hold the API key: readable by its owner only.
_NEW_FILE_MODE = 0o600
_BOM = b"\xef\xbb\xbf"
_INDENT = re.compile(rb"\n([ \t]+)\S")


class ConfigNotSavedError(ConfigError, LlamaRunnerError):
    """A save refused so that nothing in the file is lost; the file was not touched.

    Also a LlamaRunnerError: an API request that changes the config (Ollama's copy and
    delete) answers 409 with this message in its own error shape.
    """

    status = 409
    code = "config_not_saved"
    error_type = "invalid_request_error"


class ConfigFileInvalidError(ConfigNotSavedError):
    """The file as it is now does not parse, validate or read: saving would overwrite it."""

    def __init__(self, cause: ConfigError) -> None:
        self.cause = cause
        self.file = str(getattr(cause, "file", ""))
        self.line: int | None = getattr(cause, "line", None)
        if isinstance(cause, ConfigValidationError) and cause.problems:
            self.line = cause.problems[0].line
        super().__init__(
            f"{cause}\nNot saved: the file has errors and saving would replace what is in "
            "it. Fix the file (or move it away to start from the defaults), then try again.")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.cause,))


class ConfigConflictError(ConfigNotSavedError):
    """The file and the app changed the same keys to different values since the last load."""

    def __init__(self, file: str, paths: Sequence[KeyPath]) -> None:
        self.file = file
        self.paths = tuple(paths)
        keys = ", ".join(render_path(path) for path in self.paths)
        verb = "was" if len(self.paths) == 1 else "were"
        super().__init__(f"{keys} {verb} changed in the file and in the app; reload and try "
                         "again")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.file, self.paths))


@dataclass(frozen=True)
class TextStyle:
    """How a config file is laid out, so that a save keeps the user's layout."""

    indent: str | int = 2
    newline: str = "\n"
    final_newline: bool = True
    bom: bool = False


def text_style(raw: bytes) -> TextStyle:
    """The layout of existing file content: indent, line ending, final newline, BOM."""
    found = _INDENT.search(raw)
    indent: str | int = 2
    if found:
        lead = found.group(1)
        indent = lead.decode() if b"\t" in lead else min(len(lead), 8)
    first = raw.find(b"\n")
    return TextStyle(
        indent=indent,
        newline="\r\n" if first > 0 and raw[first - 1 : first] == b"\r" else "\n",
        final_newline=raw.rstrip(b" \t").endswith(b"\n"),
        bom=raw.startswith(_BOM),
    )


def render_config(data: Mapping[str, Any], style: TextStyle = TextStyle()) -> bytes:
    """The bytes the store writes for `data` in a file's layout (UTF-8 JSON)."""
    # allow_nan=False: Infinity/NaN would make a file that strict JSON readers reject.
    text = json.dumps(data, indent=style.indent, ensure_ascii=False, allow_nan=False)
    if style.final_newline:
        text += "\n"
    if style.newline != "\n":
        # Safe: json.dumps writes a newline inside a string as the two characters \n.
        text = text.replace("\n", style.newline)
    return (_BOM if style.bom else b"") + text.encode()


def _validate(data: Any, text: str, file: str) -> Config:
    """parse_config for data the store dumped itself; `text`'s lines only for problems.

    Dumped data has no duplicate keys, and scanning the text for line numbers costs more
    than the parse itself, so the text is read only when there is a problem to point at.
    """
    try:
        return parse_config(data, file=file)
    except ConfigValidationError:
        return parse_config(data, text=text, file=file)


def _normalised(base: Any) -> Any:
    """A caller's base as `Config.to_dict()` shapes it ("10m" and 600 are one ttl, defaults
    written out); as it is when it does not validate.
    """
    try:
        return parse_config(base).to_dict()
    except ConfigError:
        return base


def _merged_whole(path: KeyPath) -> bool:
    # A model's args are merged as one value: "ctx-size" and "--ctx-size" are one flag, so
    # merging them key by key could write it twice.
    return len(path) == 3 and path[0] == "models" and path[2] == "args"


def default_config_path() -> Path:
    """The per-user config file: e.g. ~/.config/llamarunner/config.json on Linux."""
    folder = platformdirs.user_config_dir(defaults.APP_DIR_NAME, appauthor=False)
    return Path(folder) / defaults.CONFIG_FILE_NAME


def dump_config_text(data: Mapping[str, Any]) -> str:
    """The text of a new config file: 2-space indented JSON, final newline."""
    return render_config(data).decode()


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
                    atomic_write(self._path, raw, mode=_NEW_FILE_MODE)
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

    def save(self, data: Mapping[str, Any], *, base: Mapping[str, Any] | None = None
             ) -> Config:
        """Apply the change from `base` to `data` to the file as it is now, and write it.

        `data` is the whole config the caller wants; `base` the config it started from
        (default: the one this store last loaded or saved, as `Config.to_dict()` shapes
        it). The file is read again first, so edits made to it since then stay: keys only
        the file changed keep the file's value, keys only the caller changed get the
        caller's, and the file's spelling, comments, key order and layout stay where the
        caller changed nothing. A symlink stays a link (its target is written), the file
        keeps its mode, and the previous content is copied to `config.json.bak`.

        Nothing is written when: `data`, or the merged result, does not validate
        (ConfigValidationError); the file does not parse, validate or read
        (ConfigFileInvalidError); both sides changed a key differently
        (ConfigConflictError). Returns the config now in the file; OSError when the disk
        refuses.
        """
        file = str(self._path)
        try:
            text = dump_config_text(data)
        except (TypeError, ValueError) as exc:
            problem = Problem("", f"cannot be written as JSON: {exc}")
            raise ConfigValidationError(file, [problem]) from None
        # Validate what the caller asked for (tuples became lists...), with the lines of
        # its own text: the settings window shows these next to its fields.
        ours = json.loads(text)
        wanted = _validate(ours, text, file)
        with self._lock:
            try:
                current = self._read()
            except ConfigReadError as exc:
                raise ConfigFileInvalidError(exc) from None
            if current is None:
                merged: Any = ours
                style = TextStyle()
            else:
                if current == self._good_raw and self._config is not None:
                    theirs = self._config  # unchanged since the last load or save
                else:
                    try:
                        theirs = parse_config_bytes(current, file)
                    except ConfigError as exc:
                        # Never replace a file that does not parse: the user's text would
                        # be lost with it, and there is nothing to merge the change into.
                        raise ConfigFileInvalidError(exc) from None
                if base is None:
                    start = start_normal = (self._config or theirs).to_dict()
                else:
                    # As JSON, like `ours`: a tuple in the caller's base is the list it
                    # wrote.
                    start = json.loads(dump_config_text(base))
                    start_normal = _normalised(start)
                # Judged as Config.to_dict() shapes them ("10m" and 600 are one ttl),
                # written as each side wrote them.
                normal_forms = (start_normal, wanted.to_dict(), theirs.to_dict())
                try:
                    merged = merge(start, ours, theirs.raw, atomic=_merged_whole,
                                   normal_forms=normal_forms)
                except MergeConflict as exc:
                    raise ConfigConflictError(file, exc.paths) from None
                style = text_style(current)
            raw = render_config(merged, style)
            config = _validate(merged, raw.decode("utf-8-sig"), file)
            if raw != current:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                # The file before this save (valid, or it was refused above); with no file
                # left, the last good content.
                backup = current if current is not None else self._good_raw
                if backup is not None:
                    atomic_write(self.backup_path, backup, mode=_NEW_FILE_MODE)
                atomic_write(self._path, raw, mode=_NEW_FILE_MODE)
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
