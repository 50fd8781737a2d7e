"""macOS start at login: the exact LaunchAgent plist, round-tripped through plistlib."""

from __future__ import annotations

import plistlib
import stat
from pathlib import Path

import pytest

from llamarunner.integration.autostart import (
    LAUNCH_AGENT_FILE_NAME,
    LAUNCH_AGENT_LABEL,
    Autostart,
    AutostartResult,
    EntryState,
    LaunchAgent,
    launch_agent_plist,
    launch_agents_dir,
)


def app_bundle(folder: Path) -> Path:
    """A stand-in installed app: `LlamaRunner Pro.app/Contents/MacOS/llamarunner`."""
    exe = folder / "LlamaRunner Pro.app" / "Contents" / "MacOS" / "llamarunner"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    return exe


@pytest.fixture
def agents(tmp_path: Path) -> Path:
    return tmp_path / "Library" / "LaunchAgents"


def test_the_names_are_the_fixed_interface() -> None:
    assert LAUNCH_AGENT_LABEL == "org.llamarunner.pro"
    assert LAUNCH_AGENT_FILE_NAME == "org.llamarunner.pro.plist"
    assert launch_agents_dir() == Path.home() / "Library" / "LaunchAgents"
    assert LaunchAgent().path == Path.home() / "Library/LaunchAgents/org.llamarunner.pro.plist"


def test_enable_writes_exactly_this_plist(agents: Path, tmp_path: Path) -> None:
    exe = app_bundle(tmp_path / "Applications")
    autostart = Autostart(LaunchAgent(agents), target=exe)
    outcome = autostart.enable()
    assert outcome.result is AutostartResult.ENABLED, outcome.message
    path = agents / "org.llamarunner.pro.plist"
    with path.open("rb") as handle:
        job = plistlib.load(handle)
    assert job == {
        "Label": "org.llamarunner.pro",
        "ProgramArguments": [str(tmp_path / "Applications/LlamaRunner Pro.app/Contents/MacOS"
                                 "/llamarunner")],
        "RunAtLoad": True,
        "ProcessType": "Interactive",
        "AssociatedBundleIdentifiers": ["org.llamarunner.pro"],
    }
    assert job == launch_agent_plist(exe)
    assert path.read_bytes().startswith(b"<?xml")  # XML, which users can read and edit
    # launchd skips agents that others may write.
    assert stat.S_IMODE(path.stat().st_mode) == 0o644

    status = autostart.status()
    assert status.state is EntryState.ACTIVE and status.target == str(exe)
    assert autostart.enable().result is AutostartResult.ALREADY_ENABLED
    assert autostart.disable().result is AutostartResult.DISABLED
    assert not path.exists()
    assert autostart.status().state is EntryState.ABSENT


def test_the_mode_is_fixed_even_when_replacing_a_loose_file(agents: Path,
                                                            tmp_path: Path) -> None:
    agents.mkdir(parents=True)
    path = agents / LAUNCH_AGENT_FILE_NAME
    path.write_bytes(b"old")
    path.chmod(0o666)
    Autostart(LaunchAgent(agents), target=app_bundle(tmp_path)).enable()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def write_job(agents: Path, job: object, fmt: plistlib.PlistFormat = plistlib.FMT_XML) -> None:
    agents.mkdir(parents=True, exist_ok=True)
    (agents / LAUNCH_AGENT_FILE_NAME).write_bytes(plistlib.dumps(job, fmt=fmt))


def test_a_binary_plist_with_program_is_read(agents: Path, tmp_path: Path) -> None:
    exe = app_bundle(tmp_path)
    write_job(agents, {"Label": LAUNCH_AGENT_LABEL, "Program": str(exe), "RunAtLoad": True,
                       "ProgramArguments": ["ignored"]}, plistlib.FMT_BINARY)
    found = LaunchAgent(agents).read()
    assert found.ours and found.target == str(exe)


def test_disabled_and_stale_jobs(agents: Path, tmp_path: Path) -> None:
    exe = app_bundle(tmp_path)
    autostart = Autostart(LaunchAgent(agents), target=exe)
    write_job(agents, {**launch_agent_plist(exe), "Disabled": True})
    assert autostart.status().state is EntryState.SWITCHED_OFF
    assert autostart.enable().result is AutostartResult.ENABLED
    assert "Disabled" not in plistlib.loads((agents / LAUNCH_AGENT_FILE_NAME).read_bytes())

    write_job(agents, launch_agent_plist(tmp_path / "Trash" / "llamarunner"))
    status = autostart.status()
    assert status.state is EntryState.STALE and "no longer exists" in status.describe()


@pytest.mark.parametrize(("content", "problem"), [
    (b"garbage", "not a property list"),
    (plistlib.dumps(["a", "list"]), "not a launchd job"),
    (plistlib.dumps({"Label": "com.other.app", "ProgramArguments": ["/x"],
                     "RunAtLoad": True}), "its Label is 'com.other.app'"),
    (plistlib.dumps({"Label": LAUNCH_AGENT_LABEL, "RunAtLoad": True}), "names no program"),
    (plistlib.dumps({"Label": LAUNCH_AGENT_LABEL, "ProgramArguments": ["/x"]}),
     "RunAtLoad is not true"),
])
def test_foreign_or_broken_files_are_reported(agents: Path, tmp_path: Path, content: bytes,
                                              problem: str) -> None:
    agents.mkdir(parents=True)
    (agents / LAUNCH_AGENT_FILE_NAME).write_bytes(content)
    autostart = Autostart(LaunchAgent(agents), target=app_bundle(tmp_path))
    status = autostart.status()
    assert status.state is EntryState.FOREIGN and problem in status.describe()
    assert autostart.enable().result is AutostartResult.ENABLED
    assert autostart.status().active
