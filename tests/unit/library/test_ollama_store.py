"""Ollama's store read in place: names, layers, and every way a manifest can be refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tests.support.stores import (
    MEDIA_MODEL,
    MEDIA_PROJECTOR,
    MEDIA_TENSOR,
    FakeOllamaStore,
    write_model,
    write_projector,
)

from llamarunner.library.discovery import LibraryEntry
from llamarunner.library.ollama_store import (
    default_ollama_roots,
    ollama_model_name,
    scan_ollama_store,
)

HEX = "a" * 64


@pytest.fixture
def store(tmp_path: Path) -> FakeOllamaStore:
    return FakeOllamaStore(tmp_path / "ollama" / "models")


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    return write_model(tmp_path / "src" / "model.gguf")


def scan(store: FakeOllamaStore) -> tuple[dict[str, LibraryEntry], dict[str, str]]:
    result = scan_ollama_store(store.root)
    return {e.name: e for e in result.entries}, {s.path: s.reason for s in result.skipped}


def manifest_path(store: FakeOllamaStore, *parts: str) -> str:
    return str(store.manifests.joinpath(*parts))


# ---------------------------------------------------------------------------------------------
# Names


@pytest.mark.parametrize(
    ("parts", "name"),
    [
        (("registry.ollama.ai", "library", "llama3.2", "3b"), "llama3.2:3b"),
        (("registry.ollama.ai", "library", "llama3.2", "latest"), "llama3.2:latest"),
        (("registry.ollama.ai", "jmorgan", "tiny", "q4"), "jmorgan/tiny:q4"),
        (("hf.co", "bartowski", "Llama-3.2-1B-GGUF", "Q4_K_M"), "hf.co/bartowski/Llama-3.2-1B-GGUF"
                                                                ":Q4_K_M"),
        (("Registry.Ollama.AI", "Library", "x", "y"), "x:y"),  # Ollama compares names caselessly
    ],
)
def test_names_follow_ollamas_shortest_form(parts: tuple[str, str, str, str], name: str) -> None:
    assert ollama_model_name(*parts) == name


def test_manifest_is_written_like_ollama_writes_it(store: FakeOllamaStore, gguf: Path) -> None:
    path = store.add_model("llama3.2", "3b", gguf)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n") and text.count("\n") == 1
    data = json.loads(text)
    assert list(data) == ["schemaVersion", "mediaType", "config", "layers"]
    assert data["layers"][0]["mediaType"] == MEDIA_MODEL
    digest = data["layers"][0]["digest"]
    assert (store.blobs / digest.replace(":", "-")).stat().st_size == data["layers"][0]["size"]


# ---------------------------------------------------------------------------------------------
# Models found


def test_library_model(store: FakeOllamaStore, gguf: Path) -> None:
    manifest = store.add_model("llama3.2", "3b", gguf)
    layer = store.model_layer(manifest)
    found, skipped = scan(store)
    assert skipped == {}
    blob = str(store.blob_path(layer.digest))
    assert found == {
        "llama3.2:3b": LibraryEntry(
            name="llama3.2:3b",
            path=blob,
            source="ollama",
            parts=(blob,),
            projector=None,
            size=gguf.stat().st_size,
            mtime=manifest.stat().st_mtime,
            digest=layer.digest.removeprefix("sha256:"),
            publisher=None,
            # The store's template layer: it picks the turns when the GGUF has none.
            ollama_template="{{ .Prompt }}",
        )
    }


def test_latest_tag_is_also_reachable_without_it(store: FakeOllamaStore, gguf: Path) -> None:
    store.add_model("qwen3", "latest", gguf)
    found, _ = scan(store)
    assert found["qwen3:latest"].aliases == ("qwen3",)


def test_projector_layer_is_paired(store: FakeOllamaStore, gguf: Path, tmp_path: Path) -> None:
    projector = write_projector(tmp_path / "src" / "proj.gguf")
    manifest = store.add_model("llava", "7b", gguf, projector=projector)
    data = json.loads(manifest.read_text())
    digest = next(x["digest"] for x in data["layers"] if x["mediaType"] == MEDIA_PROJECTOR)
    found, _ = scan(store)
    assert found["llava:7b"].projector == str(store.blob_path(digest))


def test_adapter_layers_are_kept(store: FakeOllamaStore, gguf: Path, tmp_path: Path) -> None:
    adapter = write_model(tmp_path / "src" / "lora.gguf", seed=9)
    store.add_model("tuned", "v1", gguf, adapters=[adapter])
    found, _ = scan(store)
    (path,) = found["tuned:v1"].adapters
    assert Path(path).read_bytes() == adapter.read_bytes()


def test_other_namespace_and_host(store: FakeOllamaStore, tmp_path: Path) -> None:
    store.add_model("tiny", "q4", write_model(tmp_path / "a.gguf", seed=1), namespace="jmorgan")
    store.add_model(
        "Llama-3.2-1B-Instruct-GGUF", "Q4_K_M", write_model(tmp_path / "b.gguf", seed=2),
        host="hf.co", namespace="bartowski",
    )
    found, skipped = scan(store)
    assert skipped == {}
    assert sorted(found) == ["hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", "jmorgan/tiny:q4"]
    assert found["jmorgan/tiny:q4"].publisher == "jmorgan"


def test_two_tags_of_one_blob_are_two_entries_with_one_file(
    store: FakeOllamaStore, gguf: Path
) -> None:
    store.add_model("llama3.2", "3b", gguf)
    store.add_model("llama3.2", "latest", gguf)
    found, _ = scan(store)
    assert found["llama3.2:3b"].path == found["llama3.2:latest"].path  # the catalog merges


def test_empty_or_missing_store(tmp_path: Path) -> None:
    assert scan_ollama_store(tmp_path / "nothing").entries == []
    (tmp_path / "empty" / "manifests").mkdir(parents=True)
    assert scan_ollama_store(tmp_path / "empty").entries == []


# ---------------------------------------------------------------------------------------------
# Refused, each with a reason, the rest of the store still listed


def test_missing_blob(store: FakeOllamaStore, gguf: Path, tmp_path: Path) -> None:
    manifest = store.add_model("gone", "1b", gguf)
    store.add_model("ok", "1b", write_model(tmp_path / "ok.gguf", seed=3))
    store.blob_path(store.model_layer(manifest).digest).unlink()
    found, skipped = scan(store)
    assert list(found) == ["ok:1b"]
    assert "missing" in skipped[str(manifest)]


def test_size_mismatch(store: FakeOllamaStore, gguf: Path) -> None:
    manifest = store.add_model("short", "1b", gguf)
    blob = store.blob_path(store.model_layer(manifest).digest)
    with open(blob, "r+b") as file:
        file.truncate(blob.stat().st_size - 100)
    found, skipped = scan(store)
    assert found == {}
    assert "but the manifest says" in skipped[str(manifest)]


def test_blob_that_is_not_gguf(store: FakeOllamaStore) -> None:
    layer = store.add_blob(MEDIA_MODEL, b"PK\x03\x04 not a gguf at all")
    manifest = store.write_manifest(("registry.ollama.ai", "library", "zip", "1"), [layer])
    found, skipped = scan(store)
    assert found == {}
    assert "not a GGUF file" in skipped[str(manifest)]


def test_safetensors_only_model(store: FakeOllamaStore) -> None:
    layers = [store.add_blob(MEDIA_TENSOR, bytes([i]) * 64) for i in range(3)]
    manifest = store.write_manifest(("registry.ollama.ai", "x", "flux", "latest"), layers)
    found, skipped = scan(store)
    assert found == {}
    assert "safetensors" in skipped[str(manifest)]


def test_manifest_without_model_layer(store: FakeOllamaStore) -> None:
    manifest = store.write_manifest(("registry.ollama.ai", "library", "cloud", "120b-cloud"), [])
    _, skipped = scan(store)
    assert "no GGUF model layer" in skipped[str(manifest)]


def test_model_split_across_layers(store: FakeOllamaStore, tmp_path: Path) -> None:
    layers = [
        store.add_blob(MEDIA_MODEL, write_model(tmp_path / f"p{i}.gguf", seed=i)) for i in (1, 2)
    ]
    manifest = store.write_manifest(("registry.ollama.ai", "library", "huge", "1"), layers)
    _, skipped = scan(store)
    assert "split across 2 GGUF layers" in skipped[str(manifest)]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"layers": "x"}', "no layers list"),
        (b'{"layers": [{"mediaType": "application/vnd.ollama.image.model"}]}', "without"),
        (
            b'{"layers": [{"mediaType": "application/vnd.ollama.image.model", '
            b'"digest": "sha256:' + HEX.encode() + b'", "size": -1}]}',
            "no valid size",
        ),
        (b"\xff\xfe garbage", "not valid JSON"),
    ],
)
def test_broken_manifests(store: FakeOllamaStore, content: bytes, reason: str) -> None:
    path = store.manifests / "registry.ollama.ai" / "library" / "broken" / "1"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    found, skipped = scan(store)
    assert found == {}
    assert reason in skipped[str(path)]


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:../../../../etc/passwd",
        "sha256:" + "A" * 64,  # Ollama writes lower-case hex only
        "sha256:" + "a" * 63,
        "sha256-" + "a" * 64,
        "sha512:" + "a" * 128,
        "/etc/passwd",
        "sha256:" + "a" * 64 + "/../../x",
    ],
)
def test_digest_that_is_not_a_sha256_is_refused(store: FakeOllamaStore, digest: str) -> None:
    manifest = store.write_manifest(
        ("registry.ollama.ai", "library", "evil", "1"),
        [{"mediaType": MEDIA_MODEL, "digest": digest, "size": 10}],
    )
    found, skipped = scan(store)
    assert found == {}
    assert "is not sha256:<64 hex>" in skipped[str(manifest)]


@pytest.mark.parametrize("bad", ["..\\..\\evil", "a..b", "-rf", "sp ace", "x\\y"])
def test_manifest_path_components_are_checked(
    store: FakeOllamaStore, gguf: Path, bad: str
) -> None:
    layer = store.add_blob(MEDIA_MODEL, gguf)
    manifest = store.write_manifest(("registry.ollama.ai", "library", bad, "latest"), [layer])
    found, skipped = scan(store)
    assert found == {}
    assert "not a valid Ollama name part" in skipped[str(manifest.parent)]


def test_manifest_folder_linking_out_of_the_store(
    store: FakeOllamaStore, gguf: Path, tmp_path: Path
) -> None:
    elsewhere = FakeOllamaStore(tmp_path / "elsewhere")
    elsewhere.add_model("stolen", "1", gguf)
    link = store.manifests / "registry.ollama.ai"
    link.symlink_to(elsewhere.manifests / "registry.ollama.ai", target_is_directory=True)
    found, skipped = scan(store)
    assert found == {}
    assert "leads outside Ollama's manifests folder" in skipped[str(link)]


def test_blob_symlink_leaving_blobs_is_refused(
    store: FakeOllamaStore, gguf: Path, tmp_path: Path
) -> None:
    manifest = store.add_model("linked", "1", gguf)
    blob = store.blob_path(store.model_layer(manifest).digest)
    outside = tmp_path / "outside.gguf"
    blob.rename(outside)
    blob.symlink_to(outside)  # same bytes, same size: only the location is wrong
    found, skipped = scan(store)
    assert found == {}
    assert "leads outside Ollama's blobs folder" in skipped[str(manifest)]


def test_broken_projector_keeps_the_model_without_vision(
    store: FakeOllamaStore, gguf: Path, tmp_path: Path
) -> None:
    projector = write_projector(tmp_path / "proj.gguf")
    manifest = store.add_model("llava", "7b", gguf, projector=projector)
    data = json.loads(manifest.read_text())
    digest = next(x["digest"] for x in data["layers"] if x["mediaType"] == MEDIA_PROJECTOR)
    store.blob_path(digest).unlink()
    found, skipped = scan(store)
    assert found["llava:7b"].projector is None
    assert "listed without vision" in skipped[str(manifest)]


def test_stray_files_at_other_depths_are_ignored(store: FakeOllamaStore, gguf: Path) -> None:
    store.add_model("ok", "1", gguf)
    (store.manifests / "registry.ollama.ai" / "library" / "stray-file").write_text("{}")
    (store.manifests / ".DS_Store").write_text("")
    deep = store.manifests / "registry.ollama.ai" / "library" / "ok" / "1b" / "deeper"
    deep.mkdir(parents=True)
    found, skipped = scan(store)
    assert list(found) == ["ok:1"]
    assert skipped == {}


# ---------------------------------------------------------------------------------------------
# Where the store is


def test_ollama_models_variable_wins(tmp_path: Path) -> None:
    env = {"OLLAMA_MODELS": f'  "{tmp_path}/store"  '}
    assert default_ollama_roots(env, home=tmp_path / "home") == [tmp_path / "store"]


def test_default_roots_per_os(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert default_ollama_roots({}, home=home, platform="linux") == [
        home / ".ollama" / "models",
        Path("/usr/share/ollama/.ollama/models"),
    ]
    assert default_ollama_roots({}, home=home, platform="darwin") == [home / ".ollama" / "models"]
    assert default_ollama_roots({}, home=home, platform="win32") == [home / ".ollama" / "models"]


def test_default_roots_use_home_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    assert default_ollama_roots()[0] == tmp_path / ".ollama" / "models"


def test_fifo_as_manifest_does_not_block(store: FakeOllamaStore) -> None:
    fifo = store.manifests / "registry.ollama.ai" / "library" / "pipe" / "latest"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    _, skipped = scan(store)
    assert "not a regular file" in skipped[str(fifo)]
