"""What a login entry is, whatever the OS: its state as found, and what each OS class offers."""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# The name users see for the entry (desktop settings, Task Manager's Startup tab).
APP_TITLE = "LlamaRunner Pro"


class EntryState(enum.Enum):
    """What was found where the entry lives, from the user's point of view."""

    ABSENT = "absent"
    # Ours, pointing at an executable that exists, and not switched off: starts at login.
    ACTIVE = "active"
    # Ours, but the executable it starts is gone (the app was moved or removed).
    STALE = "stale"
    # Ours, but the desktop's own switch turned it off (GNOME's startup applications,
    # Task Manager's Startup tab, launchd's Disabled key).
    SWITCHED_OFF = "switched off"
    # Something under our name that this app did not write, or cannot read.
    FOREIGN = "foreign"


@dataclass(frozen=True)
class FoundEntry:
    """The raw facts an OS class read; the facade adds whether the target exists."""

    # Where the entry lives: a file path, or a registry key and value name.
    location: str
    exists: bool
    # Written in the form this app writes (right type, label, name...).
    ours: bool = False
    # The executable it starts, as written (None when there is none to read).
    target: str | None = None
    switched_off: bool = False
    # Why an entry is foreign, in words (unreadable file, unexpected value type...).
    problem: str = ""

    @classmethod
    def absent(cls, location: str) -> FoundEntry:
        return cls(location, exists=False)


@dataclass(frozen=True)
class AutostartStatus:
    """The entry as it really is on disk or in the registry, checked against the target."""

    location: str
    exists: bool
    ours: bool
    target: str | None
    target_exists: bool
    switched_off: bool = False
    problem: str = ""

    @classmethod
    def of(cls, found: FoundEntry) -> AutostartStatus:
        target_exists = found.target is not None and os.path.isfile(found.target)
        return cls(found.location, found.exists, found.ours, found.target, target_exists,
                   found.switched_off, found.problem)

    @property
    def state(self) -> EntryState:
        if not self.exists:
            return EntryState.ABSENT
        if not self.ours:
            return EntryState.FOREIGN
        if not self.target_exists:
            return EntryState.STALE
        if self.switched_off:
            return EntryState.SWITCHED_OFF
        return EntryState.ACTIVE

    @property
    def active(self) -> bool:
        """True when the entry will start the app at the next login."""
        return self.state is EntryState.ACTIVE

    def points_to(self, target: Path | str) -> bool:
        """True when the entry starts exactly `target` (compared as the OS compares paths)."""
        if self.target is None:
            return False
        return os.path.normcase(self.target) == os.path.normcase(str(target))

    def describe(self) -> str:
        """One line for `llamarunner autostart status` and the tray's tooltip."""
        state = self.state
        if state is EntryState.ABSENT:
            return f"not registered (no entry at {self.location})"
        if state is EntryState.FOREIGN:
            why = f": {self.problem}" if self.problem else ""
            return f"an entry this app did not write is at {self.location}{why}"
        if state is EntryState.STALE:
            return (f"stale entry at {self.location}: it starts {self.target}, which no "
                    "longer exists")
        if state is EntryState.SWITCHED_OFF:
            return (f"registered at {self.location} (starts {self.target}) but switched off "
                    "in the system's startup settings")
        return f"registered at {self.location}: starts {self.target}"


class LoginEntry(Protocol):
    """One OS's way to start a program at login; the facade picks one per platform."""

    @property
    def location(self) -> str:
        """Where the entry lives (for messages), whether or not it exists."""
        ...

    def read(self) -> FoundEntry:
        """What is there now; never raises for a missing or malformed entry."""
        ...

    def write(self, target: Path) -> None:
        """Register `target` (an absolute executable path); raises OSError on failure."""
        ...

    def remove(self) -> bool:
        """Delete the entry; False when there was none. Raises OSError on failure."""
        ...


class FileLoginEntry:
    """Shared by the entries that are one file in a per-user folder (XDG, LaunchAgents).

    `folder` fixes that folder (tests); without it `default_folder()` finds it from the
    environment each time, as the desktop or launchd itself does at login.
    """

    def __init__(self, file_name: str, default_folder: Callable[[], Path],
                 folder: Path | None = None) -> None:
        self._file_name = file_name
        self._default_folder = default_folder
        self._folder = folder

    @property
    def path(self) -> Path:
        return (self._folder or self._default_folder()) / self._file_name

    @property
    def location(self) -> str:
        return str(self.path)
