"""The Ollama API on a real llama-server, through the official `ollama` client and raw HTTP."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import ollama
import psutil
import pytest

ARGS = {"ctx-size": 512, "threads": 1, "jinja": True}


@pytest.fixture
async def running(write_config, start_service, llama_server_bin, tiny_model, tiny_model_b):
    config = write_config(
        {
            "tiny": {"path": str(tiny_model), "args": ARGS},
            "embedder": {"path": str(tiny_model_b),
                         "args": {**ARGS, "embedding": True, "pooling": "mean"}},
        },
        runtime=llama_server_bin,
        proxies={"ollama": {"enabled": True, "host": "127.0.0.1", "port": 0},
                 "lmstudio": {"enabled": False, "port": 0}},
    )
    started = await start_service(config, api="ollama")
    return started


def client(running) -> ollama.AsyncClient:
    return ollama.AsyncClient(host=running.base_url)


async def raw(running, method: str, path: str, body: object = None) -> tuple[int, bytes, str]:
    async with aiohttp.ClientSession() as http, http.request(
        method, running.base_url + path, json=body
    ) as resp:
        return resp.status, await resp.read(), resp.headers.get("Content-Type", "")


async def test_root_and_version(running) -> None:
    status, body, _ = await raw(running, "GET", "/")
    assert status == 200 and body == b"Ollama is running"
    status, _, _ = await raw(running, "HEAD", "/")
    assert status == 200
    status, body, _ = await raw(running, "GET", "/api/version")
    version = json.loads(body)["version"]
    assert tuple(int(p) for p in version.split(".")[:3]) >= (0, 6, 4)
    status, _, _ = await raw(running, "HEAD", "/api/version")
    assert status == 200


async def test_list_reads_gguf_metadata(running, tiny_model) -> None:
    listing = await client(running).list()
    names = sorted(m.model for m in listing.models)
    assert names == ["embedder:latest", "tiny:latest"]
    tiny = next(m for m in listing.models if m.model == "tiny:latest")
    assert tiny.size == tiny_model.stat().st_size
    assert len(tiny.digest) == 64
    assert tiny.details.format == "gguf"
    assert tiny.details.family == "llama"
    assert tiny.details.quantization_level == "F32"
    assert tiny.details.parameter_size
    again = await client(running).list()
    assert next(m for m in again.models if m.model == "tiny:latest").digest == tiny.digest


async def test_show_reports_the_context_the_runner_uses(running) -> None:
    shown = await client(running).show("tiny")
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == 512  # ctx-size, not training context
    assert shown.modelinfo["llama.embedding_length"] == 64
    assert shown.modelinfo["llama.block_count"] == 2
    assert "completion" in shown.capabilities and "tools" in shown.capabilities
    assert shown.template
    emb = await client(running).show("embedder:latest")
    assert "embedding" in emb.capabilities
    status, body, _ = await raw(running, "POST", "/api/show", {"name": "tiny"})
    assert status == 200  # the legacy `name` field
    status, body, _ = await raw(running, "POST", "/api/show", {"model": "nope"})
    assert status == 404 and json.loads(body) == {"error": "model 'nope' not found"}


async def test_chat_non_streaming_has_every_duration(running) -> None:
    reply = await client(running).chat(
        "tiny", messages=[{"role": "user", "content": "hello"}], options={"num_predict": 8})
    assert reply.done and reply.done_reason in ("stop", "length")
    assert reply.message.role == "assistant" and reply.message.content
    assert reply.eval_count and reply.eval_count > 0
    assert reply.prompt_eval_count and reply.prompt_eval_count > 0
    for field in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(getattr(reply, field), int)
    assert reply.load_duration > 0  # this request waited for the load
    warm = await client(running).chat(
        "tiny", messages=[{"role": "user", "content": "hello"}], options={"num_predict": 2})
    assert warm.load_duration == 0  # present, and zero when the model was warm


async def test_chat_streams_ndjson(running) -> None:
    status, body, ctype = await raw(running, "POST", "/api/chat", {
        "model": "tiny", "messages": [{"role": "user", "content": "hi"}],
        "options": {"num_predict": 6}})
    assert status == 200 and ctype.startswith("application/x-ndjson")
    async with aiohttp.ClientSession() as http, http.post(
        running.base_url + "/api/generate",
        json={"model": "tiny", "prompt": "hi", "options": {"num_predict": 2}},
    ) as resp:
        # Reverse proxies (nginx) buffer a response whole unless told not to.
        assert resp.headers.get("X-Accel-Buffering") == "no"
        await resp.read()
    lines = [json.loads(line) for line in body.splitlines()]
    assert len(lines) > 2
    assert all(not line["done"] for line in lines[:-1])
    assert lines[-1]["done"] and "eval_duration" in lines[-1]
    assert "created_at" in lines[0] and lines[0]["created_at"].endswith("Z")
    chunks = [c async for c in await client(running).chat(
        "tiny", messages=[{"role": "user", "content": "hi"}], stream=True,
        options={"num_predict": 6})]
    assert chunks[-1].done and "".join(c.message.content or "" for c in chunks)


async def test_generate_stream_and_not(running) -> None:
    reply = await client(running).generate("tiny", "the", options={"num_predict": 4})
    assert reply.done and reply.response
    parts = [p async for p in await client(running).generate(
        "tiny", "the", stream=True, options={"num_predict": 4}, system="be brief")]
    assert parts[-1].done and parts[-1].eval_count
    raw_reply = await client(running).generate("tiny", "the", raw=True,
                                               options={"num_predict": 4})
    assert raw_reply.done


async def test_structured_output_and_tools(running) -> None:
    reply = await client(running).chat(
        "tiny", messages=[{"role": "user", "content": "give json"}], format="json",
        options={"num_predict": 24, "temperature": 0})
    assert reply.done
    tool = {"type": "function", "function": {
        "name": "get_time", "description": "current time",
        "parameters": {"type": "object", "properties": {}}}}
    reply = await client(running).chat(
        "tiny", messages=[{"role": "user", "content": "time?"}], tools=[tool],
        options={"num_predict": 8})
    assert reply.done


async def test_tools_refused_for_a_model_without_tool_support(
    write_config, start_service, llama_server_bin, tmp_path
) -> None:
    from tests.support.tiny_gguf import write_tiny_gguf

    plain = write_tiny_gguf(tmp_path / "plain.gguf", chat_template=(
        "{% for m in messages %}{{ m['content'] }}{% endfor %}"))
    config = write_config({"plain": {"path": str(plain), "args": ARGS}},
                          runtime=llama_server_bin,
                          proxies={"ollama": {"enabled": True, "port": 0},
                                   "lmstudio": {"enabled": False, "port": 0}})
    running = await start_service(config, api="ollama")
    status, body, _ = await raw(running, "POST", "/api/chat", {
        "model": "plain", "messages": [{"role": "user", "content": "x"}], "stream": False,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]})
    assert status == 400
    assert json.loads(body) == {"error": '"plain" does not support tools'}


async def test_embed_and_legacy_embeddings(running) -> None:
    result = await client(running).embed("embedder", input=["hello", "the"])
    assert len(result.embeddings) == 2 and len(result.embeddings[0]) == 64
    norm = sum(x * x for x in result.embeddings[0]) ** 0.5
    assert abs(norm - 1) < 1e-3  # Ollama normalises /api/embed vectors
    short = await client(running).embed("embedder", input="hello", dimensions=16)
    assert len(short.embeddings[0]) == 16
    legacy = await client(running).embeddings("embedder", prompt="hello")
    assert len(legacy.embedding) == 64
    status, body, _ = await raw(running, "POST", "/api/embed",
                                {"model": "tiny", "input": "x"})
    assert status == 400 and "does not support embeddings" in json.loads(body)["error"]


async def test_keep_alive_semantics_through_ps(running) -> None:
    c = client(running)
    loaded = await c.generate("tiny", "", keep_alive=-1)  # load only
    assert loaded.done_reason == "load"
    ps = await c.ps()
    assert [m.model for m in ps.models] == ["tiny:latest"]
    assert ps.models[0].expires_at.year > 2200  # kept forever
    assert ps.models[0].context_length == 512
    pid = running.service.manager.runner("tiny").pid

    await c.generate("tiny", "the", keep_alive="2s", options={"num_predict": 2})
    ps = await c.ps()
    remaining = (ps.models[0].expires_at.timestamp() - asyncio.get_running_loop().time())
    assert remaining  # an absolute time; checked loosely below through the state
    for _ in range(60):
        if running.service.manager.runner("tiny").state.value == "stopped":
            break
        await asyncio.sleep(0.1)
    assert running.service.manager.runner("tiny").state.value == "stopped"
    assert not psutil.pid_exists(pid)

    await c.chat("tiny", messages=[{"role": "user", "content": "a"}], keep_alive=0,
                 options={"num_predict": 2})
    for _ in range(40):
        if running.service.manager.runner("tiny").state.value == "stopped":
            break
        await asyncio.sleep(0.05)
    assert (await c.ps()).models == []

    await c.generate("tiny", "", keep_alive="5m")
    assert [m.model for m in (await c.ps()).models] == ["tiny:latest"]
    unloaded = await c.generate("tiny", "", keep_alive=0)  # unload only
    assert unloaded.done_reason == "unload"
    assert (await c.ps()).models == []


async def test_num_ctx_restarts_the_runner_with_that_context(running) -> None:
    c = client(running)
    await c.generate("tiny", "the", options={"num_predict": 2})
    first = running.service.manager.runner("tiny").pid
    await c.generate("tiny", "the", options={"num_predict": 2, "num_ctx": 1024})
    runner = running.service.manager.runner("tiny")
    assert runner.pid != first
    assert "1024" in runner.describe_argv()
    ps = await c.ps()
    assert ps.models[0].context_length == 1024


async def test_copy_and_delete(running, tmp_path: Path) -> None:
    c = client(running)
    await c.copy("tiny", "tiny-copy:v2")
    names = sorted(m.model for m in (await c.list()).models)
    assert "tiny-copy:v2" in names
    config = json.loads(running.service.store.path.read_text())
    assert "tiny-copy:v2" in config["models"]
    await c.delete("tiny-copy:v2")
    assert "tiny-copy:v2" not in [m.model for m in (await c.list()).models]
    with pytest.raises(ollama.ResponseError) as missing:
        await c.copy("nope", "x")
    assert missing.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as missing:
        await c.delete("nope")
    assert missing.value.status_code == 404


async def test_errors_in_ollama_shape(running) -> None:
    status, body, _ = await raw(running, "POST", "/api/chat", {"model": "nope",
                                                               "messages": []})
    assert status == 404 and json.loads(body) == {"error": "model 'nope' not found"}
    async with aiohttp.ClientSession() as http, http.post(
            running.base_url + "/api/generate", data=b"{oops") as resp:
        assert resp.status == 400
        assert set(await resp.json()) == {"error"}
    with pytest.raises(ollama.ResponseError) as err:
        await client(running).chat("nope", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 404


async def test_openai_routes_on_the_ollama_port(running) -> None:
    status, body, _ = await raw(running, "GET", "/v1/models")
    assert status == 200 and {m["id"] for m in json.loads(body)["data"]} == {
        "tiny:latest", "embedder:latest"}  # named as Ollama's own /v1/models names them
    status, body, ctype = await raw(running, "POST", "/v1/chat/completions", {
        "model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
        "stream": True})
    assert status == 200 and ctype.startswith("text/event-stream")
    assert body.rstrip().endswith(b"data: [DONE]")
    status, body, _ = await raw(running, "POST", "/v1/chat/completions", {"model": "nope"})
    assert status == 404 and json.loads(body)["error"]["code"] == "model_not_found"


async def test_delete_removes_only_files_the_app_owns(
    write_config, start_service, llama_server_bin, tiny_model, tmp_path: Path
) -> None:
    own = tmp_path / "data" / "models"  # the app's models folder in tests
    own.mkdir(parents=True)
    (own / "mine.gguf").write_bytes(tiny_model.read_bytes())
    users = tmp_path / "my-models"
    users.mkdir()
    (users / "theirs.gguf").write_bytes(tiny_model.read_bytes())
    config = write_config({}, runtime=llama_server_bin, model_dirs=[str(own), str(users)],
                          proxies={"ollama": {"enabled": True, "port": 0},
                                   "lmstudio": {"enabled": False, "port": 0}})
    running = await start_service(config, api="ollama")
    c = client(running)
    assert sorted(m.model for m in (await c.list()).models) == ["mine:latest",
                                                                "theirs:latest"]
    with pytest.raises(ollama.ResponseError) as refused:
        await c.delete("theirs")
    assert refused.value.status_code == 403
    assert str(users) not in str(refused.value)  # no file system paths in errors
    assert (users / "theirs.gguf").exists()
    await c.delete("mine")
    assert not (own / "mine.gguf").exists()
    assert [m.model for m in (await c.list()).models] == ["theirs:latest"]
