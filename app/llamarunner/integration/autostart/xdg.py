"""Linux and other freedesktop systems: an XDG autostart .desktop file for the installed app."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

from ...core.files import atomic_write
from .entry import APP_TITLE, FileLoginEntry, FoundEntry

DESKTOP_FILE_NAME = "llamarunner.desktop"
DESKTOP_ENTRY_NAME = APP_TITLE
# The icon name the packages install into the hicolor theme.
DESKTOP_ICON = "llamarunner"
_GROUP = "Desktop Entry"

# Inside a quoted Exec argument these four must be backslash-escaped (Desktop Entry
# Specification, "The Exec key").
_QUOTED_SPECIALS = re.compile(r'(["`$\\])')
_STRING_ESCAPES = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def autostart_dir(environ: Mapping[str, str] | None = None) -> Path:
    """`$XDG_CONFIG_HOME/autostart`, with ~/.config when the variable is unset or not absolute.

    The XDG Base Directory spec says a relative path in these variables is invalid and
    must be ignored.
    """
    env = os.environ if environ is None else environ
    config_home = env.get("XDG_CONFIG_HOME", "")
    base = Path(config_home) if os.path.isabs(config_home) else Path.home() / ".config"
    return base / "autostart"


def escape_string(value: str) -> str:
    """A value of type string as a .desktop file writes it (backslash, newline, tab, CR)."""
    escaped = (value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
               .replace("\r", "\\r"))
    # A leading space would be stripped by readers as the space around `=`.
    return "\\s" + escaped[1:] if escaped.startswith(" ") else escaped


def unescape_string(raw: str) -> str:
    out: list[str] = []
    chars = iter(raw)
    for char in chars:
        if char == "\\":
            following = next(chars, "")
            out.append(_STRING_ESCAPES.get(following, "\\" + following))
        else:
            out.append(char)
    return "".join(out)


def quote_exec_argument(argument: str) -> str:
    """One Exec argument, quoted per the spec, before the file's string escaping.

    Always quoted: paths often hold spaces and other reserved characters, and quoting a
    plain one is allowed. `%` is doubled because the Exec key gives it field-code meaning.
    """
    return '"' + _QUOTED_SPECIALS.sub(r"\\\1", argument).replace("%", "%%") + '"'


def split_exec(command: str) -> list[str]:
    """The argv an Exec value (already string-unescaped) stands for; field codes dropped.

    Follows the spec's double-quote rule, and reads single quotes and bare backslashes the
    way GLib's shell-style parser does, so entries other programs wrote are read too.
    """
    argv: list[str] = []
    current: list[str] = []
    started = False
    quote = ""
    chars = iter(command)
    for char in chars:
        if char == "%":
            following = next(chars, "")
            if following == "%":
                current.append("%")
                started = True
            continue  # %f, %u, %i... stand for launch-time values we never pass
        if quote == '"':
            if char == '"':
                quote = ""
            elif char == "\\":
                following = next(chars, "")
                current.append(following if following in '"`$\\' else "\\" + following)
            else:
                current.append(char)
        elif quote == "'":
            if char == "'":
                quote = ""
            else:
                current.append(char)
        elif char in "\"'":
            quote = char
            started = True
        elif char == "\\":
            current.append(next(chars, ""))
            started = True
        elif char in " \t\n":
            if started:
                argv.append("".join(current))
                current, started = [], False
        else:
            current.append(char)
            started = True
    if quote:
        raise ValueError("an opening quote is never closed")
    if started:
        argv.append("".join(current))
    return argv


def desktop_entry_text(target: Path) -> str:
    """The autostart file for `target`: what `XdgAutostart.write` puts on disk."""
    program = str(target)
    return "\n".join([
        f"[{_GROUP}]",
        "Type=Application",
        f"Name={escape_string(DESKTOP_ENTRY_NAME)}",
        "Comment=Local LLMs behind Ollama and OpenAI compatible APIs",
        f"Exec={escape_string(quote_exec_argument(program))}",
        # A desktop skips the entry once this file is gone (the package was removed), so a
        # stale entry never shows a "program not found" error at login.
        f"TryExec={escape_string(program)}",
        f"Icon={DESKTOP_ICON}",
        "Terminal=false",
        # A tray app opens no window: no busy cursor waiting for one.
        "StartupNotify=false",
        "X-GNOME-Autostart-enabled=true",
        "",
    ])


def parse_desktop_entry(text: str) -> dict[str, str]:
    """The keys of the [Desktop Entry] group, values still string-escaped.

    Raises ValueError when there is no such group.
    """
    values: dict[str, str] = {}
    group: str | None = None
    seen = False
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            group = stripped[1:-1]
            seen = seen or group == _GROUP
            continue
        if group != _GROUP or "=" not in stripped:
            continue
        key, _, value = stripped.partition("=")
        # The first of two equal keys wins, as in GLib's GKeyFile.
        values.setdefault(key.strip(), value.strip())
    if not seen:
        raise ValueError(f"no [{_GROUP}] group")
    return values


class XdgAutostart(FileLoginEntry):
    """`llamarunner.desktop` in `$XDG_CONFIG_HOME/autostart` (freedesktop Autostart spec).

    `folder` fixes the autostart folder (tests); see FileLoginEntry.
    """

    def __init__(self, folder: Path | None = None) -> None:
        super().__init__(DESKTOP_FILE_NAME, autostart_dir, folder)

    def read(self) -> FoundEntry:
        path = self.path
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return FoundEntry.absent(str(path))
        except (OSError, UnicodeDecodeError) as exc:
            return FoundEntry(str(path), exists=True, problem=f"cannot read it ({exc})")
        try:
            values = parse_desktop_entry(text)
            argv = split_exec(unescape_string(values.get("Exec", "")))
        except ValueError as exc:
            return FoundEntry(str(path), exists=True, problem=f"not a desktop entry ({exc})")
        if not argv:
            return FoundEntry(str(path), exists=True, problem="it has no Exec command")
        target = argv[0]
        if not os.path.isabs(target):
            # A bare name is looked up on PATH at login; report what that finds.
            target = shutil.which(target) or target
        name = unescape_string(values.get("Name", ""))
        kind = values.get("Type", "")
        problem = ""
        if kind != "Application":
            problem = f"its Type is {kind!r}, not 'Application'"
        elif name != DESKTOP_ENTRY_NAME:
            problem = f"its Name is {name!r}, not {DESKTOP_ENTRY_NAME!r}"
        # Hidden=true means "deleted" to the Autostart spec; GNOME's startup settings
        # switch an entry off with X-GNOME-Autostart-enabled=false.
        switched_off = (values.get("Hidden", "").lower() == "true"
                        or values.get("X-GNOME-Autostart-enabled", "").lower() == "false")
        return FoundEntry(str(path), exists=True, ours=not problem, target=target,
                          switched_off=switched_off, problem=problem)

    def write(self, target: Path) -> None:
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, desktop_entry_text(target).encode("utf-8"))

    def remove(self) -> bool:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True
