"""The store's files: names found on disk, reference-counted deletes, leftovers."""

from __future__ import annotations

import hashlib
from pathlib import Path

from llamarunner.store.layout import Layer, Manifest, StoreLayout
from llamarunner.store.names import parse_name


def blob(layout: StoreLayout, data: bytes) -> Layer:
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    layout.ensure_folders()
    layout.blob_path(digest).write_bytes(data)
    return Layer("m", digest, len(data))


def test_deleting_a_model_keeps_the_blobs_another_model_uses(tmp_path: Path) -> None:
    layout = StoreLayout(tmp_path)
    shared, own_a, own_b, config = (blob(layout, d) for d in (b"gguf", b"a", b"b", b"c"))
    a, b = parse_name("a"), parse_name("team/b:v1")
    layout.write_manifest(a, Manifest(config, (shared, own_a)).to_bytes())
    layout.write_manifest(b, Manifest(config, (shared, own_b)).to_bytes())
    assert [n.display for n in layout.names()] == ["a:latest", "team/b:v1"]
    assert layout.blobs_freed_by_delete(a) == {own_a.digest}
    assert layout.delete_model(a) == {own_a.digest}
    assert not layout.blob_path(own_a.digest).exists()
    assert layout.blob_path(shared.digest).exists() and layout.blob_path(config.digest).exists()
    assert not (layout.manifests_dir / "registry.ollama.ai" / "library").exists()
    # A blob a running pull needs stays even when no manifest names it yet.
    assert layout.delete_model(b, keep={own_b.digest}) == {shared.digest, config.digest}
    assert layout.blob_path(own_b.digest).exists()
    assert list(layout.names()) == []


def test_names_on_disk_are_found_caselessly_and_invalid_ones_skipped(tmp_path: Path) -> None:
    layout = StoreLayout(tmp_path)
    layer = blob(layout, b"x")
    layout.write_manifest(parse_name("127.0.0.1:5000/Team/Model:Q4"),
                          Manifest(None, (layer,)).to_bytes())
    (layout.manifests_dir / "h" / "n" / "m..x").mkdir(parents=True)
    (layout.manifests_dir / "h" / "n" / "m..x" / "t").write_text("{}")
    found = layout.find(parse_name("127.0.0.1:5000/team/model:q4"))
    assert found is not None and found.parts == ("127.0.0.1:5000", "Team", "Model", "Q4")
    assert [n.display for n in layout.names()] == ["127.0.0.1:5000/Team/Model:Q4"]
