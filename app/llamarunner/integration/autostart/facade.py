"""Start at login: enable, disable, status and reconcile, the same on every OS."""

from __future__ import annotations

import enum
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from .entry import AutostartStatus, EntryState, LoginEntry
from .installed_app import InstalledApp, find_installed_app
from .launch_agent import LaunchAgent
from .run_key import RunKey
from .xdg import XdgAutostart

log = logging.getLogger(__name__)


class AutostartResult(enum.Enum):
    """What an enable/disable/reconcile did; CLI, tray and app branch on it alike."""

    ENABLED = "enabled"
    ALREADY_ENABLED = "already enabled"
    DISABLED = "disabled"
    ALREADY_DISABLED = "already disabled"
    # A development run: there is no installed app to register.
    NOT_INSTALLED = "not installed"
    FAILED = "failed"

    @property
    def ok(self) -> bool:
        return self not in (AutostartResult.NOT_INSTALLED, AutostartResult.FAILED)

    @property
    def changed(self) -> bool:
        """True when the entry on disk (or in the registry) was written or removed."""
        return self in (AutostartResult.ENABLED, AutostartResult.DISABLED)


@dataclass(frozen=True)
class AutostartOutcome:
    result: AutostartResult
    # A sentence for the user: what happened, or what was wrong and what to do.
    message: str

    @property
    def ok(self) -> bool:
        return self.result.ok


def entry_for_platform(platform: str | None = None) -> LoginEntry:
    """The OS class for `platform` (default: this one); XDG for Linux and the BSDs."""
    platform = sys.platform if platform is None else platform
    if platform == "win32":
        return RunKey()
    if platform == "darwin":
        return LaunchAgent()
    return XdgAutostart()


class Autostart:
    """The one way in for start at login: picks the OS class, knows the installed app.

    `entry` and `target` are for tests (a temporary folder, a fake registry, a stand-in
    installed executable); by default they follow this OS and this process.
    """

    def __init__(self, entry: LoginEntry | None = None, target: Path | None = None) -> None:
        self.entry = entry if entry is not None else entry_for_platform()
        self.app = InstalledApp(target) if target is not None else find_installed_app()
        self._said_not_installed = False

    @property
    def target(self) -> Path | None:
        """The executable registered at login; None in a development run."""
        return self.app.executable

    @property
    def installed(self) -> bool:
        return self.app.executable is not None

    @property
    def not_installed_reason(self) -> str:
        return self.app.reason

    @property
    def location(self) -> str:
        return self.entry.location

    def status(self) -> AutostartStatus:
        """What is registered now, read from disk or the registry (never cached)."""
        return AutostartStatus.of(self.entry.read())

    def enabled(self) -> bool:
        """True when the app starts at the next login (an active entry of ours)."""
        return self.status().active

    def enable(self) -> AutostartOutcome:
        target = self.target
        if target is None:
            return AutostartOutcome(AutostartResult.NOT_INSTALLED, self.app.reason)
        before = self.status()
        if before.active and before.points_to(target):
            return AutostartOutcome(AutostartResult.ALREADY_ENABLED,
                                    f"already starts at login ({before.describe()})")
        try:
            self.entry.write(target)
        except OSError as exc:
            return AutostartOutcome(AutostartResult.FAILED, (
                f"could not register {target} at {self.location}: {_reason(exc)}; "
                "check that you may write there"))
        after = self.status()
        if not (after.active and after.points_to(target)):
            return AutostartOutcome(AutostartResult.FAILED,
                                    f"wrote the entry, but reading it back shows: "
                                    f"{after.describe()}")
        replaced = ""
        if before.state is not EntryState.ABSENT and before.target is not None \
                and not before.points_to(target):
            replaced = f" (it replaces an entry that started {before.target})"
        return AutostartOutcome(AutostartResult.ENABLED,
                                f"starts at login: {after.describe()}{replaced}")

    def disable(self) -> AutostartOutcome:
        """Remove the entry; works in a development run too (removing is always safe)."""
        before = self.status()
        if not before.exists:
            return AutostartOutcome(AutostartResult.ALREADY_DISABLED,
                                    f"does not start at login (no entry at {self.location})")
        try:
            self.entry.remove()
        except OSError as exc:
            return AutostartOutcome(AutostartResult.FAILED, (
                f"could not remove {self.location}: {_reason(exc)}; remove it by hand"))
        return AutostartOutcome(AutostartResult.DISABLED,
                                f"no longer starts at login (removed {self.location})")

    def set_enabled(self, enabled: bool) -> AutostartOutcome:
        return self.enable() if enabled else self.disable()

    def reconcile(self, wanted: bool) -> AutostartOutcome:
        """Make the OS entry match `desktop.start_at_login` (the desktop app, at start and
        after each config reload). A development run leaves the entry alone and says so
        once: the entry, if any, belongs to the installed app.
        """
        if self.target is None:
            if not self._said_not_installed:
                self._said_not_installed = True
                log.info("start at login: leaving the login entry alone: %s", self.app.reason)
            return AutostartOutcome(AutostartResult.NOT_INSTALLED, self.app.reason)
        if not wanted:
            current = self.status()
            if current.exists and current.target is not None \
                    and not current.points_to(self.target):
                # Another copy's entry (the installed app, seen from a test build or a
                # second install): the config of this copy does not speak for it.
                return AutostartOutcome(
                    AutostartResult.ALREADY_DISABLED,
                    f"leaving the login entry of another copy alone ({current.describe()})")
        outcome = self.set_enabled(wanted)
        if outcome.result is AutostartResult.FAILED:
            log.warning("start at login: %s", outcome.message)
        elif outcome.result.changed:
            log.info("start at login: %s", outcome.message)
        return outcome


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
