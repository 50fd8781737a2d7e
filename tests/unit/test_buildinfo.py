"""buildinfo: the version lines shown by --version and the About box."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from llamarunner import __version__, buildinfo


def _fake_binary(folder: Path) -> Path:
    binary = folder / "bin" / "llama-server"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(binary.stat().st_mode | stat.S_IEXEC)
    return binary


def test_names_version_recorded_beside_the_binary(tmp_path, monkeypatch) -> None:
    binary = _fake_binary(tmp_path)
    (tmp_path / "runtime.json").write_text(json.dumps({"version": "1.2.3"}))
    monkeypatch.setenv("LLAMARUNNER_LLAMA_SERVER", str(binary))
    assert buildinfo.runtime_summary() == f"llama-server 1.2.3 (env: {binary})"
    assert buildinfo.version_text().splitlines() == [
        f"llamarunner {__version__}", f"llama-server 1.2.3 (env: {binary})",
    ]


def test_unknown_version_when_nothing_recorded(tmp_path, monkeypatch) -> None:
    binary = _fake_binary(tmp_path)
    monkeypatch.setenv("LLAMARUNNER_LLAMA_SERVER", str(binary))
    assert "unknown version" in buildinfo.runtime_summary()


def test_missing_runtime_says_how_to_get_one(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("LLAMARUNNER_LLAMA_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("LLAMARUNNER_CACHE_DIR", str(tmp_path / "cache"))
    summary = buildinfo.runtime_summary()
    assert summary.startswith("llama-server: not found")
    assert "llamarunner runtime install" in summary


@pytest.mark.skipif(os.name == "nt", reason="POSIX executable bit")
def test_version_text_is_two_lines() -> None:
    assert len(buildinfo.version_text().splitlines()) == 2
