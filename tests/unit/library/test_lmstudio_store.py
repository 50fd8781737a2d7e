"""LM Studio's models folder read in place: where it is, its layout, its model keys."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.support.stores import FakeLMStudio, write_model, write_projector, write_split_gguf

from llamarunner.library.discovery import LibraryEntry
from llamarunner.library.lmstudio_store import (
    default_lmstudio_roots,
    lmstudio_home,
    lmstudio_model_key,
    scan_lmstudio_store,
)


@pytest.fixture
def lms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeLMStudio:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))  # never the real ~/.lmstudio
    monkeypatch.setenv("USERPROFILE", str(home))
    return FakeLMStudio(home)


def scan(root: Path) -> tuple[dict[str, LibraryEntry], dict[str, str]]:
    result = scan_lmstudio_store(root)
    return {e.name: e for e in result.entries}, {s.path: s.reason for s in result.skipped}


# ---------------------------------------------------------------------------------------------
# Where LM Studio keeps models


def test_default_roots(lms: FakeLMStudio) -> None:
    assert default_lmstudio_roots() == [
        lms.home / ".lmstudio" / "models",
        lms.home / ".cache" / "lm-studio" / "models",
    ]


def test_models_directory_from_settings(lms: FakeLMStudio, tmp_path: Path) -> None:
    lms.set_downloads_folder(tmp_path / "D" / "LLM")
    assert default_lmstudio_roots(lms.home)[0] == tmp_path / "D" / "LLM"


def test_old_install_settings_are_read_too(lms: FakeLMStudio, tmp_path: Path) -> None:
    old = lms.home / ".cache" / "lm-studio"
    old.mkdir(parents=True)
    (old / "settings.json").write_text(f'{{"downloadsFolder": "{tmp_path / "old-models"}"}}')
    assert default_lmstudio_roots(lms.home)[1] == tmp_path / "old-models"


@pytest.mark.parametrize(
    "settings",
    ['{"downloadsFolder": ""}', '{"downloadsFolder": 5}', "[1]", "{broken", '{"other": "x"}'],
)
def test_unusable_settings_fall_back_to_the_default(lms: FakeLMStudio, settings: str) -> None:
    (lms.app_home / "settings.json").write_text(settings)
    assert default_lmstudio_roots(lms.home)[0] == lms.models


def test_home_pointer_moves_lmstudio_home(lms: FakeLMStudio, tmp_path: Path) -> None:
    moved = tmp_path / "big-disk" / ".lmstudio"
    moved.mkdir(parents=True)
    (lms.home / ".lmstudio-home-pointer").write_text(f"{moved}\n")
    assert lmstudio_home(lms.home) == moved
    assert default_lmstudio_roots(lms.home)[0] == moved / "models"


def test_pointer_to_nowhere_is_ignored(lms: FakeLMStudio, tmp_path: Path) -> None:
    (lms.home / ".lmstudio-home-pointer").write_text(str(tmp_path / "gone"))
    assert lmstudio_home(lms.home) == lms.app_home


# ---------------------------------------------------------------------------------------------
# Model keys


@pytest.mark.parametrize(
    ("folder", "key"),
    [
        ("Meta-Llama-3.1-8B-Instruct-GGUF", "meta-llama-3.1-8b-instruct"),
        ("Qwen2-VL-7B-Instruct-GGUF", "qwen2-vl-7b-instruct"),
        ("gemma-3-4b-it_gguf", "gemma-3-4b-it"),
        ("my-own-model", "my-own-model"),
    ],
)
def test_model_key(folder: str, key: str) -> None:
    assert lmstudio_model_key(folder) == key


def test_one_quant_is_named_by_its_folder(lms: FakeLMStudio) -> None:
    (path,) = lms.add_model(
        "lmstudio-community", "Meta-Llama-3.1-8B-Instruct-GGUF",
        ["Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf"],
    )
    found, skipped = scan(lms.models)
    assert skipped == {}
    entry = found["meta-llama-3.1-8b-instruct"]
    assert (entry.path, entry.source) == (str(path), "lmstudio")
    assert entry.publisher == "lmstudio-community"
    assert entry.fallback_names == ("lmstudio-community/meta-llama-3.1-8b-instruct",)


def test_several_quants_get_variant_keys(lms: FakeLMStudio) -> None:
    lms.add_model(
        "bartowski", "gemma-3-4b-it-GGUF",
        ["gemma-3-4b-it-Q4_K_M.gguf", "gemma-3-4b-it-Q8_0.gguf"],
        projector="mmproj-model-f16.gguf",
    )
    found, _ = scan(lms.models)
    assert sorted(found) == ["gemma-3-4b-it@q4_k_m", "gemma-3-4b-it@q8_0"]
    folder = lms.models / "bartowski" / "gemma-3-4b-it-GGUF"
    assert {e.projector for e in found.values()} == {str(folder / "mmproj-model-f16.gguf")}


def test_files_without_quant_names_are_told_apart_by_name(lms: FakeLMStudio) -> None:
    lms.add_model("me", "experiments", ["first-try.gguf", "second-try.gguf"])
    found, _ = scan(lms.models)
    assert sorted(found) == ["experiments@first-try", "experiments@second-try"]


def test_split_model_in_a_model_folder(lms: FakeLMStudio) -> None:
    folder = lms.model_folder("unsloth", "Big-GGUF")
    parts = write_split_gguf(folder, "Big-Q4_K_M", 2)
    found, _ = scan(lms.models)
    assert found["big"].parts == tuple(str(p) for p in parts)


# ---------------------------------------------------------------------------------------------
# Layout rules


def test_only_two_levels_deep_count(lms: FakeLMStudio) -> None:
    lms.add_model("pub", "good-GGUF", ["good-Q4_K_M.gguf"])
    loose = write_model(lms.models / "loose.gguf", seed=1)
    half = write_model(lms.models / "pub" / "half.gguf", seed=2)
    write_model(lms.models / "pub" / "good-GGUF" / "sub" / "too-deep.gguf", seed=3)
    found, skipped = scan(lms.models)
    assert list(found) == ["good"]
    assert "publisher>/<model>" in skipped[str(loose)]
    assert "publisher>/<model>" in skipped[str(half)]


def test_non_gguf_and_hidden_entries_are_ignored(lms: FakeLMStudio) -> None:
    mlx = lms.model_folder("mlx-community", "Qwen3-4B-4bit")
    (mlx / "model.safetensors").write_bytes(b"\0" * 16)
    (mlx / "config.json").write_text("{}")
    write_model(lms.models / ".internal" / "x" / "hidden.gguf")
    found, skipped = scan(lms.models)
    assert found == {} and skipped == {}


def test_symlinked_model_folder_outside_is_not_followed(lms: FakeLMStudio, tmp_path: Path) -> None:
    outside = tmp_path / "external" / "model-GGUF"
    write_model(outside / "model-Q4_0.gguf")
    publisher = lms.models / "me"
    publisher.mkdir()
    (publisher / "model-GGUF").symlink_to(outside, target_is_directory=True)
    found, skipped = scan(lms.models)
    assert found == {}
    assert "outside LM Studio's models folder" in skipped[str(publisher / "model-GGUF")]


def test_a_model_imported_as_a_symbolic_link_is_listed(lms: FakeLMStudio,
                                                       tmp_path: Path) -> None:
    # `lms import --symbolic-link ~/Downloads/model-Q4_K_M.gguf` leaves a file link.
    outside = write_model(tmp_path / "Downloads" / "model-Q4_K_M.gguf")
    folder = lms.models / "me" / "model-GGUF"
    folder.mkdir(parents=True)
    (folder / "model-Q4_K_M.gguf").symlink_to(outside)
    (folder / "gone-Q8_0.gguf").symlink_to(tmp_path / "Downloads" / "deleted.gguf")
    found, skipped = scan(lms.models)
    assert list(found) == ["model"]
    assert os.path.realpath(found["model"].path) == os.path.realpath(outside)
    assert skipped[str(folder / "gone-Q8_0.gguf")].startswith("broken symbolic link")


def test_broken_file_is_skipped_and_the_rest_listed(lms: FakeLMStudio) -> None:
    lms.add_model("pub", "ok-GGUF", ["ok-Q4_0.gguf"])
    bad = lms.model_folder("pub", "bad-GGUF") / "bad-Q4_0.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 16)
    found, skipped = scan(lms.models)
    assert list(found) == ["ok"]
    assert str(bad) in skipped


def test_missing_root_gives_nothing(tmp_path: Path) -> None:
    assert scan(tmp_path / "none") == ({}, {})


def test_projector_paired_by_name_in_a_mixed_folder(lms: FakeLMStudio) -> None:
    folder = lms.model_folder("me", "mixed")
    write_model(folder / "llava-7b-Q4_0.gguf")
    write_model(folder / "mistral-7b-Q4_0.gguf", seed=1)
    projector = write_projector(folder / "mmproj-llava-7b-f16.gguf")
    found, _ = scan(lms.models)
    assert found["mixed@llava-7b-q4_0"].projector == str(projector)
    assert found["mixed@mistral-7b-q4_0"].projector is None


def test_fifo_settings_file_does_not_block(lms: FakeLMStudio) -> None:
    os.mkfifo(lms.app_home / "settings.json")
    os.mkfifo(lms.home / ".lmstudio-home-pointer")
    assert default_lmstudio_roots(lms.home)[0] == lms.models
