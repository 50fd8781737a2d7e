"""Windows: a value under the user's Run key that starts the installed app's exe at login."""

from __future__ import annotations

import ntpath
import sys
from pathlib import Path
from typing import Protocol

from .entry import APP_TITLE, FoundEntry

if sys.platform == "win32":
    import winreg

# Both under HKEY_CURRENT_USER: per user, no elevation needed.
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
# Where Task Manager's Startup tab (and Settings > Apps > Startup) records its switch.
STARTUP_APPROVED_KEY = r"Software\Microsoft\Windows\CurrentVersion\Explorer\StartupApproved\Run"
RUN_VALUE_NAME = APP_TITLE
WINDOWS_EXECUTABLE = "llamarunner.exe"

# winreg's value types, restated so the class and its tests run on every OS.
REG_SZ = 1
REG_EXPAND_SZ = 2
REG_BINARY = 3


class Registry(Protocol):
    """The few HKEY_CURRENT_USER operations the Run key needs: the seam tests replace."""

    def query(self, key: str, name: str) -> tuple[object, int] | None:
        """(data, type) of a value, or None when the key or the value does not exist."""
        ...

    def set_value(self, key: str, name: str, kind: int, data: str) -> None:
        """Create the key if needed and write a string value; raises OSError."""
        ...

    def delete_value(self, key: str, name: str) -> bool:
        """Delete a value; False when it was not there. Raises OSError otherwise."""
        ...


def run_value_data(target: Path | str) -> str:
    """The Run value's data for `target`: its absolute path in double quotes.

    Unquoted, a path with spaces ("C:\\Program Files\\...") is split by Windows at the first
    space and may run another program (CWE-428).
    """
    return f'"{target}"'


def command_program(command: str) -> str | None:
    """The program a Run value starts: the quoted part, else up to the first space."""
    command = command.strip()
    if command.startswith('"'):
        end = command.find('"', 1)
        program = command[1:end] if end > 0 else ""
    else:
        program = command.split(" ", 1)[0]
    return program or None


def _approved_disabled(data: object) -> bool:
    # The first byte is even (02, 06) when the entry is allowed and odd (03, 07) once the
    # user switched it off; the bytes after it are the time of the switch.
    return isinstance(data, bytes | bytearray) and bool(data) and bool(data[0] & 1)


class RunKey:
    """The `LlamaRunner Pro` value under HKCU's Run key (all registry access via `registry`)."""

    def __init__(self, registry: Registry | None = None) -> None:
        self._registry = registry

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = windows_registry()
        return self._registry

    @property
    def location(self) -> str:
        return rf"HKEY_CURRENT_USER\{RUN_KEY}\{RUN_VALUE_NAME}"

    def read(self) -> FoundEntry:
        try:
            found = self.registry.query(RUN_KEY, RUN_VALUE_NAME)
        except OSError as exc:
            return FoundEntry(self.location, exists=True, problem=f"cannot read it ({exc})")
        if found is None:
            return FoundEntry.absent(self.location)
        data, kind = found
        if kind not in (REG_SZ, REG_EXPAND_SZ) or not isinstance(data, str):
            return FoundEntry(self.location, exists=True,
                              problem=f"it is not a string value (type {kind})")
        command = ntpath.expandvars(data) if kind == REG_EXPAND_SZ else data
        target = command_program(command)
        if target is None:
            return FoundEntry(self.location, exists=True, problem="it is empty")
        try:
            approved = self.registry.query(STARTUP_APPROVED_KEY, RUN_VALUE_NAME)
        except OSError:
            approved = None
        switched_off = approved is not None and _approved_disabled(approved[0])
        return FoundEntry(self.location, exists=True, ours=True, target=target,
                          switched_off=switched_off)

    def write(self, target: Path) -> None:
        self.registry.set_value(RUN_KEY, RUN_VALUE_NAME, REG_SZ, run_value_data(target))
        # Turning it on here must really turn it on: a switch-off left by Task Manager
        # would keep Windows from running the value just written.
        approved = self.registry.query(STARTUP_APPROVED_KEY, RUN_VALUE_NAME)
        if approved is not None and _approved_disabled(approved[0]):
            self.registry.delete_value(STARTUP_APPROVED_KEY, RUN_VALUE_NAME)

    def remove(self) -> bool:
        removed = self.registry.delete_value(RUN_KEY, RUN_VALUE_NAME)
        # Task Manager's record for a value that is gone only clutters the registry.
        self.registry.delete_value(STARTUP_APPROVED_KEY, RUN_VALUE_NAME)
        return removed


def windows_registry() -> Registry:
    """The real registry (Windows only)."""
    if sys.platform == "win32":
        return _WinRegistry()
    raise OSError("the Windows registry only exists on Windows")


if sys.platform == "win32":

    class _WinRegistry:
        """Registry over winreg, HKEY_CURRENT_USER only."""

        def query(self, key: str, name: str) -> tuple[object, int] | None:
            try:
                with winreg.OpenKey(winreg.HKEY_CURRENT_USER, key, 0,
                                    winreg.KEY_QUERY_VALUE) as handle:
                    data, kind = winreg.QueryValueEx(handle, name)
            except FileNotFoundError:
                return None
            return data, kind

        def set_value(self, key: str, name: str, kind: int, data: str) -> None:
            with winreg.CreateKeyEx(winreg.HKEY_CURRENT_USER, key, 0,
                                    winreg.KEY_SET_VALUE) as handle:
                winreg.SetValueEx(handle, name, 0, kind, data)

        def delete_value(self, key: str, name: str) -> bool:
            try:
                with winreg.OpenKey(winreg.HKEY_CURRENT_USER, key, 0,
                                    winreg.KEY_SET_VALUE) as handle:
                    winreg.DeleteValue(handle, name)
            except FileNotFoundError:
                return False
            return True
