"""Which executable start at login registers: the installed app, never a development Python."""

from __future__ import annotations

import os
import plistlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath


@dataclass(frozen=True)
class InstalledApp:
    """The executable to start at login, or why there is none to register."""

    executable: Path | None
    reason: str = ""


def find_installed_app(*, frozen: bool | None = None, executable: str | None = None,
                       platform: str | None = None,
                       environ: Mapping[str, str] | None = None) -> InstalledApp:
    """The installed app this process runs from (arguments default to this process).

    Only a frozen (PyInstaller) build is an installed app. Under a Python interpreter the
    entry would start that interpreter, which belongs to a virtual environment or a
    system Python, not to the app: it breaks as soon as that environment changes.
    """
    frozen = bool(getattr(sys, "frozen", False)) if frozen is None else frozen
    executable = sys.executable if executable is None else executable
    platform = sys.platform if platform is None else platform
    environ = os.environ if environ is None else environ
    if not frozen:
        return InstalledApp(None, (
            f"start at login registers the installed app, and this is a development run "
            f"under the Python interpreter {executable}; install the app (or run its "
            "frozen build) to use it"))
    if platform.startswith("linux") and environ.get("APPIMAGE"):
        # An AppImage runs from a mount that disappears when it exits; the image file
        # itself is what must be started.
        return InstalledApp(Path(environ["APPIMAGE"]))
    path = Path(os.path.abspath(executable))
    if platform == "darwin":
        if "/AppTranslocation/" in path.as_posix():
            # Gatekeeper runs a quarantined app from a random read-only copy; that path
            # is gone after the app quits.
            return InstalledApp(None, (
                "macOS runs this copy of the app from a temporary location (App "
                "Translocation); move LlamaRunner Pro to the Applications folder and "
                "open it from there"))
        return InstalledApp(bundle_executable(path))
    return InstalledApp(path)


def bundle_executable(path: Path) -> Path:
    """The main executable of the .app that holds `path` (itself when not in a bundle)."""
    bundle = next((parent for parent in (path, *path.parents)
                   if PurePath(parent.name).suffix == ".app"), None)
    if bundle is None:
        return path
    name = path.name
    try:
        with open(bundle / "Contents" / "Info.plist", "rb") as handle:
            info = plistlib.load(handle)
        if isinstance(info, dict) and isinstance(info.get("CFBundleExecutable"), str):
            name = info["CFBundleExecutable"]
    except (OSError, plistlib.InvalidFileException, ValueError):
        pass
    return bundle / "Contents" / "MacOS" / name
