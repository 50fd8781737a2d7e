"""Fixtures for the frozen-app tests: the bundle (built once, cached) and a display for it.

The bundle is built by installer/build_bundle.py into its cache, keyed by a hash of what
goes into it, so scripts/test builds it once before pytest (with visible progress) and
every later run reuses it until app/, resources/, the spec or the tools change. The cache
folder is resolved here at import time, before the suite's autouse fixtures move HOME and
LLAMARUNNER_CACHE_DIR to temporary folders.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from tests.support.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
INSTALLER = ROOT / "installer"

SelfTest = Callable[..., subprocess.CompletedProcess[str]]


_BUILD_BUNDLE = load_script(INSTALLER / "build_bundle.py", "llamarunner_build_bundle")
_BUILD_PACKAGES = load_script(INSTALLER / "linux" / "build_packages.py",
                              "llamarunner_build_packages")
_NOTICES = load_script(INSTALLER / "notices.py", "llamarunner_notices")
BUNDLE_CACHE: Path = _BUILD_BUNDLE.cache_root()


@pytest.fixture(scope="session")
def build_bundle() -> ModuleType:
    """installer/build_bundle.py as a module."""
    return _BUILD_BUNDLE


@pytest.fixture(scope="session")
def notices() -> ModuleType:
    """installer/notices.py as a module."""
    return _NOTICES


@pytest.fixture(scope="session")
def build_packages() -> ModuleType:
    """installer/linux/build_packages.py as a module."""
    return _BUILD_PACKAGES


@pytest.fixture(scope="session")
def bundle_exe(build_bundle: ModuleType) -> Path:
    """The cached bundle's executable, built first if nothing matches the current inputs."""
    pytest.importorskip("PyInstaller", reason="the bundle extra is not installed")
    try:
        runtime = build_bundle.read_runtime(build_bundle.default_runtime_binary())
        exe: Path = build_bundle.cached_build(runtime, BUNDLE_CACHE)
    except build_bundle.BundleError as exc:
        pytest.fail(f"cannot build the bundle: {exc}")
    return exe


@pytest.fixture(scope="session")
def bundle_dir(bundle_exe: Path) -> Path:
    return bundle_exe.parent


@pytest.fixture(scope="session")
def selftest(tiny_model: Path) -> SelfTest:
    """Run installer/selftest.py as the release workflow does, on an executable."""

    def run(exe: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        gui = "yes" if env and env.get("DISPLAY") else "no"
        return subprocess.run(
            [sys.executable, str(INSTALLER / "selftest.py"), str(exe),
             "--model", str(tiny_model), "--gui", gui],
            env=env, capture_output=True, text=True, timeout=300, check=False,
        )

    return run


@pytest.fixture
def display_env() -> Iterator[dict[str, str] | None]:
    """The environment with DISPLAY set to a private Xvfb, or None without Xvfb.

    Per test, not per session: the suite fails any test that leaves a child process.
    """
    if not sys.platform.startswith("linux") or shutil.which("Xvfb") is None:
        yield None
        return
    read_fd, write_fd = os.pipe()
    # -displayfd: Xvfb picks a free display itself and writes its number when ready.
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], 20)
        assert ready, "Xvfb did not start"
        number = int(os.read(read_fd, 32).decode().strip())
        env = {k: v for k, v in os.environ.items() if k not in ("WAYLAND_DISPLAY",
                                                                 "QT_QPA_PLATFORM")}
        yield {**env, "DISPLAY": f":{number}"}
    finally:
        os.close(read_fd)
        xvfb.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            xvfb.wait(timeout=5)
        if xvfb.poll() is None:
            xvfb.kill()
            xvfb.wait()
