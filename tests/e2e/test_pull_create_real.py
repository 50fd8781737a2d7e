"""Getting models the Ollama way, end to end: the official `ollama` client and raw HTTP
against the app, a loopback registry/hub stand-in, and real llama-server runs."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import ollama
import pytest
from tests.support.registry_standin import StandIn
from tests.support.tiny_gguf import write_tiny_gguf

from llamarunner.proxy.ollama.runner_calls import apply_template
from llamarunner.store.names import parse_name

ARGS = {"ctx-size": 512, "threads": 1, "jinja": True}
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="session")
def tiny_bytes(tiny_model: Path) -> bytes:
    return tiny_model.read_bytes()


@pytest.fixture(scope="session")
def q8_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("hub") / "q8.gguf"
    return write_tiny_gguf(path, name="tiny-q8", seed=4).read_bytes()


@pytest.fixture
async def stand_in() -> AsyncIterator[StandIn]:
    server = await StandIn().start()
    yield server
    await server.close()


@pytest.fixture
async def running(write_config, start_service, llama_server_bin, tiny_model):  # type: ignore[no-untyped-def]
    config = write_config(
        {"tiny": {"path": str(tiny_model), "args": ARGS}},
        runtime=llama_server_bin,
        proxies={"ollama": {"enabled": True, "host": "127.0.0.1", "port": 0},
                 "lmstudio": {"enabled": False, "port": 0}},
        sources={"ollama": {"enabled": False}, "lmstudio": {"enabled": False}},
        # Far below a model's size: blob uploads stream to disk past this limit.
        security={"max_body_bytes": 65536},
    )
    return await start_service(config, api="ollama")


def client(running: Any) -> ollama.AsyncClient:
    return ollama.AsyncClient(host=running.base_url)


async def raw(running: Any, method: str, path: str, body: Any = None, *,
              data: bytes | None = None) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http, http.request(
            method, running.base_url + path, json=body, data=data) as resp:
        return resp.status, await resp.read()


async def names(running: Any) -> list[str]:
    return sorted(m.model for m in (await client(running).list()).models)


def store_blobs(running: Any) -> set[str]:
    folder = running.service.model_store.layout.blobs_dir
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


async def test_a_pulled_model_streams_progress_is_listed_as_pulled_and_chats(
        running: Any, stand_in: StandIn, tiny_bytes: bytes) -> None:
    manifest = stand_in.add_model("library/tiny", "latest", tiny_bytes,
                                  system="You are a pirate.",
                                  params={"temperature": 0.25, "num_ctx": 1024,
                                          "stop": ["<|user|>"]},
                                  template="{{ .Prompt }}", license="MIT")
    events = [p async for p in await client(running).pull(f"{stand_in.host}/library/tiny",
                                                           insecure=True, stream=True)]
    statuses = [e.status for e in events]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    model = manifest["layers"][0]
    last = [e for e in events if e.digest == model["digest"]][-1]
    assert (last.status, last.total, last.completed) == (
        f"pulling {model['digest'][7:19]}", model["size"], model["size"])

    name = f"{stand_in.host}/library/tiny:latest"
    assert name in await names(running)  # listed at once, no rescan to wait for
    entry = running.service.library_entries()[name]
    assert entry.source == "pulled" and entry.system == "You are a pirate."

    # It chats on a real llama-server, with its params as defaults and its system prompt.
    c = client(running)
    pulled = await c.chat(model=name, messages=HELLO, options={"num_predict": 2})
    plain = await c.chat(model="tiny", messages=HELLO, options={"num_predict": 2})
    assert pulled.message.role == "assistant" and pulled.done
    assert pulled.prompt_eval_count > plain.prompt_eval_count  # the system prompt is in
    argv = " ".join(running.service.manager.runner(name).describe_argv())
    assert "--temp 0.25" in argv and "--ctx-size 1024" in argv
    own = [{"role": "system", "content": "Be terse."}, *HELLO]
    mine = await c.chat(model=name, messages=own, options={"num_predict": 2})
    theirs = await c.chat(model="tiny", messages=own, options={"num_predict": 2})
    assert mine.prompt_eval_count == theirs.prompt_eval_count  # a system message wins


async def test_bad_names_get_400_before_any_network(running: Any, stand_in: StandIn) -> None:
    for bad in (f"{stand_in.host}/../x", "a/b/c/d", "tiny:../../etc"):
        with pytest.raises(ollama.ResponseError) as refused:
            await client(running).pull(bad, insecure=True)
        assert refused.value.status_code == 400
        assert "invalid model name" in refused.value.error
    status, body = await raw(running, "POST", "/api/pull", {"model": "x", "insecure": "yes"})
    assert status == 400 and "PullRequest.insecure" in json.loads(body)["error"]
    assert stand_in.requests == []


async def test_a_corrupt_download_fails_with_digest_and_nothing_is_listed(
        running: Any, stand_in: StandIn, tiny_bytes: bytes) -> None:
    manifest = stand_in.add_model("library/bad", "latest", tiny_bytes)
    stand_in.faults.corrupt.add(manifest["layers"][0]["digest"])
    status, body = await raw(running, "POST", "/api/pull",
                             {"model": f"{stand_in.host}/library/bad", "insecure": True})
    lines = [json.loads(line) for line in body.splitlines()]
    assert status == 200 and lines[0] == {"status": "pulling manifest"}
    assert "digest" in lines[-1]["error"]
    with pytest.raises(ollama.ResponseError) as failed:
        await client(running).pull(f"{stand_in.host}/library/bad", insecure=True)
    assert "digest" in failed.value.error and failed.value.status_code == 502
    assert await names(running) == ["tiny:latest"]
    hex_model = manifest["layers"][0]["digest"].removeprefix("sha256:")
    assert not [name for name in store_blobs(running) if hex_model in name]


async def test_a_cut_download_resumes_with_range(running: Any, stand_in: StandIn,
                                                 tiny_bytes: bytes) -> None:
    data = tiny_bytes
    manifest = stand_in.add_model("library/cut", "v1", data)
    digest = manifest["layers"][0]["digest"]
    stand_in.faults.cut[digest] = (len(data) // 4, 1)
    done = await client(running).pull(f"{stand_in.host}/library/cut:v1", insecure=True)
    assert done.status == "success"
    assert stand_in.ranges(digest) == [None, f"bytes={len(data) // 4}-"]
    assert stand_in.sent[digest] == len(data)


async def test_create_from_an_uploaded_blob_and_from_an_existing_model(
        running: Any, tiny_model: Path, tmp_path: Path) -> None:
    c = client(running)
    other = write_tiny_gguf(tmp_path / "other.gguf", name="other", seed=3)
    assert other.stat().st_size > running.service.config.security.max_body_bytes
    digest = await c.create_blob(other)  # streamed (chunked), past security.max_body_bytes
    assert digest == f"sha256:{hashlib.sha256(other.read_bytes()).hexdigest()}"
    status, _ = await raw(running, "HEAD", f"/api/blobs/{digest}")
    assert status == 200
    status, _ = await raw(running, "HEAD", f"/api/blobs/sha256:{'0' * 64}")
    assert status == 404
    status, body = await raw(running, "POST", f"/api/blobs/sha256:{'0' * 64}", data=b"abc")
    assert status == 400 and "digest mismatch" in json.loads(body)["error"]
    status, body = await raw(running, "HEAD", "/api/blobs/sha256:nothex")
    assert status == 400

    steps = [p.status async for p in await c.create(model="from-blob",
                                                    files={"other.gguf": digest},
                                                    stream=True)]
    assert steps[0] == "parsing GGUF" and steps[-2:] == ["writing manifest", "success"]
    assert f"using existing layer {digest}" in steps
    with pytest.raises(ollama.ResponseError) as missing:
        await c.create(model="nope", files={"x.gguf": f"sha256:{'1' * 64}"})
    assert missing.value.status_code == 400 and "upload it first" in missing.value.error

    done = await c.create(model="mario", from_="tiny", system="You are Mario.",
                          parameters={"temperature": 0.3}, license="MIT")
    assert done.status == "success"
    assert {"from-blob:latest", "mario:latest"} <= set(await names(running))
    assert running.service.library_entries()["mario:latest"].source == "pulled"
    reply = await c.chat(model="mario", messages=HELLO, options={"num_predict": 2})
    plain = await c.chat(model="tiny", messages=HELLO, options={"num_predict": 2})
    assert reply.prompt_eval_count > plain.prompt_eval_count
    assert "--temp 0.3" in " ".join(running.service.manager.runner("mario:latest").describe_argv())
    with pytest.raises(ollama.ResponseError) as unknown:
        await c.create(model="x", from_="no-such-model")
    assert unknown.value.status_code == 404


async def test_copy_and_delete_count_references_to_shared_blobs(
        running: Any, stand_in: StandIn, tiny_bytes: bytes) -> None:
    c = client(running)
    manifest = stand_in.add_model("library/tiny", "latest", tiny_bytes, system="Hi.")
    source = f"{stand_in.host}/library/tiny"
    await c.pull(source, insecure=True)
    await c.copy(source, "backup")
    assert {f"{source}:latest", "backup:latest"} <= set(await names(running))
    model_blob = "sha256-" + manifest["layers"][0]["digest"].removeprefix("sha256:")
    await c.chat(model=source, messages=HELLO, options={"num_predict": 1})  # loaded
    await c.delete(source)
    assert f"{source}:latest" not in await names(running)
    assert model_blob in store_blobs(running)  # the copy still uses it
    await c.chat(model="backup", messages=HELLO, options={"num_predict": 1})
    await c.delete("backup")
    assert await names(running) == ["tiny:latest"]
    assert store_blobs(running) == set()
    assert not list(running.service.model_store.layout.names())
    with pytest.raises(ollama.ResponseError) as missing:
        await c.delete("backup")
    assert missing.value.status_code == 404
    # Configured models keep today's behaviour: copied and deleted in the config.
    await c.copy("tiny", "tiny-copy")
    assert "tiny-copy" in json.loads(running.service.store.path.read_text())["models"]
    with pytest.raises(ollama.ResponseError) as bad:
        await c.copy(f"{stand_in.host}/library/none", "../x")
    assert bad.value.status_code in (400, 404)


async def test_push_is_refused_in_ollamas_shape(running: Any) -> None:
    with pytest.raises(ollama.ResponseError) as refused:
        await client(running).push("tiny", insecure=True)
    assert refused.value.status_code == 501 and "not supported" in refused.value.error


async def test_huggingface_pulls_go_to_hf_endpoint(running: Any, stand_in: StandIn,
                                                   tiny_bytes: bytes, q8_bytes: bytes,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    q8 = q8_bytes
    stand_in.add_hub_repo("someone/Tiny-GGUF", {"tiny-Q4_K_M.gguf": tiny_bytes,
                                                "tiny-Q8_0.gguf": q8, "README.md": b"hi"})
    monkeypatch.setenv("HF_ENDPOINT", stand_in.base_url)
    c = client(running)
    await c.pull("hf.co/someone/Tiny-GGUF")
    await c.pull("hf.co/someone/Tiny-GGUF:Q8_0")
    assert {"hf.co/someone/Tiny-GGUF:latest", "hf.co/someone/Tiny-GGUF:Q8_0"} <= set(
        await names(running))
    entries = running.service.library_entries()
    assert entries["hf.co/someone/Tiny-GGUF:Q8_0"].digest == hashlib.sha256(q8).hexdigest()
    reply = await c.chat(model="hf.co/someone/Tiny-GGUF:Q8_0", messages=HELLO,
                         options={"num_predict": 1})
    assert reply.done
    with pytest.raises(ollama.ResponseError) as missing:
        await c.pull("hf.co/someone/Nothing-GGUF")
    assert missing.value.status_code == 404
    assert parse_name("hf.co/someone/Tiny-GGUF").is_huggingface


async def test_a_system_prompt_with_any_characters_reaches_the_template_as_written(
        running: Any) -> None:
    system = 'Line one\nSay "hi" \\ {{ not jinja }} {% raw %} ünïcode ✓\ttab'
    await client(running).create(model="odd", from_="tiny", system=system)
    manager = running.service.manager
    lease = await manager.acquire("odd:latest")
    try:
        prompt = await apply_template(running.service.http, lease, {"messages": HELLO})
        own = await apply_template(running.service.http, lease, {
            "messages": [{"role": "system", "content": "mine"}, *HELLO]})
    finally:
        lease.release(None)
    assert prompt.startswith(f"<|system|>\n{system}</s>\n<|user|>\nhello")
    assert own.startswith("<|system|>\nmine</s>") and system not in own


async def test_a_blob_larger_than_the_free_space_is_refused_before_it_is_read(
        running: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.disk_usage

    def tiny_disk(path: Any) -> Any:
        usage = real(path)
        return type(usage)(usage.total, usage.total - 10, 10)

    monkeypatch.setattr(shutil, "disk_usage", tiny_disk)
    body = b"x" * 100
    digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
    status, answer = await raw(running, "POST", f"/api/blobs/{digest}", data=body)
    assert status == 507 and "(10 bytes) are free" in json.loads(answer)["error"]
    assert not running.service.model_store.layout.blob_path(digest).exists()


async def test_a_pulled_models_template_layer_sets_its_turns(
        running: Any, stand_in: StandIn, tmp_path: Path) -> None:
    # A GGUF without a template of its own whose name matches no family: only the
    # manifest's (Go) template layer says how its turns look, and that is honoured.
    bare = write_tiny_gguf(tmp_path / "bare.gguf", name="bare", chat_template=None)
    layer = ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
             "{{ end }}<|im_start|>assistant\n")
    stand_in.add_model("library/bare", "latest", bare.read_bytes(), template=layer)
    await client(running).pull(f"{stand_in.host}/library/bare", insecure=True)
    name = f"{stand_in.host}/library/bare:latest"
    template = running.service.chat_template_for(name)
    assert (template.source, template.name) == ("layer", "chatml")
    lease = await running.service.manager.acquire(name)
    try:
        async with aiohttp.ClientSession() as http:
            prompt = await apply_template(http, lease, {"messages": HELLO})
    finally:
        lease.release()
    assert prompt.startswith("<|im_start|>user\nhello<|im_end|>")
    reply = await client(running).chat(model=name, messages=HELLO, options={"num_predict": 2})
    assert reply.done


async def test_a_created_models_messages_come_before_each_chat(running: Any) -> None:
    c = client(running)
    preset = [{"role": "user", "content": "Who are you?"},
              {"role": "assistant", "content": "I am the tiny model."}]
    done = await c.create(model="primed", from_="tiny", messages=preset)
    assert done.status == "success"
    assert list(running.service.default_messages_for("primed:latest")) == preset
    primed = await c.chat(model="primed", messages=HELLO, options={"num_predict": 2})
    plain = await c.chat(model="tiny", messages=HELLO, options={"num_predict": 2})
    assert primed.done
    assert primed.prompt_eval_count > plain.prompt_eval_count  # the preset turns are in
    # A load-only chat (no messages) stays load-only.
    loaded = await c.chat(model="primed", messages=[])
    assert loaded.done_reason == "load"
