"""The pull engine against the loopback registry/hub stand-in: progress, resume, faults."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.registry_standin import MEDIA_TENSOR, StandIn, sha256_digest
from tests.support.tiny_gguf import write_tiny_gguf

from llamarunner.store.errors import (
    DigestMismatchError,
    InvalidNameError,
    NotEnoughSpaceError,
    PullCancelledError,
    PullError,
    RemoteNotFoundError,
)
from llamarunner.store.layout import Manifest
from llamarunner.store.model_store import ModelStore
from llamarunner.store.names import parse_name


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_tiny_gguf(tmp_path_factory.mktemp("standin") / "tiny.gguf",
                           name="tiny").read_bytes()


@pytest.fixture
async def stand_in() -> AsyncIterator[StandIn]:
    server = await StandIn().start()
    yield server
    await server.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ModelStore]:
    changes: list[float] = []

    async def changed() -> None:
        changes.append(time.monotonic())

    model_store = ModelStore(tmp_path / "store", on_change=changed, retry_delay=0.01)
    model_store.changes = changes  # type: ignore[attr-defined]
    await model_store.start()
    yield model_store
    await model_store.close()


async def pull_all(store: ModelStore, name: str, **options: Any) -> list[dict[str, Any]]:
    job = store.pull(name, insecure=True, **options)
    return [event.to_json() async for event in job.events()]


def blob_files(store: ModelStore) -> set[str]:
    folder = store.layout.blobs_dir
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


async def test_a_pull_reports_progress_in_order_and_writes_the_manifest(
        store: ModelStore, stand_in: StandIn, gguf_bytes: bytes) -> None:
    manifest = stand_in.add_model("library/tiny", "latest", gguf_bytes, system="Be brief.",
                                  params={"temperature": 0.5})
    events = await pull_all(store, f"{stand_in.host}/library/tiny")
    statuses = [e["status"] for e in events]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    model = manifest["layers"][0]
    pulling = [e for e in events if e["status"] == f"pulling {model['digest'][7:19]}"]
    assert pulling and pulling[-1] == {"status": f"pulling {model['digest'][7:19]}",
                                       "digest": model["digest"], "total": model["size"],
                                       "completed": model["size"]}
    # Every layer and the config, each once, in the manifest's order.
    digests = [e["digest"] for e in events if "digest" in e]
    assert list(dict.fromkeys(digests)) == [
        *(layer["digest"] for layer in manifest["layers"]), manifest["config"]["digest"]]
    stored = parse_name(f"{stand_in.host}/library/tiny:latest")
    data = store.layout.manifest_path(stored).read_bytes()
    assert data == stand_in.manifests[("library/tiny", "latest")]  # as served, byte for byte
    for digest in Manifest.parse(data).digests():
        assert store.layout.blob_path(digest).read_bytes() == stand_in.blobs[digest]
    assert not [name for name in blob_files(store) if name.endswith("-partial")]
    assert len(store.changes) == 1  # type: ignore[attr-defined]
    # Pulling again finds every blob in place and downloads nothing.
    before = sum(stand_in.sent.values())
    again = await pull_all(store, f"{stand_in.host}/library/tiny:latest")
    assert again[-1] == {"status": "success"}
    assert sum(stand_in.sent.values()) == before


async def test_bad_names_are_refused_before_any_request(store: ModelStore,
                                                        stand_in: StandIn) -> None:
    for bad in (f"{stand_in.host}/../etc/passwd", "a/b/c/d", "tiny:../../x", "a..b",
                f"{stand_in.host}/lib.rary/tiny", "", "-x", "x" * 81, "tiny@sha256:abc",
                "ftp://host/a/b"):
        with pytest.raises(InvalidNameError) as refused:
            store.pull(bad, insecure=True)
        assert refused.value.status == 400
    assert stand_in.requests == []
    assert not store.layout.root.exists() or not any(store.layout.root.rglob("*.json"))


async def test_a_corrupt_blob_fails_the_pull_with_digest_and_leaves_nothing(
        store: ModelStore, stand_in: StandIn, gguf_bytes: bytes) -> None:
    manifest = stand_in.add_model("library/tiny", "latest", gguf_bytes)
    model = manifest["layers"][0]["digest"]
    stand_in.faults.corrupt.add(model)
    job = store.pull(f"{stand_in.host}/library/tiny", insecure=True)
    with pytest.raises(DigestMismatchError) as failed:
        await job.wait()
    assert "digest" in failed.value.message and model in failed.value.message
    assert not store.layout.manifests_dir.exists() or not any(
        store.layout.manifests_dir.rglob("*"))
    hex_model = model.removeprefix("sha256:")
    assert not [n for n in blob_files(store) if hex_model in n]
    assert not [n for n in blob_files(store) if not n.endswith("-partial")]
    assert store.changes == []  # type: ignore[attr-defined]
    assert await store.interrupted() == []  # nothing to resume: the file was bad


async def test_a_cut_connection_is_resumed_with_range_and_nothing_is_fetched_twice(
        store: ModelStore, stand_in: StandIn, gguf_bytes: bytes) -> None:
    manifest = stand_in.add_model("library/tiny", "latest", gguf_bytes)
    model = manifest["layers"][0]["digest"]
    cut = len(gguf_bytes) // 3
    stand_in.faults.cut[model] = (cut, 1)
    events = await pull_all(store, f"{stand_in.host}/library/tiny")
    assert events[-1] == {"status": "success"}
    assert stand_in.ranges(model) == [None, f"bytes={cut}-"]
    assert stand_in.sent[model] == len(gguf_bytes)  # each byte once
    assert store.layout.blob_path(model).read_bytes() == gguf_bytes


async def test_an_interrupted_pull_resumes_in_the_next_run(
        tmp_path: Path, stand_in: StandIn, gguf_bytes: bytes) -> None:
    manifest = stand_in.add_model("library/tiny", "latest", gguf_bytes)
    model = manifest["layers"][0]["digest"]
    cut = len(gguf_bytes) // 2
    stand_in.faults.cut[model] = (cut, 3)  # more cuts than one run retries
    name = f"{stand_in.host}/library/tiny"
    first = ModelStore(tmp_path / "store", retry_delay=0.01)
    await first.start()
    job = first.pull(name, insecure=True)
    with pytest.raises(PullError) as failed:
        await job.wait()
    assert failed.value.resumable and "pull again to resume" in failed.value.message
    assert [r.name for r in await first.interrupted()] == [parse_name(name).full]
    await first.close()
    partial = first.layout.partial_path(model.removeprefix("sha256:"))
    assert partial.stat().st_size == cut

    second = ModelStore(tmp_path / "store", retry_delay=0.01)  # a restart
    await second.start()
    try:
        records = await second.interrupted()
        assert [(r.name, r.insecure) for r in records] == [(parse_name(name).full, True)]
        job = second.pull(records[0].name, insecure=records[0].insecure)
        await job.wait()
        assert stand_in.ranges(model)[-1] == f"bytes={cut}-"
        assert stand_in.sent[model] == len(gguf_bytes)
        assert await second.interrupted() == []
        assert not partial.exists()
    finally:
        await second.close()


async def test_a_reset_connection_loses_bytes_in_flight_and_still_completes(
        store: ModelStore, stand_in: StandIn, gguf_bytes: bytes) -> None:
    manifest = stand_in.add_model("library/tiny", "latest", gguf_bytes)
    model = manifest["layers"][0]["digest"]
    stand_in.faults.cut[model] = (len(gguf_bytes) // 2, 2)
    stand_in.faults.abort = True
    events = await pull_all(store, f"{stand_in.host}/library/tiny")
    assert events[-1] == {"status": "success"}
    assert len(stand_in.ranges(model)) == 3
    assert store.layout.blob_path(model).read_bytes() == gguf_bytes


async def test_a_server_that_ignores_range_makes_the_download_start_over(
        store: ModelStore, stand_in: StandIn, gguf_bytes: bytes) -> None:
    manifest = stand_in.add_model("library/tiny", "latest", gguf_bytes)
    model = manifest["layers"][0]["digest"]
    stand_in.faults.cut[model] = (1000, 1)
    stand_in.faults.ignore_range = True
    events = await pull_all(store, f"{stand_in.host}/library/tiny")
    assert events[-1] == {"status": "success"}
    assert store.layout.blob_path(model).read_bytes() == gguf_bytes


async def test_not_enough_disk_space_is_refused_with_the_numbers(
        store: ModelStore, stand_in: StandIn, gguf_bytes: bytes,
        monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in.add_model("library/tiny", "latest", gguf_bytes)
    real = shutil.disk_usage

    def tiny_disk(path: Any) -> Any:
        usage = real(path)
        return type(usage)(usage.total, usage.total - 1000, 1000)

    monkeypatch.setattr(shutil, "disk_usage", tiny_disk)
    job = store.pull(f"{stand_in.host}/library/tiny", insecure=True)
    with pytest.raises(NotEnoughSpaceError) as refused:
        await job.wait()
    assert refused.value.status == 507 and refused.value.free == 1000
    assert refused.value.needed >= len(gguf_bytes)
    assert f"({refused.value.needed} bytes)" in refused.value.message
    assert "(1000 bytes) are free" in refused.value.message
    assert not [r for r in stand_in.requests if "/blobs/" in r.path]


async def test_stale_partial_files_are_removed_at_start(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    blobs = store.layout.blobs_dir
    blobs.mkdir(parents=True)
    old, fresh = blobs / f"sha256-{'a' * 64}-partial", blobs / f"sha256-{'b' * 64}-partial"
    temp = blobs / f".sha256-{'c' * 64}.1234abcd.tmp"
    kept = blobs / f"sha256-{'d' * 64}"
    for path in (old, fresh, temp, kept):
        path.write_bytes(b"x")
    two_days_ago = time.time() - 2 * 86400
    for path in (old, temp, kept):
        os.utime(path, (two_days_ago, two_days_ago))
    await store.start()
    await store.close()
    assert sorted(p.name for p in blobs.iterdir()) == sorted([fresh.name, kept.name])


async def test_token_challenge_and_missing_models(store: ModelStore, stand_in: StandIn,
                                                  gguf_bytes: bytes) -> None:
    stand_in.add_model("library/tiny", "q4", gguf_bytes)
    stand_in.faults.require_token = True
    events = await pull_all(store, f"{stand_in.host}/library/tiny:q4")
    assert events[-1] == {"status": "success"}
    assert any(r.path == "/token" for r in stand_in.requests)
    blob_requests = [r for r in stand_in.requests if "/blobs/" in r.path]
    assert blob_requests and all(r.authorization == "Bearer stand-in-token"
                                 for r in blob_requests)
    job = store.pull(f"{stand_in.host}/library/nope", insecure=True)
    with pytest.raises(RemoteNotFoundError) as missing:
        await job.wait()
    assert missing.value.status == 404 and "not found" in missing.value.message


async def test_models_llama_server_cannot_run_are_refused_before_downloading(
        store: ModelStore, stand_in: StandIn) -> None:
    stand_in.add_model("library/mlx", "latest", b"not gguf", media_type=MEDIA_TENSOR)
    job = store.pull(f"{stand_in.host}/library/mlx", insecure=True)
    with pytest.raises(PullError) as refused:
        await job.wait()
    assert refused.value.status == 400 and "safetensors" in refused.value.message
    assert not [r for r in stand_in.requests if "/blobs/" in r.path]


async def test_plain_http_needs_insecure(store: ModelStore, stand_in: StandIn,
                                         gguf_bytes: bytes) -> None:
    stand_in.add_model("library/tiny", "latest", gguf_bytes)
    job = store.pull(f"http://{stand_in.host}/library/tiny")
    with pytest.raises(PullError) as refused:
        await job.wait()
    assert refused.value.status == 400 and "insecure" in refused.value.message
    assert stand_in.requests == []


async def test_cancel_keeps_the_partial_and_two_pulls_share_one_job(
        store: ModelStore, stand_in: StandIn, gguf_bytes: bytes) -> None:
    manifest = stand_in.add_model("library/tiny", "latest", gguf_bytes)
    model = manifest["layers"][0]["digest"]
    stand_in.faults.delay = 0.02
    name = f"{stand_in.host}/library/tiny"
    job = store.pull(name, insecure=True)
    assert store.pull(name.upper().replace(stand_in.host.upper(), stand_in.host),
                      insecure=True) is job
    assert store.job(job.id) is job and store.jobs() == [job]
    watcher = job.events()
    async for event in watcher:
        if event.digest == model and (event.completed or 0) > 0:
            break
    await watcher.aclose()  # the only watcher leaves: an API pull stops
    with pytest.raises(PullCancelledError):
        await job.wait()
    partial = store.layout.partial_path(model.removeprefix("sha256:"))
    assert 0 < partial.stat().st_size < len(gguf_bytes)
    stand_in.faults.delay = 0
    resumed = store.pull(name, insecure=True)
    assert resumed is not job
    await resumed.wait()
    assert stand_in.ranges(model)[-1] == f"bytes={partial_size_at_cancel(stand_in, model)}-"
    assert stand_in.sent[model] == len(gguf_bytes)


def partial_size_at_cancel(stand_in: StandIn, model: str) -> int:
    header = stand_in.ranges(model)[-1]
    assert header is not None
    return int(header.removeprefix("bytes=").rstrip("-"))


async def test_huggingface_pull_picks_the_quant_and_checks_the_hub_sha256(
        store: ModelStore, stand_in: StandIn, gguf_bytes: bytes,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    q8 = write_tiny_gguf(tmp_path / "q8.gguf", name="tiny-q8", seed=2).read_bytes()
    stand_in.add_hub_repo("someone/Tiny-GGUF", {
        "README.md": b"# tiny", "tiny-Q8_0.gguf": q8, "tiny-Q4_K_M.gguf": gguf_bytes,
        "tiny-UD-Q4_K_M.gguf": b"GGUF other", "tiny-F16-00001-of-00002.gguf": b"GGUF part"})
    monkeypatch.setenv("HF_ENDPOINT", stand_in.base_url)
    events = await pull_all(store, "hf.co/someone/Tiny-GGUF")
    assert events[-1] == {"status": "success"}
    default = store.layout.read_manifest(parse_name("hf.co/someone/Tiny-GGUF:latest"))
    assert [layer.digest for layer in default.layers] == [sha256_digest(gguf_bytes)]
    await pull_all(store, "hf.co/someone/Tiny-GGUF:q8_0")
    q8_manifest = store.layout.read_manifest(parse_name("hf.co/someone/Tiny-GGUF:q8_0"))
    assert [layer.digest for layer in q8_manifest.layers] == [sha256_digest(q8)]
    assert {r.path for r in stand_in.requests if "/resolve/" in r.path} == {
        "/someone/Tiny-GGUF/resolve/main/tiny-Q4_K_M.gguf",
        "/someone/Tiny-GGUF/resolve/main/tiny-Q8_0.gguf"}
    job = store.pull("hf.co/someone/Tiny-GGUF:IQ2_XXS")
    with pytest.raises(RemoteNotFoundError) as missing:
        await job.wait()
    assert "Q8_0" in missing.value.message and "Q4_K_M" in missing.value.message
    job = store.pull("hf.co/someone/Tiny-GGUF:F16")
    with pytest.raises(PullError) as split:
        await job.wait()
    assert "split" in split.value.message
    # A file the hub keeps in git (no LFS sha256): named by its hash once it is here.
    stand_in.hub_plain.add(("someone/Tiny-GGUF", "tiny-Q8_0.gguf"))
    await asyncio.to_thread(store.layout.delete_model, parse_name("hf.co/someone/Tiny-GGUF:q8_0"))
    events = await pull_all(store, "hf.co/someone/Tiny-GGUF:Q8_0")
    assert events[-1] == {"status": "success"}
    plain = store.layout.read_manifest(parse_name("hf.co/someone/Tiny-GGUF:Q8_0"))
    assert [layer.digest for layer in plain.layers] == [sha256_digest(q8)]
    stand_in.hub_plain.clear()
    stand_in.faults.corrupt.add("tiny-Q8_0.gguf")
    await asyncio.to_thread(store.layout.delete_model, parse_name("hf.co/someone/Tiny-GGUF:Q8_0"))
    job = store.pull("hf.co/someone/Tiny-GGUF:Q8_0")
    with pytest.raises(DigestMismatchError):
        await job.wait()


async def test_a_detached_pull_goes_on_without_watchers(store: ModelStore, stand_in: StandIn,
                                                        gguf_bytes: bytes) -> None:
    # What a download dialog or `llamarunner pull` uses: closing the view keeps the pull.
    stand_in.add_model("library/tiny", "latest", gguf_bytes)
    job = store.pull(f"{stand_in.host}/library/tiny", insecure=True,
                     cancel_when_unwatched=False)
    watcher = job.events()
    assert (await anext(watcher)).status == "pulling manifest"
    await watcher.aclose()
    await job.wait()
    assert job.state.value == "succeeded" and job.completed == job.total > 0
    replay = [event.status async for event in job.events()]  # late watchers see it all
    assert replay[0] == "pulling manifest" and replay[-1] == "success"
