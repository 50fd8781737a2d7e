"""Build the Windows installer: bundle, self-test, then Inno Setup's ISCC on llamarunner.iss.

    python installer/windows/build_installer.py                 # all three steps
    python installer/windows/build_installer.py --skip-bundle   # bundle already built
    python installer/windows/build_installer.py --dry-run       # print the commands only

The result is dist/LlamaRunnerPro-<version>-windows-x64-setup.exe. The release workflow
runs the bundle and the self-test as steps of their own and then this script with
--skip-bundle --skip-selftest, so the installer packs exactly the bundle that was tested.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ISS_SCRIPT = HERE / "llamarunner.iss"
ICON = REPO / "resources" / "icons" / "app.ico"
EXE_NAME = "llamarunner.exe"
BUNDLE_NAME = "llamarunner"
# Inno Setup 6.3 brought the x64compatible architecture identifier the script uses.
ISCC_HINT = (
    "Inno Setup 6.3 or newer is needed: winget install JRSoftware.InnoSetup, "
    "or choco install innosetup, or pass --iscc PATH\\TO\\ISCC.exe"
)


class BuildError(Exception):
    """A step could not run or failed; the message says which and what to do."""


def project_version(pyproject: Path = REPO / "pyproject.toml") -> str:
    """The version in pyproject.toml, the one the app reports."""
    with pyproject.open("rb") as fh:
        version = tomllib.load(fh).get("project", {}).get("version")
    if not isinstance(version, str) or not version:
        raise BuildError(f"{pyproject} has no [project] version")
    return version


def file_version(version: str) -> str:
    """The four-number form Windows VERSIONINFO needs: "1.2.3rc1" -> "1.2.3.0"."""
    match = re.match(r"^\d+(\.\d+){0,3}", version)
    if match is None:
        raise BuildError(f"version {version!r} does not start with a number")
    numbers = match.group(0).split(".")
    return ".".join((numbers + ["0"] * 4)[:4])


def installer_name(version: str) -> str:
    """The setup file's base name (no .exe), also the default in llamarunner.iss."""
    return f"LlamaRunnerPro-{version}-windows-x64-setup"


def find_iscc(
    which: Callable[[str], str | None] = shutil.which,
    env: Mapping[str, str] | None = None,
    exists: Callable[[Path], bool] = Path.is_file,
) -> Path | None:
    """ISCC.exe on PATH or where the Inno Setup 6 installers (machine or per-user) put it."""
    found = which("ISCC") or which("iscc")
    if found:
        return Path(found)
    env = os.environ if env is None else env
    for var in ("ProgramFiles(x86)", "ProgramFiles", "LOCALAPPDATA"):
        base = env.get(var)
        if not base:
            continue
        sub = "Programs\\Inno Setup 6" if var == "LOCALAPPDATA" else "Inno Setup 6"
        candidate = Path(base) / sub / "ISCC.exe"
        if exists(candidate):
            return candidate
    return None


def iscc_command(
    iscc: Path | str,
    *,
    version: str,
    bundle: Path,
    dist: Path,
    icon: Path | None,
    script: Path = ISS_SCRIPT,
) -> list[str]:
    """The ISCC command line: every value the .iss expects arrives as a /D define."""
    argv = [
        str(iscc),
        "/Qp",  # quiet but for progress and errors
        f"/DAppVersion={version}",
        f"/DFileVersion={file_version(version)}",
        f"/DBundleDir={bundle}",
        f"/DOutputDir={dist}",
    ]
    if icon is not None:
        argv.append(f"/DIconFile={icon}")
    argv += [f"/O{dist}", f"/F{installer_name(version)}", str(script)]
    return argv


def bundle_command(runtime: Path | None, dist: Path) -> list[str]:
    argv = [sys.executable, str(REPO / "installer" / "build_bundle.py"), "--dist", str(dist)]
    if runtime is not None:
        argv += ["--runtime", str(runtime)]
    return argv


def selftest_command(exe: Path) -> list[str]:
    return [sys.executable, str(REPO / "installer" / "selftest.py"), str(exe)]


def format_command(argv: Sequence[str]) -> str:
    """How a command is shown: as it would be typed in this OS's usual shell."""
    return subprocess.list2cmdline(argv) if os.name == "nt" else shlex.join(argv)


def run(argv: Sequence[str], *, dry_run: bool) -> None:
    print(f"+ {format_command(argv)}", flush=True)
    if dry_run:
        return
    try:
        rc = subprocess.run(list(argv), check=False).returncode
    except OSError as exc:
        raise BuildError(f"cannot run {argv[0]}: {exc}") from exc
    if rc != 0:
        raise BuildError(f"{Path(argv[0]).name} {' '.join(argv[1:2])} exited with status {rc}")


def build(args: argparse.Namespace) -> Path:
    """Run the steps; return the setup file's path (not created in a dry run)."""
    dist = args.dist.resolve()
    bundle = dist / BUNDLE_NAME
    exe = bundle / EXE_NAME
    version = args.version or project_version()
    if not re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z.+_-]*", version):
        raise BuildError(f"version {version!r} is not usable in a file name")

    if not args.skip_bundle:
        run(bundle_command(args.runtime, dist), dry_run=args.dry_run)
    if not args.dry_run and not exe.is_file():
        raise BuildError(f"{exe} is missing: build the bundle first (drop --skip-bundle)")
    if not args.skip_selftest:
        run(selftest_command(exe), dry_run=args.dry_run)

    iscc = args.iscc or find_iscc()
    if iscc is None:
        if not args.dry_run:
            raise BuildError(f"ISCC.exe not found. {ISCC_HINT}")
        iscc = Path("ISCC.exe")  # a dry run only shows the command
    icon: Path | None = args.icon.resolve()
    if icon is not None and not icon.is_file():
        print(f"warning: {icon} is missing; the installer gets Inno Setup's default icon",
              file=sys.stderr)
        icon = None
    run(iscc_command(iscc, version=version, bundle=bundle, dist=dist, icon=icon),
        dry_run=args.dry_run)
    return dist / f"{installer_name(version)}.exe"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=REPO / "dist",
                        help="folder holding the bundle and receiving the setup (default: dist)")
    parser.add_argument("--runtime", type=Path, default=None,
                        help="llama-server to bundle (default: the cached runtime install)")
    parser.add_argument("--version", default=None,
                        help="version to stamp (default: pyproject.toml's)")
    parser.add_argument("--iscc", type=Path, default=None, help="path of ISCC.exe")
    parser.add_argument("--icon", type=Path, default=ICON, help="setup icon (.ico)")
    parser.add_argument("--skip-bundle", action="store_true",
                        help="use the bundle already in --dist")
    parser.add_argument("--skip-selftest", action="store_true",
                        help="do not run the frozen app's self-test first")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the commands without running them")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        setup = build(args)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.dry_run:
        print(f"dry run: would write {setup}")
    else:
        print(f"installer ready: {setup}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
