"""Every model chats with the right turns, or says clearly that it cannot: real models.

SmolLM2 carries its own template; Gemma 3 270M (a base model) has none and gets the
Gemma family's; a tiny model without template or known family cannot chat at all, but
completes text. Checked with the official `ollama`, `openai` clients and raw HTTP.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import ollama
import openai
import pytest
from tests.support.tiny_gguf import write_tiny_gguf

from llamarunner.library.chat_template import template_file

ARGS = {"ctx-size": 1024, "threads": 2}
COLORS = ("red", "blue", "green", "yellow", "orange", "purple", "black", "white", "pink")
# Turn markers of other families: none may leak into an answer.
FOREIGN_TOKENS = ("<|im_start|>", "<|im_end|>", "<start_of_turn>", "<|eot_id|>",
                  "<|start_header_id|>", "[INST]")


@pytest.fixture
async def running(write_config, start_service, llama_server_bin, smollm2_model, gemma3_model,
                  plain_model: Path, tmp_path: Path):
    plain = plain_model
    embedder = write_tiny_gguf(tmp_path / "embedder.gguf", name="embedder",
                               architecture_extras={"llama.pooling_type": 1})
    config = write_config(
        {
            "smollm2-135m-instruct": {"path": str(smollm2_model), "args": ARGS},
            "gemma-3-270m": {"path": str(gemma3_model), "args": ARGS},
            "plain": {"path": str(plain), "args": {"ctx-size": 256, "threads": 1}},
            "plain-zephyr": {"path": str(plain), "args": {"ctx-size": 256, "threads": 1},
                             "chat_template": "zephyr"},
            "embedder": {"path": str(embedder), "args": {"ctx-size": 256, "threads": 1}},
        },
        runtime=llama_server_bin,
        scheduler={"max_loaded_models": 2, "load_timeout": "60s"},
        proxies={"ollama": {"enabled": True, "host": "127.0.0.1", "port": 0},
                 "lmstudio": {"enabled": True, "host": "127.0.0.1", "port": 0}},
    )
    return await start_service(config, api="ollama")


def ollama_client(running) -> ollama.AsyncClient:
    return ollama.AsyncClient(host=running.base_url)


def openai_client(running) -> openai.AsyncOpenAI:
    port = running.service.listeners.bound_port("lmstudio")
    return openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")


async def rendered_prompt(running, model: str, messages: list[dict[str, str]]) -> str:
    """What the model's llama-server really sends to the model (its /apply-template)."""
    lease = await running.service.manager.acquire(model)
    try:
        async with aiohttp.ClientSession() as http, http.post(
            lease.base_url + "/apply-template", headers=lease.headers,
            json={"messages": messages},
        ) as resp:
            assert resp.status == 200
            prompt: str = (await resp.json())["prompt"]
            return prompt
    finally:
        lease.release()


async def test_the_instruct_demo_names_three_colors(running) -> None:
    reply = await ollama_client(running).chat(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "Name three colors."}],
        options={"temperature": 0, "num_predict": 48},
    )
    text = reply.message.content or ""
    assert sum(color in text.lower() for color in COLORS) >= 2, text
    assert not any(token in text for token in FOREIGN_TOKENS), text


async def test_the_instruct_demo_streams_through_the_openai_sdk(running) -> None:
    stream = await openai_client(running).chat.completions.create(
        model="smollm2-135m-instruct", stream=True, temperature=0, max_tokens=48,
        messages=[{"role": "user", "content": "Name three colors."}],
    )
    pieces = [chunk.choices[0].delta.content or "" async for chunk in stream
              if chunk.choices]
    text = "".join(pieces)
    assert len([p for p in pieces if p]) > 3
    assert any(color in text.lower() for color in COLORS), text


async def test_tools_through_the_openai_api_and_a_clear_refusal_on_ollamas(running) -> None:
    weather = {"type": "function", "function": {
        "name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}
    reply = await openai_client(running).chat.completions.create(
        model="smollm2-135m-instruct", temperature=0, max_tokens=64, tools=[weather],
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
    )
    message = reply.choices[0].message
    assert message.content or message.tool_calls
    # SmolLM2's own template has no tool turns: Ollama refuses such a request up front.
    with pytest.raises(ollama.ResponseError) as info:
        await ollama_client(running).chat(
            model="smollm2-135m-instruct", tools=[weather],
            messages=[{"role": "user", "content": "What is the weather in Paris?"}])
    assert info.value.status_code == 400
    assert "does not support tools" in str(info.value)


async def test_a_base_model_gets_its_familys_turns(running) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    prompt = await rendered_prompt(running, "gemma-3-270m", messages)
    assert prompt == ("<start_of_turn>user\nBe brief.\n\nhi<end_of_turn>\n"
                      "<start_of_turn>model\n")
    shown = await ollama_client(running).show("gemma-3-270m")
    assert shown.template == template_file("gemma").read_text()
    reply = await ollama_client(running).chat(
        model="gemma-3-270m", messages=[{"role": "user", "content": "Name three colors."}],
        options={"temperature": 0, "num_predict": 32})
    assert not any(token in (reply.message.content or "") for token in FOREIGN_TOKENS[:2])


async def test_a_model_that_cannot_chat_gets_a_clear_400_in_each_api(running) -> None:
    with pytest.raises(ollama.ResponseError) as ollama_info:
        await ollama_client(running).chat(
            model="plain", messages=[{"role": "user", "content": "hi"}])
    assert ollama_info.value.status_code == 400
    assert "plain" in str(ollama_info.value) and "chat_template" in str(ollama_info.value)
    with pytest.raises(openai.BadRequestError) as openai_info:
        await openai_client(running).chat.completions.create(
            model="plain", messages=[{"role": "user", "content": "hi"}])
    assert "chat_template" in str(openai_info.value)
    # Text completion needs no template.
    generated = await ollama_client(running).generate(
        model="plain", prompt="hello", options={"num_predict": 4})
    assert generated.done
    completion = await openai_client(running).completions.create(
        model="plain", prompt="hello", max_tokens=4)
    assert completion.choices[0].text is not None
    shown = await ollama_client(running).show("plain")
    assert shown.template == ""
    assert "tools" not in (shown.capabilities or [])


async def test_a_builtin_template_setting_makes_it_chat(running) -> None:
    prompt = await rendered_prompt(running, "plain-zephyr", [{"role": "user", "content": "hi"}])
    assert prompt.startswith("<|user|>\nhi")
    reply = await ollama_client(running).chat(
        model="plain-zephyr", messages=[{"role": "user", "content": "hi"}],
        options={"num_predict": 4})
    assert reply.done
    shown = await ollama_client(running).show("plain-zephyr")
    assert shown.template == "zephyr"


async def test_an_embedding_model_embeds_without_any_setting(running) -> None:
    shown = await ollama_client(running).show("embedder")
    assert "embedding" in (shown.capabilities or [])
    embedded = await ollama_client(running).embed(model="embedder", input=["hello", "world"])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) == 64
    vectors = await openai_client(running).embeddings.create(model="embedder", input="hello")
    assert len(vectors.data[0].embedding) == 64
    with pytest.raises(ollama.ResponseError) as info:
        await ollama_client(running).chat(
            model="embedder", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 400 and "embedding" in str(info.value)
