"""The catalog: every source together, precedence, names, settings for discovered models."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import Any

import pytest
from tests.support.stores import (
    FakeLMStudio,
    FakeOllamaStore,
    write_model,
    write_projector,
)

from llamarunner.config import parse_config
from llamarunner.library.catalog import (
    Catalog,
    build_catalog,
    library_fingerprint,
    watch_roots,
)
from llamarunner.library.folders import DISCOVERED_MODEL_ARGS
from llamarunner.library.metadata_cache import MetadataCache
from llamarunner.library.table import format_library_table, human_size


@dataclasses.dataclass
class World:
    """A fake machine: the app's models folder, an Ollama store and LM Studio, no real home."""

    tmp: Path
    app_models: Path
    ollama: FakeOllamaStore
    lms: FakeLMStudio

    def catalog(self, data: dict[str, Any] | None = None, **kw: Any) -> Catalog:
        return build_catalog(parse_config(data or {}), app_models_dir=self.app_models, **kw)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    home = tmp_path / "home"
    home.mkdir()
    # Auto-detection must only ever see the fakes, never the user's real stores.
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))
    monkeypatch.setenv("OLLAMA_MODELS", str(home / ".ollama" / "models"))
    app_models = tmp_path / "data" / "models"
    app_models.mkdir(parents=True)
    return World(tmp_path, app_models, FakeOllamaStore(home / ".ollama" / "models"),
                 FakeLMStudio(home))


def test_zero_config_sees_every_source(world: World) -> None:
    write_model(world.app_models / "Mine-Q4_K_M.gguf")
    world.ollama.add_model("llama3.2", "3b", write_model(world.tmp / "src" / "l.gguf", seed=1))
    world.lms.add_model("lmstudio-community", "Phi-4-GGUF", ["Phi-4-Q4_K_M.gguf"], seed=2)
    catalog = world.catalog()
    assert {n: e.source for n, e in catalog.entries.items()} == {
        "mine-q4_k_m": "folder",
        "llama3.2:3b": "ollama",
        "phi-4": "lmstudio",
    }
    assert list(catalog.models) == list(catalog.entries)
    for name, model in catalog.models.items():
        assert model.args == DISCOVERED_MODEL_ARGS
        assert model.path == catalog.entries[name].path
        assert model.runtime == "default"
    assert catalog.skipped == [] and catalog.problems == []


def test_projector_becomes_mmproj_arg(world: World) -> None:
    write_model(world.app_models / "llava.gguf")
    projector = write_projector(world.app_models / "mmproj-llava-f16.gguf")
    catalog = world.catalog()
    assert catalog.models["llava"].args == {**DISCOVERED_MODEL_ARGS, "mmproj": str(projector)}
    assert catalog.entries["llava"].projector == str(projector)


def test_ollama_adapters_become_lora_args(world: World) -> None:
    adapter = write_model(world.tmp / "src" / "lora.gguf", seed=7)
    world.ollama.add_model("tuned", "1", write_model(world.tmp / "src" / "m.gguf"),
                           adapters=[adapter])
    catalog = world.catalog()
    assert catalog.models["tuned:1"].args["lora"] == list(catalog.entries["tuned:1"].adapters)


# ---------------------------------------------------------------------------------------------
# Precedence and names


def test_configured_model_wins_its_name(world: World, caplog: pytest.LogCaptureFixture) -> None:
    configured = write_model(world.tmp / "elsewhere" / "qwen.gguf")
    found = write_model(world.app_models / "qwen.gguf", seed=1)
    with caplog.at_level(logging.WARNING):
        catalog = world.catalog({"models": {"qwen": {"path": str(configured)}}})
    assert catalog.models["qwen"].path == str(configured)
    assert catalog.entries["qwen"].source == "config"
    assert catalog.models["qwen-2"].path == str(found)
    assert "qwen-2" in caplog.text


def test_configured_alias_is_a_taken_name(world: World) -> None:
    configured = write_model(world.tmp / "elsewhere" / "a.gguf")
    write_model(world.app_models / "fast.gguf", seed=1)
    catalog = world.catalog({"models": {"a": {"path": str(configured), "alias": ["fast"]}}})
    assert "fast-2" in catalog.models and "fast" not in catalog.models


def test_names_differing_only_in_case_collide(world: World) -> None:
    world.ollama.add_model("Tiny", "1", write_model(world.tmp / "src" / "a.gguf"))
    world.ollama.add_model("tiny", "1", write_model(world.tmp / "src" / "b.gguf", seed=1))
    assert sorted(world.catalog().models) == ["Tiny:1", "tiny:1-2"]


