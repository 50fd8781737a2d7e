"""Whisper (CTranslate2) folders are audio models wherever they are found."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tests.support.stores import write_model

from llamarunner.config import parse_config
from llamarunner.library.catalog import build_catalog
from llamarunner.library.folders import scan_model_folders
from llamarunner.library.whisper import is_whisper_folder, read_whisper_info

# What CTranslate2's Whisper converter writes into config.json (trimmed).
ENGLISH_ONLY = {"alignment_heads": [[1, 0]], "lang_ids": [50259],
                "suppress_ids": [1, 2], "suppress_ids_begin": [220, 50256]}
MULTILINGUAL = {**ENGLISH_ONLY, "suppress_ids_begin": [220, 50257]}


def write_whisper(folder: Path, config: dict[str, object] = ENGLISH_ONLY, *,
                  vocabulary: int | None = None, tokenizer: str = "tokenizer.json") -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.bin").write_bytes(b"\0" * 1000)
    if vocabulary is not None:
        (folder / "vocabulary.txt").write_text("tok\n" * vocabulary)
    else:
        (folder / tokenizer).write_text("{}")
    return folder


def test_the_real_model_is_english_only(whisper_model: Path) -> None:
    info = read_whisper_info(whisper_model)
    assert is_whisper_folder(whisper_model)
    assert (info.multilingual, info.languages) == (False, "English")
    assert info.size > 70_000_000


@pytest.mark.parametrize(("config", "vocabulary", "multilingual"), [
    (ENGLISH_ONLY, None, False),
    (MULTILINGUAL, None, True),
    (MULTILINGUAL, 51864, False),  # the vocabulary file is the stronger evidence
    (ENGLISH_ONLY, 51865, True),
    (ENGLISH_ONLY, 51866, True),  # large-v3
])
def test_languages_come_from_the_vocabulary(tmp_path: Path, config: dict[str, object],
                                            vocabulary: int | None, multilingual: bool) -> None:
    folder = write_whisper(tmp_path / "w", config, vocabulary=vocabulary)
    assert read_whisper_info(folder).multilingual is multilingual


@pytest.mark.parametrize("damage", ["no-config", "no-model", "no-tokenizer", "other-config",
                                    "bad-json", "json-list"])
def test_folders_that_are_not_whisper_models(tmp_path: Path, damage: str) -> None:
    folder = write_whisper(tmp_path / "w")
    if damage == "no-config":
        (folder / "config.json").unlink()
    elif damage == "no-model":
        (folder / "model.bin").unlink()
    elif damage == "no-tokenizer":
        (folder / "tokenizer.json").unlink()
    elif damage == "other-config":  # a Hugging Face transformers checkpoint, say
        (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    elif damage == "bad-json":
        (folder / "config.json").write_text("{not json")
    else:
        (folder / "config.json").write_text("[1, 2]")
    assert not is_whisper_folder(folder)


def test_model_folders_list_whisper_folders_and_do_not_look_inside(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_model(root / "chat-Q4_K_M.gguf")
    whisper = write_whisper(root / "speech" / "Faster-Whisper-Small", MULTILINGUAL)
    write_model(whisper / "stray.gguf")  # inside the model folder: not a model of its own
    write_whisper(root / ".hidden-whisper")
    entries = {e.name: e for e in scan_model_folders([root]).entries}
    assert set(entries) == {"chat-q4_k_m", "faster-whisper-small"}
    audio = entries["faster-whisper-small"]
    assert (audio.kind, audio.path, audio.multilingual) == ("audio", str(whisper), True)
    assert audio.size == sum(f.stat().st_size for f in whisper.iterdir())
    assert entries["chat-q4_k_m"].kind == "llm"


def test_a_config_entry_with_just_a_path_is_an_audio_model(tmp_path: Path) -> None:
    whisper = write_whisper(tmp_path / "w")
    config = parse_config({"models": {"stt": {"path": str(whisper), "alias": ["whisper-1"]}},
                           "model_dirs": [str(tmp_path / "none")]})
    catalog = build_catalog(config, app_models_dir=tmp_path / "app-models")
    assert catalog.models["stt"].is_audio
    assert catalog.models["stt"].alias == ("whisper-1",)
    assert catalog.entries["stt"].kind == "audio"
    assert catalog.problems == [f"model_dirs: {tmp_path / 'none'} is not a folder, nothing "
                                "found there"]


def test_discovered_audio_models_get_no_llama_server_defaults(tmp_path: Path) -> None:
    write_whisper(tmp_path / "models" / "whisper-tiny.en")
    config = parse_config({"models": {"whisper-tiny.en": {"args": {"threads": 2}}},
                           "model_dirs": [str(tmp_path / "models")]})
    model = build_catalog(config, app_models_dir=tmp_path).models["whisper-tiny.en"]
    assert model.is_audio
    assert dict(model.args) == {"threads": 2}


def test_a_folder_that_is_no_model_in_the_config_is_a_problem(tmp_path: Path) -> None:
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    config = parse_config({"models": {"x": {"path": str(folder)}}, "model_dirs": []})
    problems = build_catalog(config, app_models_dir=tmp_path / "m").problems
    assert any("is a folder but not a Whisper model" in p for p in problems), problems


def test_a_copy_of_the_real_model_is_found_in_a_models_folder(tmp_path: Path,
                                                             whisper_model: Path) -> None:
    shutil.copytree(whisper_model, tmp_path / "models" / "whisper-tiny.en")
    entries = scan_model_folders([tmp_path / "models"]).entries
    assert [(e.name, e.kind, e.multilingual) for e in entries] == [
        ("whisper-tiny.en", "audio", False)]
