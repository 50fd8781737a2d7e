"""Ollama's logprobs, context, template and embed truncation on a real llama-server."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import aiohttp
import ollama
import pytest
from tests.support.tiny_gguf import write_tiny_gguf

ARGS = {"ctx-size": 512, "threads": 1, "jinja": True}
OLLAMA_ONLY = {"ollama": {"enabled": True, "host": "127.0.0.1", "port": 0},
               "lmstudio": {"enabled": False, "port": 0}}
# Greedy decoding: the same prompt gives the same tokens, whichever route sent it.
GREEDY = {"temperature": 0, "seed": 1, "num_predict": 6}


@pytest.fixture
async def running(write_config, start_service, llama_server_bin, tiny_model, tiny_model_b,
                  tmp_path: Path):
    base = write_tiny_gguf(tmp_path / "base.gguf", name="base", chat_template=None)
    config = write_config(
        {
            "tiny": {"path": str(tiny_model), "args": ARGS},
            "base": {"path": str(base), "args": ARGS},
            # A small context makes an input too long for it easy to write.
            "embedder": {"path": str(tiny_model_b),
                         "args": {"ctx-size": 64, "threads": 1, "embedding": True,
                                  "pooling": "mean"}},
        },
        runtime=llama_server_bin, proxies=OLLAMA_ONLY,
    )
    return await start_service(config, api="ollama")


def client(running: Any) -> ollama.AsyncClient:
    return ollama.AsyncClient(host=running.base_url)


async def post(running: Any, path: str, body: object) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(running.base_url + path,
                                                          json=body) as resp:
        text = await resp.text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    return resp.status, lines[0] if len(lines) == 1 else lines


def check_logprobs(logprobs: Any, top: int) -> None:
    assert logprobs, "no log probabilities in the answer"
    for entry in logprobs:
        assert isinstance(entry.token, str) and entry.logprob <= 0
        if top:
            assert len(entry.top_logprobs) == top
            assert all(alt.logprob <= 0 for alt in entry.top_logprobs)
        else:
            assert not entry.top_logprobs


# --- logprobs ----------------------------------------------------------------------------


async def test_chat_logprobs_streamed_and_not(running) -> None:
    messages = [{"role": "user", "content": "hello"}]
    reply = await client(running).chat("tiny", messages=messages, logprobs=True,
                                       top_logprobs=3, options=GREEDY)
    check_logprobs(reply.logprobs, 3)
    assert "".join(e.token for e in reply.logprobs) == reply.message.content

    chunks = [c async for c in await client(running).chat(
        "tiny", messages=messages, logprobs=True, top_logprobs=2, options=GREEDY, stream=True)]
    streamed = [e for c in chunks for e in (c.logprobs or [])]
    check_logprobs(streamed, 2)
    assert [e.token for e in streamed] == [e.token for e in reply.logprobs]

    plain = await client(running).chat("tiny", messages=messages, options=GREEDY)
    assert plain.logprobs is None


async def test_generate_logprobs_from_chat_and_native_routes(running) -> None:
    reply = await client(running).generate("tiny", "hello", logprobs=True, options=GREEDY)
    check_logprobs(reply.logprobs, 0)  # top_logprobs 0: only the chosen tokens

    raw = await client(running).generate("tiny", "the cat", raw=True, logprobs=True,
                                         top_logprobs=4, options=GREEDY)
    check_logprobs(raw.logprobs, 4)
    assert "".join(e.token for e in raw.logprobs) == raw.response

    chunks = [c async for c in await client(running).generate(
        "tiny", "the cat", raw=True, logprobs=True, top_logprobs=1, options=GREEDY,
        stream=True)]
    streamed = [e for c in chunks for e in (c.logprobs or [])]
    check_logprobs(streamed, 1)
    assert [e.token for e in streamed] == [e.token for e in raw.logprobs]


@pytest.mark.parametrize("top", [21, -1])
async def test_top_logprobs_out_of_range_is_ollamas_400(running, top: int) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        await client(running).chat("tiny", messages=[{"role": "user", "content": "hi"}],
                                   logprobs=True, top_logprobs=top)
    assert info.value.status_code == 400
    assert info.value.error == "top_logprobs must be between 0 and 20"
    status, body = await post(running, "/api/generate",
                              {"model": "tiny", "prompt": "hi", "top_logprobs": top})
    assert status == 400 and body == {"error": "top_logprobs must be between 0 and 20"}


# --- context -----------------------------------------------------------------------------


async def test_generate_returns_context_and_continues_from_it(running) -> None:
    first = await client(running).generate("tiny", "hello", options=GREEDY)
    assert first.context and all(isinstance(t, int) for t in first.context)

    second = await client(running).generate("tiny", "the cat", context=first.context,
                                            options=GREEDY)
    assert second.context[:len(first.context)] == first.context
    assert len(second.context) > len(first.context)
    # The whole history was evaluated (or found in the runner's cache).
    assert second.prompt_eval_count > len(first.context)

    chunks = [c async for c in await client(running).generate(
        "tiny", "the cat", context=first.context, options=GREEDY, stream=True)]
    assert all(c.context is None for c in chunks[:-1])
    assert chunks[-1].done and chunks[-1].context == second.context

    raw = await client(running).generate("tiny", "hello", raw=True, options=GREEDY)
    assert raw.context is None  # raw mode gives no context, as in Ollama
    status, body = await post(running, "/api/generate", {
        "model": "tiny", "prompt": "x", "raw": True, "context": first.context})
    assert status == 400
    assert body == {"error": "raw mode does not support template, system, or context"}


async def test_context_carries_a_fact_into_the_next_turn(
        write_config, start_service, llama_server_bin, smollm2_model) -> None:
    config = write_config({"smollm2": {"path": str(smollm2_model),
                                       "args": {"ctx-size": 2048, "jinja": True}}},
                          runtime=llama_server_bin, proxies=OLLAMA_ONLY)
    running = await start_service(config, api="ollama")
    options = {"temperature": 0, "seed": 1, "num_predict": 40}
    first = await client(running).generate(
        "smollm2", "My name is Zorblax. Remember my name.", options=options)
    assert first.context
    second = await client(running).generate("smollm2", "What is my name?",
                                            context=first.context, options=options)
    assert "zorblax" in second.response.lower()
    without = await client(running).generate("smollm2", "What is my name?", options=options)
    assert "zorblax" not in without.response.lower()


# --- template ----------------------------------------------------------------------------


TEMPLATE = ("{{ if .System }}[{{ .System }}] {{ end }}"
            "{{ range .Messages }}{{ if eq .Role \"user\" }}Q: {{ .Content }}{{ end }}"
            "{{ end }} A:")


async def test_generate_template_is_rendered_and_sent_as_it_is(running) -> None:
    templated = await client(running).generate(
        "tiny", "the cat", system="be brief", template=TEMPLATE, options=GREEDY)
    raw = await client(running).generate("tiny", "[be brief] Q: the cat A:", raw=True,
                                         options=GREEDY)
    assert templated.response == raw.response
    assert templated.prompt_eval_count == raw.prompt_eval_count
    # A template that only knows .Prompt works too (Ollama appends {{ .Response }}).
    old_style = await client(running).generate("tiny", "the cat",
                                               template="Q: {{ .Prompt }} A:", options=GREEDY)
    plain = await client(running).generate("tiny", "Q: the cat A:", raw=True, options=GREEDY)
    assert old_style.response == plain.response


async def test_chat_template_is_rendered_and_skips_the_chat_check(running) -> None:
    template = ("{{ range .Messages }}{{ .Role }}: {{ .Content }}\n{{ end }}assistant:")
    messages = [{"role": "user", "content": "the cat"},
                {"role": "assistant", "content": "a dog"},
                {"role": "user", "content": "hello"}]
    status, reply = await post(running, "/api/chat", {
        "model": "base", "messages": messages, "template": template, "stream": False,
        "options": GREEDY})
    assert status == 200, reply
    raw = await client(running).generate(
        "base", "user: the cat\nassistant: a dog\nuser: hello\nassistant:", raw=True,
        options=GREEDY)
    assert reply["message"] == {"role": "assistant", "content": raw.response}
    assert reply["done"] is True
    status, lines = await post(running, "/api/chat", {
        "model": "base", "messages": messages, "template": template, "options": GREEDY})
    assert status == 200 and lines[-1]["done"] is True
    assert "".join(line["message"]["content"] for line in lines) == raw.response


async def test_a_template_the_renderer_cannot_handle_is_a_400_naming_it(running) -> None:
    status, body = await post(running, "/api/generate", {
        "model": "tiny", "prompt": "x", "template": '{{ define "t" }}x{{ end }}'})
    assert status == 400 and "define" in body["error"]
    status, body = await post(running, "/api/chat", {
        "model": "tiny", "messages": [{"role": "user", "content": "x"}],
        "template": "{{ .Prompt | upper }}"})
    assert status == 400 and '"upper"' in body["error"]


# --- models without a chat template ------------------------------------------------------


async def test_a_model_that_cannot_chat_refuses_chat_but_generates_plain_text(running) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        await client(running).chat("base", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 400
    assert "cannot chat" in info.value.error
    assert all(i.state == "stopped" for i in running.service.manager.snapshot())

    reply = await client(running).generate("base", "the cat", system="be brief",
                                           options=GREEDY)
    raw = await client(running).generate("base", "be brief\n\nthe cat", raw=True,
                                         options=GREEDY)
    assert reply.response == raw.response and reply.done
    assert reply.context


# --- embed truncate ----------------------------------------------------------------------


async def test_embed_truncates_long_input_unless_told_not_to(running) -> None:
    long_text = "hello world " * 100  # far beyond the 64-token context
    cut = await client(running).embed("embedder", input=["the cat", long_text])
    assert len(cut.embeddings) == 2
    for vector in cut.embeddings:
        assert len(vector) == 64
        assert math.isclose(math.fsum(x * x for x in vector), 1.0, rel_tol=1e-4)
    assert cut.embeddings[0] == (await client(running).embed("embedder", "the cat")
                                 ).embeddings[0]

    with pytest.raises(ollama.ResponseError) as info:
        await client(running).embed("embedder", input=long_text, truncate=False)
    assert info.value.status_code == 400
    assert info.value.error == "the input length exceeds the context length"

    short = await client(running).embed("embedder", input="the cat", truncate=False,
                                        dimensions=16)
    assert len(short.embeddings[0]) == 16
    assert math.isclose(math.fsum(x * x for x in short.embeddings[0]), 1.0, rel_tol=1e-4)