def test_same_file_is_listed_once_configured_first(world: World) -> None:
    path = write_model(world.app_models / "dup.gguf")
    catalog = world.catalog({"models": {"mine": {"path": str(path), "alias": ["m"]}}})
    assert list(catalog.models) == ["mine"]
    # The name it was found under still leads to it.
    assert catalog.models["mine"].alias == ("m", "dup")
    assert catalog.entries["mine"].source == "config"


def test_configured_model_on_an_ollama_blob_answers_to_the_ollama_name(world: World) -> None:
    manifest = world.ollama.add_model("llama3.2", "latest", write_model(world.tmp / "s.gguf"))
    blob = world.ollama.blob_path(world.ollama.model_layer(manifest).digest)
    catalog = world.catalog({"models": {"my-llama": {"path": str(blob), "args": {"t": 2}}}})
    assert list(catalog.models) == ["my-llama"]
    assert catalog.models["my-llama"].alias == ("llama3.2:latest", "llama3.2")
    assert catalog.models["my-llama"].args == {"t": 2}


def test_same_file_through_links_is_listed_once(world: World) -> None:
    real = write_model(world.app_models / "a" / "real.gguf")
    (world.app_models / "b").mkdir()
    (world.app_models / "b" / "link.gguf").symlink_to(real)
    assert list(world.catalog().models) == ["real"]


def test_folder_beats_lmstudio_for_the_same_file(world: World) -> None:
    world.lms.add_model("pub", "Model-GGUF", ["Model-Q4_0.gguf"])
    catalog = world.catalog({"model_dirs": [str(world.lms.models)]})
    assert {n: e.source for n, e in catalog.entries.items()} == {"model-q4_0": "folder"}


def test_ollama_beats_lmstudio_for_the_same_file(world: World) -> None:
    shared = world.tmp / "shared"
    store = FakeOllamaStore(shared / "pub" / "ollama")
    manifest = store.add_model("m", "1", write_model(world.tmp / "src" / "m.gguf"))
    blob = store.blob_path(store.model_layer(manifest).digest)
    folder = shared / "pub" / "m-GGUF"
    folder.mkdir(parents=True)
    (folder / "m-Q4_0.gguf").symlink_to(blob)
    catalog = world.catalog(
        {"sources": {"ollama": {"path": str(store.root)}, "lmstudio": {"path": str(shared)}}}
    )
    assert {n: e.source for n, e in catalog.entries.items()} == {"m:1": "ollama"}


def test_one_ollama_blob_under_several_tags(world: World) -> None:
    gguf = write_model(world.tmp / "src" / "m.gguf")
    world.ollama.add_model("llama3.2", "3b", gguf)
    world.ollama.add_model("llama3.2", "latest", gguf)
    catalog = world.catalog()
    assert list(catalog.models) == ["llama3.2:3b"]
    assert catalog.models["llama3.2:3b"].alias == ("llama3.2:latest", "llama3.2")
    assert catalog.entries["llama3.2:3b"].aliases == ("llama3.2:latest", "llama3.2")


def test_latest_alias_not_given_when_the_name_is_taken(world: World) -> None:
    write_model(world.app_models / "qwen3.gguf")
    world.ollama.add_model("qwen3", "latest", write_model(world.tmp / "src" / "q.gguf", seed=1))
    catalog = world.catalog()
    assert catalog.models["qwen3:latest"].alias == ()
    assert catalog.models["qwen3"].path.startswith(str(world.app_models))


def test_lmstudio_duplicate_takes_publisher_name(world: World) -> None:
    world.lms.add_model("lmstudio-community", "Phi-4-GGUF", ["Phi-4-Q4_K_M.gguf"], seed=1)
    world.lms.add_model("bartowski", "Phi-4-GGUF", ["Phi-4-Q4_K_M.gguf"], seed=2)
    write_model(world.app_models / "phi-4.gguf", seed=3)
    names = {n: e.publisher for n, e in world.catalog().entries.items()}
    assert names == {
        "phi-4": None,
        "bartowski/phi-4": "bartowski",
        "lmstudio-community/phi-4": "lmstudio-community",
    }


def test_collision_suffixes_are_deterministic(world: World) -> None:
    for index, folder in enumerate("abc"):
        write_model(world.app_models / folder / "model.gguf", seed=index)
    first = world.catalog()
    assert [(n, Path(m.path).parent.name) for n, m in first.models.items()] == [
        ("model", "a"), ("model-2", "b"), ("model-3", "c"),
    ]
    assert world.catalog() == first


def test_catalog_is_frozen(world: World) -> None:
    catalog = world.catalog()
    with pytest.raises(dataclasses.FrozenInstanceError):
        catalog.models = {}  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# Settings for discovered models


