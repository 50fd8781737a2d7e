"""Windows start at login: the exact Run value, through a fake registry seam."""

from __future__ import annotations

import ntpath
import sys
from pathlib import Path

import pytest

from llamarunner.integration.autostart import (
    REG_BINARY,
    REG_EXPAND_SZ,
    REG_SZ,
    RUN_KEY,
    RUN_VALUE_NAME,
    STARTUP_APPROVED_KEY,
    Autostart,
    AutostartResult,
    EntryState,
    RunKey,
    command_program,
    run_value_data,
    windows_registry,
)

INSTALLED = r"C:\Users\u\AppData\Local\Programs\LlamaRunner Pro\llamarunner.exe"
# Task Manager's records: first byte 02 = allowed, 03 = switched off, then a timestamp.
APPROVED = bytes([2]) + bytes(11)
SWITCHED_OFF = bytes([3]) + bytes(11)


class FakeRegistry:
    """HKEY_CURRENT_USER as a dict: {(key, value name): (data, type)}."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], tuple[object, int]] = {}
        self.fail: OSError | None = None

    def query(self, key: str, name: str) -> tuple[object, int] | None:
        return self.values.get((key, name))

    def set_value(self, key: str, name: str, kind: int, data: str) -> None:
        if self.fail is not None:
            raise self.fail
        self.values[(key, name)] = (data, kind)

    def delete_value(self, key: str, name: str) -> bool:
        if self.fail is not None:
            raise self.fail
        return self.values.pop((key, name), None) is not None


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry()


def test_the_names_are_the_fixed_interface() -> None:
    assert RUN_KEY == r"Software\Microsoft\Windows\CurrentVersion\Run"
    assert RUN_VALUE_NAME == "LlamaRunner Pro"
    assert (REG_SZ, REG_EXPAND_SZ, REG_BINARY) == (1, 2, 3)  # winreg's values
    assert run_value_data(INSTALLED) == f'"{INSTALLED}"'
    assert RunKey(FakeRegistry()).location == \
        r"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\LlamaRunner Pro"


def test_write_sets_exactly_one_quoted_string_value(registry: FakeRegistry) -> None:
    RunKey(registry).write(Path(INSTALLED))
    assert registry.values == {
        (r"Software\Microsoft\Windows\CurrentVersion\Run", "LlamaRunner Pro"):
            ('"C:\\Users\\u\\AppData\\Local\\Programs\\LlamaRunner Pro\\llamarunner.exe"',
             REG_SZ),
    }
    found = RunKey(registry).read()
    assert found.ours and found.target == INSTALLED


def test_enable_status_disable_through_the_facade(registry: FakeRegistry,
                                                  tmp_path: Path) -> None:
    exe = tmp_path / "LlamaRunner Pro" / "llamarunner.exe"
    exe.parent.mkdir()
    exe.write_bytes(b"MZ")
    autostart = Autostart(RunKey(registry), target=exe)
    assert autostart.status().state is EntryState.ABSENT
    outcome = autostart.enable()
    assert outcome.result is AutostartResult.ENABLED, outcome.message
    assert registry.values[(RUN_KEY, RUN_VALUE_NAME)] == (f'"{exe}"', REG_SZ)
    assert autostart.status().active
    assert autostart.enable().result is AutostartResult.ALREADY_ENABLED
    registry.values[(STARTUP_APPROVED_KEY, RUN_VALUE_NAME)] = (APPROVED, REG_BINARY)
    assert autostart.disable().result is AutostartResult.DISABLED
    assert registry.values == {}  # Task Manager's record goes with the value
    assert autostart.disable().result is AutostartResult.ALREADY_DISABLED


def test_a_value_switched_off_in_task_manager_reads_off_and_enable_turns_it_on(
        registry: FakeRegistry, tmp_path: Path) -> None:
    exe = tmp_path / "llamarunner.exe"
    exe.write_bytes(b"MZ")
    autostart = Autostart(RunKey(registry), target=exe)
    autostart.enable()
    registry.values[(STARTUP_APPROVED_KEY, RUN_VALUE_NAME)] = (SWITCHED_OFF, REG_BINARY)
    assert autostart.status().state is EntryState.SWITCHED_OFF
    assert autostart.enable().result is AutostartResult.ENABLED
    assert (STARTUP_APPROVED_KEY, RUN_VALUE_NAME) not in registry.values
    assert autostart.status().active
    # An "allowed" record is left alone.
    registry.values[(STARTUP_APPROVED_KEY, RUN_VALUE_NAME)] = (APPROVED, REG_BINARY)
    RunKey(registry).write(exe)
    assert registry.values[(STARTUP_APPROVED_KEY, RUN_VALUE_NAME)] == (APPROVED, REG_BINARY)


def test_stale_and_foreign_values(registry: FakeRegistry, tmp_path: Path) -> None:
    autostart = Autostart(RunKey(registry), target=tmp_path / "missing.exe")
    registry.values[(RUN_KEY, RUN_VALUE_NAME)] = (f'"{INSTALLED}" --minimized', REG_SZ)
    status = autostart.status()
    assert status.state is EntryState.STALE and status.target == INSTALLED
    registry.values[(RUN_KEY, RUN_VALUE_NAME)] = (b"\x00", REG_BINARY)
    status = autostart.status()
    assert status.state is EntryState.FOREIGN and "not a string value" in status.describe()
    registry.values[(RUN_KEY, RUN_VALUE_NAME)] = ("", REG_SZ)
    assert "empty" in autostart.status().describe()


def test_expandable_values_are_expanded(registry: FakeRegistry,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALAPPDATA", r"C:\Users\u\AppData\Local")
    registry.values[(RUN_KEY, RUN_VALUE_NAME)] = (
        r'"%LOCALAPPDATA%\Programs\LlamaRunner Pro\llamarunner.exe"', REG_EXPAND_SZ)
    assert RunKey(registry).read().target == ntpath.expandvars(
        r"%LOCALAPPDATA%\Programs\LlamaRunner Pro\llamarunner.exe")


@pytest.mark.parametrize(("command", "program"), [
    (f'"{INSTALLED}"', INSTALLED),
    (f'"{INSTALLED}" --flag', INSTALLED),
    (r"C:\Apps\app.exe --flag", r"C:\Apps\app.exe"),
    ('"unterminated', None),
    ("  ", None),
])
def test_command_program(command: str, program: str | None) -> None:
    assert command_program(command) == program


def test_registry_errors_become_failed_results(registry: FakeRegistry, tmp_path: Path) -> None:
    exe = tmp_path / "llamarunner.exe"
    exe.write_bytes(b"MZ")
    autostart = Autostart(RunKey(registry), target=exe)
    registry.fail = PermissionError(13, "Access is denied")
    outcome = autostart.enable()
    assert outcome.result is AutostartResult.FAILED
    assert "Access is denied" in outcome.message and RUN_KEY in outcome.message
    registry.fail = None
    autostart.enable()
    registry.fail = PermissionError(13, "Access is denied")
    assert autostart.disable().result is AutostartResult.FAILED


def test_the_real_registry_exists_only_on_windows() -> None:
    if sys.platform == "win32":
        assert windows_registry() is not None
    else:
        with pytest.raises(OSError, match="only exists on Windows"):
            windows_registry()
