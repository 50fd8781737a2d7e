"""Status codes of the reference's table that no other test produces, each for real."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from tests.support.both_listeners import MODEL_ARGS, url_of

HI = [{"role": "user", "content": "hi"}]


async def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.post(url, json=body) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_embeddings_of_a_chat_model_is_400_not_supported(
        write_config, start_service, llama_server_bin, tiny_model) -> None:  # type: ignore[no-untyped-def]
    running = await start_service(write_config(
        {"tiny": {"path": str(tiny_model), "args": MODEL_ARGS}}, runtime=llama_server_bin))
    status, body = await post(running.base_url + "/v1/embeddings",
                              {"model": "tiny", "input": "x"})
    assert (status, body["error"]["code"]) == (400, "not_supported")


async def test_a_missing_model_file_is_503_model_file_not_found(
        write_config, start_service, llama_server_bin, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    running = await start_service(write_config(
        {"gone": {"path": str(tmp_path / "gone.gguf")}}, runtime=llama_server_bin))
    status, body = await post(running.base_url + "/v1/chat/completions",
                              {"model": "gone", "messages": HI})
    assert (status, body["error"]["code"]) == (503, "model_file_not_found")


async def test_a_runner_that_breaks_off_before_answering_is_502_upstream_error(
        write_config, start_service, fake_bin) -> None:  # type: ignore[no-untyped-def]
    running = await start_service(write_config(
        {"m": {"path": str(fake_bin), "args": {"fault-crash-mid-stream": 0}}},
        runtime=fake_bin))
    status, body = await post(running.base_url + "/v1/chat/completions",
                              {"model": "m", "messages": HI, "stream": True})
    assert (status, body["error"]["code"]) == (502, "upstream_error")


async def test_a_request_while_the_app_stops_is_503_shutting_down(
        write_config, start_service, llama_server_bin, tiny_model) -> None:  # type: ignore[no-untyped-def]
    running = await start_service(write_config(
        {"tiny": {"path": str(tiny_model), "args": MODEL_ARGS}}, runtime=llama_server_bin,
        proxies={"ollama": {"enabled": True, "host": "127.0.0.1", "port": 0},
                 "lmstudio": {"enabled": True, "host": "127.0.0.1", "port": 0}}))
    await running.service.manager.shutdown()  # what Service.stop() does after the listeners
    status, body = await post(running.base_url + "/v1/chat/completions",
                              {"model": "tiny", "messages": HI})
    assert (status, body["error"]["code"]) == (503, "shutting_down")
    status, body = await post(url_of(running, "ollama") + "/api/chat",
                              {"model": "tiny", "messages": HI})
    assert status == 503 and isinstance(body["error"], str)