def test_settings_apply_to_the_discovered_model(world: World) -> None:
    gguf = write_model(world.tmp / "src" / "m.gguf")
    world.ollama.add_model("llama3.2", "3b", gguf, projector=write_projector(world.tmp / "p.gguf"))
    catalog = world.catalog({
        "runtimes": {"gpu": {"path": "/opt/llama-server"}},
        "models": {
            "llama3.2:3b": {
                "args": {"ctx-size": 8192, "--jinja": False, "threads": 4},
                "ttl": "1h",
                "alias": ["fast"],
                "runtime": "gpu",
            }
        },
    })
    model = catalog.models["llama3.2:3b"]
    entry = catalog.entries["llama3.2:3b"]
    assert model.path == entry.path and entry.source == "ollama"
    assert model.args == {"ctx-size": 8192, "mmproj": entry.projector, "threads": 4}
    assert (model.ttl, model.alias, model.runtime) == (3600.0, ("fast",), "gpu")
    assert catalog.problems == []


def test_settings_never_unload(world: World) -> None:
    write_model(world.app_models / "keep.gguf")
    catalog = world.catalog({"models": {"keep": {"ttl": -1}}})
    assert catalog.models["keep"].ttl == math.inf


def test_settings_for_a_model_not_found_are_a_problem(world: World) -> None:
    world.ollama.add_model("llama3.2", "3b", write_model(world.tmp / "src" / "m.gguf"))
    catalog = world.catalog({"models": {"llama3.2:1b": {"args": {"ctx-size": 8192}}}})
    assert "llama3.2:1b" not in catalog.models
    (problem,) = catalog.problems
    assert "models.llama3.2:1b" in problem and "did you mean 'llama3.2:3b'" in problem


def test_settings_follow_the_final_name(world: World) -> None:
    write_model(world.app_models / "a" / "model.gguf")
    write_model(world.app_models / "b" / "model.gguf", seed=1)
    catalog = world.catalog({"models": {"model-2": {"args": {"ctx-size": 1024}}}})
    assert catalog.models["model-2"].args["ctx-size"] == 1024
    assert catalog.models["model"].args["ctx-size"] == 4096


def test_configured_models_are_served_as_written(world: World) -> None:
    path = write_model(world.tmp / "elsewhere" / "m.gguf")
    catalog = world.catalog({"models": {"m": {"path": str(path), "args": {"threads": 2}}}})
    assert catalog.models["m"].args == {"threads": 2}  # no discovery defaults added


def test_configured_model_with_missing_file_is_a_problem(world: World) -> None:
    catalog = world.catalog({"models": {"gone": {"path": str(world.tmp / "gone.gguf")}}})
    assert "gone" in catalog.models
    assert catalog.entries["gone"].size == 0
    assert any("models.gone.path" in p for p in catalog.problems)


# ---------------------------------------------------------------------------------------------
# Sources switched and moved


def test_sources_can_be_switched_off(world: World) -> None:
    world.ollama.add_model("a", "1", write_model(world.tmp / "src" / "a.gguf"))
    world.lms.add_model("pub", "B-GGUF", ["B-Q4_0.gguf"], seed=1)
    assert sorted(world.catalog().models) == ["a:1", "b"]
    only_lms = world.catalog({"sources": {"ollama": {"enabled": False}}})
    assert list(only_lms.models) == ["b"]
    neither = world.catalog(
        {"sources": {"ollama": {"enabled": False}, "lmstudio": {"enabled": False}}}
    )
    assert neither.models == {}


def test_explicit_source_paths(world: World) -> None:
    other = FakeOllamaStore(world.tmp / "other-ollama")
    other.add_model("x", "1", write_model(world.tmp / "src" / "x.gguf"))
    world.ollama.add_model("y", "1", write_model(world.tmp / "src" / "y.gguf", seed=1))
    catalog = world.catalog({"sources": {"ollama": {"path": str(other.root)}}})
    assert [n for n, e in catalog.entries.items() if e.source == "ollama"] == ["x:1"]


def test_wrong_source_paths_are_problems(world: World) -> None:
    catalog = world.catalog({
        "sources": {
            "ollama": {"path": str(world.tmp)},
            "lmstudio": {"path": str(world.tmp / "nope")},
        },
        "model_dirs": [str(world.tmp / "missing")],
    })
    text = "\n".join(catalog.problems)
    assert "sources.ollama.path" in text and "no manifests folder" in text
    assert "sources.lmstudio.path" in text
    assert "model_dirs" in text


