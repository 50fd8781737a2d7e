"""Folder scanning: models, split sets, projector pairing, vocab-only, hostile files, links."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.support.gguf_fixtures import hostile_cases
from tests.support.stores import (
    write_model,
    write_projector,
    write_split_gguf,
    write_vocab_only_gguf,
)

from llamarunner.library.discovery import (
    FoundFile,
    LibraryEntry,
    NotGGUFError,
    pair_projectors,
    peek_gguf,
    projector_key,
    quant_token,
    split_part,
)
from llamarunner.library.folders import (
    model_name_for,
    scan_model_folders,
)
from llamarunner.library.metadata_cache import MetadataCache


def scan(*roots: Path) -> tuple[dict[str, LibraryEntry], dict[str, str]]:
    """{name: entry} and {skipped path: reason}."""
    result = scan_model_folders(roots)
    return {e.name: e for e in result.entries}, {s.path: s.reason for s in result.skipped}


def reason_for(skipped: dict[str, str], path: Path) -> str:
    assert str(path) in skipped, f"{path} not skipped; skipped: {skipped}"
    return skipped[str(path)]


# ---------------------------------------------------------------------------------------------
# Names and small helpers


@pytest.mark.parametrize(
    ("file", "name"),
    [
        ("Qwen2.5-7B-Instruct-Q4_K_M.gguf", "qwen2.5-7b-instruct-q4_k_m"),
        ("My Model.gguf", "my-model"),
        ("big-00001-of-00003.gguf", "big"),
        ("tiny.GGUF", "tiny"),
    ],
)
def test_model_name_for(file: str, name: str) -> None:
    assert model_name_for(Path("/m") / file) == name


@pytest.mark.parametrize(
    ("stem", "quant"),
    [
        ("Meta-Llama-3.1-8B-Instruct-Q4_K_M", "q4_k_m"),
        ("phi-4.Q8_0", "q8_0"),
        ("gemma-3-4b-it-IQ4_XS", "iq4_xs"),
        ("Qwen3-30B-A3B-UD-Q4_K_XL", "ud-q4_k_xl"),
        ("model-bf16", "bf16"),
        ("gpt-oss-20b-MXFP4", "mxfp4"),
        ("plain-model", None),
        ("q4", "q4"),
    ],
)
def test_quant_token(stem: str, quant: str | None) -> None:
    assert quant_token(stem) == quant


@pytest.mark.parametrize(
    ("file", "key"),
    [
        ("mmproj-gemma-3-4b-it-f16.gguf", "gemma-3-4b-it"),
        ("Qwen2.5-VL-7B-Instruct-mmproj-F16.gguf", "qwen2.5-vl-7b-instruct"),
        ("Llama-3.2-11B-Vision.mmproj.Q8_0.gguf", "llama-3.2-11b-vision"),
        ("mmproj-model-f16.gguf", ""),
        ("mmproj-F16.gguf", ""),
        ("mmproj.gguf", ""),
    ],
)
def test_projector_key(file: str, key: str) -> None:
    assert projector_key(f"/m/{file}") == key


def test_split_part_names() -> None:
    assert split_part("Big-Model-00002-of-00005.gguf") == ("Big-Model", 2, 5)
    assert split_part("model.gguf") is None
    assert split_part("model-0001-of-0002.gguf") is None  # gguf-split always writes 5 digits


def test_peek_refuses_what_is_not_gguf(tmp_path: Path) -> None:
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    with pytest.raises(NotGGUFError, match="not a GGUF file"):
        peek_gguf(text)
    model = write_model(tmp_path / "m.gguf")
    peek = peek_gguf(model)
    assert (peek.version, peek.tensor_count > 0) == (3, True)


# ---------------------------------------------------------------------------------------------
# Plain models


def test_models_found_recursively_with_facts(tmp_path: Path) -> None:
    top = write_model(tmp_path / "Top-Q4_K_M.gguf")
    deep = write_model(tmp_path / "a" / "b" / "deep.gguf", seed=1)
    (tmp_path / "readme.txt").write_text("not a model")
    write_model(tmp_path / ".hidden" / "secret.gguf")  # hidden folders are skipped
    found, skipped = scan(tmp_path)
    assert sorted(found) == ["deep", "top-q4_k_m"]
    assert skipped == {}
    entry = found["top-q4_k_m"]
    st = top.stat()
    assert entry == LibraryEntry(
        name="top-q4_k_m", path=str(top), source="folder", parts=(str(top),), projector=None,
        size=st.st_size, mtime=st.st_mtime,
    )
    assert found["deep"].path == str(deep)


def test_missing_folder_gives_nothing(tmp_path: Path) -> None:
    assert scan(tmp_path / "nope") == ({}, {})


def test_vocab_only_gguf_is_not_a_model(tmp_path: Path) -> None:
    vocab = write_vocab_only_gguf(tmp_path / "ggml-vocab-llama-spm.gguf")
    write_model(tmp_path / "real.gguf")
    found, skipped = scan(tmp_path)
    assert list(found) == ["real"]
    assert "vocab-only" in reason_for(skipped, vocab)


def test_hostile_and_broken_files_are_skipped_with_reasons(tmp_path: Path) -> None:
    write_model(tmp_path / "good.gguf")
    bad_paths = []
    for index, (what, data) in enumerate(hostile_cases().items()):
        path = tmp_path / f"hostile-{index}.gguf"
        path.write_bytes(data)
        bad_paths.append((what, path))
    found, skipped = scan(tmp_path)
    assert list(found) == ["good"]
    for what, path in bad_paths:
        assert reason_for(skipped, path), what


def test_unreadable_file_is_skipped(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    locked = write_model(tmp_path / "locked.gguf")
    locked.chmod(0)
    try:
        found, skipped = scan(tmp_path)
    finally:
        locked.chmod(0o644)
    assert found == {}
    assert "cannot read" in reason_for(skipped, locked)


def test_fifo_named_gguf_is_skipped_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.gguf"
    os.mkfifo(fifo)
    found, skipped = scan(tmp_path)
    assert found == {}
    assert reason_for(skipped, fifo) == "not a regular file"


# ---------------------------------------------------------------------------------------------
# Split models


def test_complete_split_set_is_one_model(tmp_path: Path) -> None:
    parts = write_split_gguf(tmp_path / "big", "Big-Model", 3)
    found, skipped = scan(tmp_path)
    assert skipped == {}
    entry = found["big-model"]
    assert entry.path == str(parts[0])
    assert entry.parts == tuple(str(p) for p in parts)
    assert entry.size == sum(p.stat().st_size for p in parts)


def test_incomplete_split_set_is_skipped_with_what_is_missing(tmp_path: Path) -> None:
    parts = write_split_gguf(tmp_path, "Big-Model", 3)
    parts[1].unlink()
    write_model(tmp_path / "other.gguf")
    found, skipped = scan(tmp_path)
    assert list(found) == ["other"]
    reason = reason_for(skipped, parts[0])
    assert "incomplete" in reason and "2 of 3" in reason


def test_split_set_without_part_one_is_skipped(tmp_path: Path) -> None:
    parts = write_split_gguf(tmp_path, "Big", 2)
    parts[0].unlink()
    found, skipped = scan(tmp_path)
    assert found == {}
    assert "part(s) 1 of 2" in reason_for(skipped, parts[1])


# ---------------------------------------------------------------------------------------------
# Projectors


def test_one_model_one_projector_are_paired_whatever_their_names(tmp_path: Path) -> None:
    model = write_model(tmp_path / "vision-model-Q4_K_M.gguf")
    projector = write_projector(tmp_path / "mmproj-something-else-f16.gguf")
    found, skipped = scan(tmp_path)
    assert list(found) == ["vision-model-q4_k_m"]
    assert found["vision-model-q4_k_m"].projector == str(projector)
    assert found["vision-model-q4_k_m"].path == str(model)
    assert skipped == {}


def test_projector_recognised_by_metadata_not_name(tmp_path: Path) -> None:
    write_model(tmp_path / "llava.gguf")
    projector = write_projector(tmp_path / "llava-vision-tower.gguf")  # no "mmproj" in name
    found, _ = scan(tmp_path)
    assert list(found) == ["llava"]
    assert found["llava"].projector == str(projector)


def test_several_models_pair_by_shared_name(tmp_path: Path) -> None:
    write_model(tmp_path / "gemma-3-4b-it-Q4_K_M.gguf")
    write_model(tmp_path / "gemma-3-4b-it-Q8_0.gguf", seed=1)
    write_model(tmp_path / "mistral-7b-Q4_K_M.gguf", seed=2)
    gemma = write_projector(tmp_path / "mmproj-gemma-3-4b-it-f16.gguf")
    found, skipped = scan(tmp_path)
    assert found["gemma-3-4b-it-q4_k_m"].projector == str(gemma)
    assert found["gemma-3-4b-it-q8_0"].projector == str(gemma)
    assert found["mistral-7b-q4_k_m"].projector is None
    assert skipped == {}


def test_generic_projector_goes_with_every_quant_of_the_folder(tmp_path: Path) -> None:
    write_model(tmp_path / "Qwen2-VL-7B-Q4_K_M.gguf")
    write_model(tmp_path / "Qwen2-VL-7B-Q8_0.gguf", seed=1)
    projector = write_projector(tmp_path / "mmproj-model-f16.gguf")
    found, _ = scan(tmp_path)
    assert {e.projector for e in found.values()} == {str(projector)}


def test_projector_only_pairs_within_its_own_folder(tmp_path: Path) -> None:
    write_model(tmp_path / "a" / "model-a.gguf")
    write_model(tmp_path / "b" / "model-b.gguf", seed=1)
    projector = write_projector(tmp_path / "b" / "mmproj-model-b-f16.gguf")
    found, _ = scan(tmp_path)
    assert found["model-a"].projector is None
    assert found["model-b"].projector == str(projector)


def test_unmatched_projector_is_reported_not_guessed(tmp_path: Path) -> None:
    write_model(tmp_path / "mistral-7b.gguf")
    write_model(tmp_path / "phi-4.gguf", seed=1)
    stray = write_projector(tmp_path / "mmproj-llava-1.5-f16.gguf")
    found, skipped = scan(tmp_path)
    assert all(e.projector is None for e in found.values())
    assert "not paired" in reason_for(skipped, stray)


def test_projector_alone_is_not_a_model(tmp_path: Path) -> None:
    projector = write_projector(tmp_path / "mmproj-x-f16.gguf")
    found, skipped = scan(tmp_path)
    assert found == {}
    assert "not paired" in reason_for(skipped, projector)


def _found(path: str) -> FoundFile:
    return FoundFile(path, (path,), 1, 0.0)


@pytest.mark.parametrize(
    ("models", "projectors", "pairs"),
    [
        # The longest matching name wins.
        (
            ["/m/llava-v1.6-mistral-7b-Q4.gguf", "/m/llava-v1.6-7b-Q4.gguf"],
            ["/m/mmproj-llava-v1.6-f16.gguf", "/m/mmproj-llava-v1.6-mistral-7b-f16.gguf"],
            {
                "/m/llava-v1.6-mistral-7b-Q4.gguf": "/m/mmproj-llava-v1.6-mistral-7b-f16.gguf",
                "/m/llava-v1.6-7b-Q4.gguf": "/m/mmproj-llava-v1.6-f16.gguf",
            },
        ),
        # Word boundaries: "phi-4" is not a prefix of "phi-40b".
        (["/m/phi-40b.gguf", "/m/other.gguf"], ["/m/mmproj-phi-4-f16.gguf"], {}),
        # f16 and f32 of one projector: the first (by name) is used.
        (
            ["/m/x-Q4.gguf", "/m/x-Q8.gguf"],
            ["/m/mmproj-x-f32.gguf", "/m/mmproj-x-f16.gguf"],
            {"/m/x-Q4.gguf": "/m/mmproj-x-f16.gguf", "/m/x-Q8.gguf": "/m/mmproj-x-f16.gguf"},
        ),
        # Two generic projectors: which one is unknowable, so none.
        (["/m/a.gguf", "/m/b.gguf"], ["/m/mmproj-f16.gguf", "/m/mmproj-model-f32.gguf"], {}),
    ],
)
def test_pairing_rule(models: list[str], projectors: list[str], pairs: dict[str, str]) -> None:
    got, _ = pair_projectors([_found(m) for m in models], [_found(p) for p in projectors])
    assert got == pairs


# ---------------------------------------------------------------------------------------------
# Symbolic links


def test_symlink_inside_root_is_followed(tmp_path: Path) -> None:
    real = write_model(tmp_path / "store" / "real.gguf")
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "alias.gguf").symlink_to(real)
    (tmp_path / "linked-dir").symlink_to(tmp_path / "store", target_is_directory=True)
    found, skipped = scan(tmp_path)
    # Three ways to one file: the scanner lists each path; the catalog keeps one.
    assert {os.path.realpath(e.path) for e in found.values()} == {os.path.realpath(real)}
    assert skipped == {}


def test_a_link_to_a_model_file_elsewhere_is_followed(tmp_path: Path) -> None:
    # What `lms import --symbolic-link` and users' own links make.
    outside = write_model(tmp_path / "elsewhere" / "imported.gguf")
    root = tmp_path / "root"
    root.mkdir()
    (root / "imported.gguf").symlink_to(outside)
    write_model(root / "ok.gguf", seed=1)
    found, skipped = scan(root)
    assert sorted(found) == ["imported", "ok"]
    assert os.path.realpath(found["imported"].path) == os.path.realpath(outside)
    assert skipped == {}


def test_a_link_to_a_folder_out_of_root_is_skipped(tmp_path: Path) -> None:
    write_model(tmp_path / "elsewhere" / "secret.gguf")
    root = tmp_path / "root"
    root.mkdir()
    (root / "escape-dir").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    write_model(root / "ok.gguf", seed=1)
    found, skipped = scan(root)
    assert list(found) == ["ok"]
    assert "outside" in reason_for(skipped, root / "escape-dir")


def test_symlink_loop_does_not_hang(tmp_path: Path) -> None:
    write_model(tmp_path / "a" / "m.gguf")
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a", target_is_directory=True)
    found, _ = scan(tmp_path)
    assert list(found) == ["m"]


def test_a_link_that_points_nowhere_is_listed_as_broken(tmp_path: Path) -> None:
    (tmp_path / "gone.gguf").symlink_to(tmp_path / "missing.gguf")
    write_model(tmp_path / "ok.gguf")
    found, skipped = scan(tmp_path)
    assert list(found) == ["ok"]
    reason = reason_for(skipped, tmp_path / "gone.gguf")
    assert reason.startswith("broken symbolic link") and "missing.gguf" in reason


def test_a_loop_of_file_links_is_broken_not_a_hang(tmp_path: Path) -> None:
    (tmp_path / "a.gguf").symlink_to(tmp_path / "b.gguf")
    (tmp_path / "b.gguf").symlink_to(tmp_path / "a.gguf")
    found, skipped = scan(tmp_path)
    assert found == {}
    assert "broken symbolic link" in reason_for(skipped, tmp_path / "a.gguf")


def test_root_that_is_a_symlink_is_scanned(tmp_path: Path) -> None:
    write_model(tmp_path / "real" / "m.gguf")
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    found, skipped = scan(tmp_path / "link")
    assert list(found) == ["m"] and skipped == {}


# ---------------------------------------------------------------------------------------------
# Metadata reads


def test_headers_read_once_through_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    from llamarunner.library import metadata_cache

    write_model(tmp_path / "m.gguf")
    write_projector(tmp_path / "mmproj-m-f16.gguf")
    calls: list[str] = []
    real_read = metadata_cache.read_metadata

    def counting(path: str | os.PathLike[str]) -> object:
        calls.append(os.fspath(path))
        return real_read(path)

    monkeypatch.setattr(metadata_cache, "read_metadata", counting)
    cache = MetadataCache(tmp_path / "cache.json")
    for _ in range(3):
        scan_model_folders([tmp_path], metadata=cache)
    # The projector is known by its name; the model's header is read once.
    assert [os.path.basename(c) for c in calls] == ["m.gguf"]
