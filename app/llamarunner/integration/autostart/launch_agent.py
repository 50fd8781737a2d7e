"""macOS: a per-user LaunchAgent that runs the installed app's executable at login."""

from __future__ import annotations

import plistlib
from pathlib import Path
from typing import Any

from ...core.files import atomic_write
from .entry import FileLoginEntry, FoundEntry

LAUNCH_AGENT_LABEL = "org.llamarunner.pro"
LAUNCH_AGENT_FILE_NAME = f"{LAUNCH_AGENT_LABEL}.plist"
# Where the installer puts the app, and the executable inside it.
MACOS_APP_NAME = "LlamaRunner Pro.app"
MACOS_EXECUTABLE = "llamarunner"
# The app's CFBundleIdentifier (installer/llamarunner.spec).
MACOS_BUNDLE_ID = "org.llamarunner.pro"


def launch_agents_dir() -> Path:
    return Path.home() / "Library" / "LaunchAgents"


def launch_agent_plist(target: Path) -> dict[str, Any]:
    """The job `LaunchAgent.write` registers: start `target` once, when the user logs in.

    No KeepAlive: quitting from the tray must stay quit. The file is only written, never
    `launchctl load`ed: loading it now would start a second copy of the running app.
    """
    return {
        "Label": LAUNCH_AGENT_LABEL,
        "ProgramArguments": [str(target)],
        "RunAtLoad": True,
        # Scheduled like an app the user started, not throttled like a background daemon.
        "ProcessType": "Interactive",
        # macOS 13+ lists the job under the app's name and icon in System Settings > Login
        # Items, instead of as an item from an unidentified developer.
        "AssociatedBundleIdentifiers": [MACOS_BUNDLE_ID],
    }


class LaunchAgent(FileLoginEntry):
    """`~/Library/LaunchAgents/org.llamarunner.pro.plist` (launchd.plist(5)).

    macOS 13 and later also keep an on/off switch per login item in System Settings that
    no file shows; a job switched off there reads as registered here.
    """

    def __init__(self, folder: Path | None = None) -> None:
        super().__init__(LAUNCH_AGENT_FILE_NAME, launch_agents_dir, folder)

    def read(self) -> FoundEntry:
        path = self.path
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return FoundEntry.absent(str(path))
        except OSError as exc:
            return FoundEntry(str(path), exists=True, problem=f"cannot read it ({exc})")
        try:
            job = plistlib.loads(raw)
        except (plistlib.InvalidFileException, ValueError, TypeError, OverflowError) as exc:
            return FoundEntry(str(path), exists=True, problem=f"not a property list ({exc})")
        if not isinstance(job, dict):
            return FoundEntry(str(path), exists=True, problem="not a launchd job (no dict)")
        label = job.get("Label")
        # launchd runs Program when given, else the first of ProgramArguments.
        program = job.get("Program")
        arguments = job.get("ProgramArguments")
        if not isinstance(program, str) and isinstance(arguments, list) and arguments:
            program = arguments[0]
        target = program if isinstance(program, str) and program else None
        problem = ""
        if label != LAUNCH_AGENT_LABEL:
            problem = f"its Label is {label!r}, not {LAUNCH_AGENT_LABEL!r}"
        elif target is None:
            problem = "it names no program to run"
        elif job.get("RunAtLoad") is not True:
            problem = "it does not run at load (RunAtLoad is not true)"
        return FoundEntry(str(path), exists=True, ours=not problem, target=target,
                          switched_off=job.get("Disabled") is True, problem=problem)

    def write(self, target: Path) -> None:
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, plistlib.dumps(launch_agent_plist(target), fmt=plistlib.FMT_XML))
        # launchd ignores an agent that group or others may write; replacing a file keeps
        # its old mode, so set the usual one explicitly.
        path.chmod(0o644)

    def remove(self) -> bool:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True