def test_model_dirs_replace_the_app_folder(world: World) -> None:
    write_model(world.app_models / "app.gguf")
    mine = world.tmp / "mine"
    write_model(mine / "own.gguf", seed=1)
    catalog = world.catalog({"model_dirs": [str(mine)]})
    assert [n for n, e in catalog.entries.items() if e.source == "folder"] == ["own"]


def test_skipped_files_of_all_sources_are_collected(world: World) -> None:
    (world.app_models / "junk.gguf").write_text("junk")
    manifest = world.ollama.add_model("m", "1", write_model(world.tmp / "src" / "m.gguf"))
    world.ollama.blob_path(world.ollama.model_layer(manifest).digest).unlink()
    skipped = {s.path for s in world.catalog().skipped}
    assert skipped == {str(world.app_models / "junk.gguf"), str(manifest)}


# ---------------------------------------------------------------------------------------------
# Watching


def test_watch_roots_follow_the_config(world: World) -> None:
    assert watch_roots(parse_config({}), world.app_models) == [
        world.app_models,
        world.ollama.root,
        world.lms.models,
        world.lms.home / ".cache" / "lm-studio" / "models",
    ]
    config = parse_config({
        "model_dirs": ["/a", "/a"],
        "sources": {"ollama": {"enabled": False}, "lmstudio": {"path": "/l"}},
    })
    assert watch_roots(config, world.app_models) == [Path("/a"), Path("/l")]


def test_fingerprint_changes_only_when_models_may_have(world: World) -> None:
    gguf = write_model(world.tmp / "src" / "m.gguf")
    manifest = world.ollama.add_model("m", "1", gguf)
    write_model(world.app_models / "sub" / "a.gguf")
    config = parse_config({})

    def fingerprint() -> tuple[tuple[object, ...], ...]:
        return library_fingerprint(watch_roots(config, world.app_models))

    first = fingerprint()
    assert fingerprint() == first
    (world.app_models / "sub" / "notes.txt").write_text("x")  # a folder changed: rescan
    second = fingerprint()
    assert second != first
    write_model(world.app_models / "sub" / "b.gguf", seed=1)
    third = fingerprint()
    assert third != second
    os.utime(manifest, ns=(1, 1))  # a re-pull rewrites the manifest in place
    assert fingerprint() != third


def test_fingerprint_of_missing_roots(tmp_path: Path) -> None:
    assert library_fingerprint([tmp_path / "none"]) == ((str(tmp_path / "none"), None),)


# ---------------------------------------------------------------------------------------------
# The `llamarunner models` table


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"), (999, "999 B"), (1000, "1.0 KB"), (492_032, "492 KB"),
        (253_000_000, "253 MB"), (4_700_000_000, "4.7 GB"), (12_345_678_901_234, "12 TB"),
    ],
)
def test_human_size(size: int, text: str) -> None:
    assert human_size(size) == text


def test_table_lists_every_model_with_its_facts(world: World) -> None:
    write_model(world.app_models / "llava.gguf")
    write_projector(world.app_models / "mmproj-llava-f16.gguf")
    world.ollama.add_model("llama3.2", "3b", write_model(world.tmp / "src" / "m.gguf", seed=1))
    (world.app_models / "junk.gguf").write_text("junk")
    catalog = world.catalog({"models": {"ghost": {"ttl": "1m"}}})
    text = format_library_table(catalog, MetadataCache(world.tmp / "cache.json"))
    lines = text.splitlines()
    assert lines[0].split() == [
        "NAME", "SOURCE", "ARCH", "PARAMS", "QUANT", "CONTEXT", "SIZE", "TEMPLATE",
        "CAPABILITIES",
    ]
    llava = next(line for line in lines if line.startswith("llava "))
    # CONTEXT is what llama-server will run with: discovered models get ctx-size 4096.
    assert llava.split() == ["llava", "folder", "llama", "121K", "F32", "4096", "492", "KB",
                             "file", "completion,tools,vision"]
    assert any(line.startswith("llama3.2:3b ") and "ollama" in line for line in lines)
    assert "junk.gguf: not a GGUF file" in text
    assert "models.ghost" in text


def test_table_of_nothing_says_so(world: World) -> None:
    text = format_library_table(world.catalog(), MetadataCache(world.tmp / "cache.json"))
    assert "no models found" in text


def test_table_marks_unreadable_models(world: World) -> None:
    catalog = world.catalog({"models": {"gone": {"path": str(world.tmp / "gone.gguf")}}})
    text = format_library_table(catalog, MetadataCache(world.tmp / "cache.json"),
                                show_skipped=False)
    assert text.splitlines()[1].split()[-1] == "unreadable"
    assert "Problems" not in text
