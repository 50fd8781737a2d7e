"""`GET /metrics` on both ports, after real clients talk to a real llama-server."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import aiohttp
import anthropic
import ollama
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.support.both_listeners import BOTH_PORTS, HELLO, both_ports, models, url_of

from llamarunner.core.events import Event, RunnerStateChanged

KEY = "metrics-test-key-0123456789"
STATES = ("stopped", "starting", "ready", "stopping", "failed")


class Samples:
    """One scrape: every sample's value by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {family.name: family
                         for family in text_string_to_metric_families(text)}
        self.values = {(sample.name, frozenset(sample.labels.items())): sample.value
                       for family in self.families.values() for sample in family.samples}

    def get(self, name: str, **labels: str) -> float:
        return self.values.get((name, frozenset(labels.items())), 0.0)

    def requests(self, api: str, route: str, model: str, status: int = 200) -> float:
        return self.get("llamarunner_requests_total", api=api, route=route, model=model,
                        status=str(status))

    def durations(self, api: str, route: str, model: str) -> float:
        return self.get("llamarunner_request_duration_seconds_count", api=api, route=route,
                        model=model)

    def tokens(self, model: str, kind: str) -> float:
        return self.get("llamarunner_tokens_total", model=model, kind=kind)

    def first_tokens(self, model: str) -> float:
        return self.get("llamarunner_time_to_first_token_seconds_count", model=model)

    def state_of(self, model: str) -> str:
        current = [state for state in STATES
                   if self.get("llamarunner_runner_state", model=model, state=state) == 1]
        assert len(current) == 1, current
        return current[0]


async def scrape(running: Any, api: str = "lmstudio") -> Samples:
    async with aiohttp.ClientSession() as http, http.get(
            url_of(running, api) + "/metrics") as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/plain"
        return Samples(await resp.text())


@pytest.fixture
def running(two_api_service):  # type: ignore[no-untyped-def]
    return two_api_service


def openai_client(running: Any, api: str = "lmstudio", path: str = "/v1"
                  ) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url_of(running, api) + path, api_key="unused",
                              max_retries=0)


# --- requests --------------------------------------------------------------------------


@BOTH_PORTS
async def test_openai_chat_counts_with_its_tokens(running, api: str) -> None:
    route = "/v1/chat/completions"
    reply = await openai_client(running, api).chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=8)
    after = await scrape(running, api)
    assert after.requests("openai", route, "tiny") == 1
    assert after.durations("openai", route, "tiny") == 1
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    assert after.tokens("tiny", "prompt") == reply.usage.prompt_tokens > 0
    assert after.tokens("tiny", "generated") == reply.usage.completion_tokens
    assert after.first_tokens("tiny") == 0  # not a stream


async def test_a_streamed_chat_counts_its_time_to_first_token(running) -> None:
    route = "/v1/chat/completions"
    before = await scrape(running)
    stream = await openai_client(running).chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=8, stream=True,
        stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 0
    after = await scrape(running)
    assert after.requests("openai", route, "tiny") == before.requests("openai", route,
                                                                      "tiny") + 1
    assert after.first_tokens("tiny") == before.first_tokens("tiny") + 1
    assert after.get("llamarunner_time_to_first_token_seconds_sum", model="tiny") > 0
    assert after.tokens("tiny", "prompt") - before.tokens("tiny", "prompt") \
        == usage.prompt_tokens
    assert after.tokens("tiny", "generated") - before.tokens("tiny", "generated") \
        == usage.completion_tokens


async def test_ollama_chat_counts_as_ollama_with_its_tokens(running) -> None:
    reply = await ollama.AsyncClient(host=url_of(running, "ollama")).chat(
        model="tiny", messages=HELLO, options={"num_predict": 8})
    after = await scrape(running, "ollama")
    assert after.requests("ollama", "/api/chat", "tiny") == 1
    assert after.durations("ollama", "/api/chat", "tiny") == 1
    assert reply.eval_count and reply.prompt_eval_count
    assert after.tokens("tiny", "prompt") == reply.prompt_eval_count
    assert after.tokens("tiny", "generated") == reply.eval_count


@BOTH_PORTS
async def test_anthropic_messages_count_as_anthropic(running, api: str) -> None:
    client = anthropic.AsyncAnthropic(base_url=url_of(running, api), api_key="unused",
                                      max_retries=0)
    reply = await client.messages.create(model="tiny", max_tokens=8,
                                         messages=HELLO)
    after = await scrape(running, api)
    assert after.requests("anthropic", "/v1/messages", "tiny") == 1
    assert reply.usage.output_tokens > 0
    assert after.tokens("tiny", "prompt") == reply.usage.input_tokens > 0
    assert after.tokens("tiny", "generated") == reply.usage.output_tokens


async def test_lmstudio_chat_counts_as_lmstudio(running) -> None:
    reply = await openai_client(running, path="/api/v0").chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=8)
    after = await scrape(running)
    assert after.requests("lmstudio", "/api/v0/chat/completions", "tiny") == 1
    assert after.requests("openai", "/v1/chat/completions", "tiny") == 0
    assert reply.usage is not None
    assert after.tokens("tiny", "prompt") == reply.usage.prompt_tokens > 0
    assert after.tokens("tiny", "generated") == reply.usage.completion_tokens > 0


async def test_an_unknown_model_counts_without_the_name_the_client_sent(running) -> None:
    with pytest.raises(openai.NotFoundError):
        await openai_client(running).chat.completions.create(
            model="made-up-model-4711", messages=HELLO)
    after = await scrape(running)
    assert after.requests("openai", "/v1/chat/completions", "", 404) == 1
    assert "made-up-model-4711" not in after.text


@BOTH_PORTS
async def test_an_unknown_path_counts_as_unmatched(running, api: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(
            url_of(running, api) + "/no/such/path-4711") as resp:
        assert resp.status == 404
    after = await scrape(running, api)
    assert after.requests(api, "unmatched", "", 404) == 1
    assert "path-4711" not in after.text


async def test_scrapes_count_too_and_both_ports_serve_the_same_registry(running) -> None:
    await scrape(running, "ollama")
    after = await scrape(running, "lmstudio")
    assert after.requests("ollama", "/metrics", "") == 1
    assert after.requests("lmstudio", "/metrics", "") == 0  # counted once it is answered
    assert (await scrape(running, "ollama")).requests("lmstudio", "/metrics", "") == 1


async def test_process_metrics_are_present(running) -> None:
    after = await scrape(running)
    assert "python_info" in after.families
    assert after.get("process_resident_memory_bytes") > 0
    assert after.get("process_start_time_seconds") > 0


# --- runners ---------------------------------------------------------------------------


async def test_runner_gauges_and_starts_follow_load_and_unload(running) -> None:
    service = running.service
    first = await scrape(running)
    assert first.get("llamarunner_models_loaded") == 0
    assert first.state_of("tiny") == "stopped" and first.state_of("plain") == "stopped"
    assert first.get("llamarunner_queue_depth", model="tiny") == 0
    assert first.get("llamarunner_runner_starts_total", model="tiny") == 0
    assert ("llamarunner_runner_starts_total", frozenset({("model", "tiny")})) \
        in first.values  # at 0 before the first start: rate() sees it

    # Queued while its model starts: read in the same loop step, before the load ends.
    waiting = asyncio.ensure_future(service.manager.acquire("tiny"))
    await asyncio.sleep(0)
    during = Samples(service.metrics.render().decode())
    assert during.get("llamarunner_queue_depth", model="tiny") == 1
    assert during.state_of("tiny") == "starting"
    (await waiting).release()

    loaded = await scrape(running)
    assert loaded.get("llamarunner_models_loaded") == 1
    assert loaded.state_of("tiny") == "ready" and loaded.state_of("plain") == "stopped"
    assert loaded.get("llamarunner_queue_depth", model="tiny") == 0
    assert loaded.get("llamarunner_runner_starts_total", model="tiny") == 1

    await service.manager.unload("tiny")
    unloaded = await scrape(running)
    assert unloaded.get("llamarunner_models_loaded") == 0
    assert unloaded.state_of("tiny") == "stopped"

    await openai_client(running).chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=4)
    again = await scrape(running)
    assert again.get("llamarunner_runner_starts_total", model="tiny") == 2
    assert again.get("llamarunner_runner_crashes_total", model="tiny") == 0


async def test_a_killed_runner_counts_as_a_crash(running) -> None:
    service = running.service
    await openai_client(running).chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=4)
    failed = asyncio.get_running_loop().create_future()

    def on_event(event: Event) -> None:
        if (isinstance(event, RunnerStateChanged) and event.state == "failed"
                and not failed.done()):
            failed.set_result(event.reason)

    unsubscribe = service.events.subscribe(on_event)
    try:
        pid = service.manager.runner("tiny").pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert "exited with code" in await asyncio.wait_for(failed, 30)
    finally:
        unsubscribe()
    after = await scrape(running)
    assert after.get("llamarunner_runner_crashes_total", model="tiny") == 1
    assert after.get("llamarunner_runner_failed_starts_total", model="tiny") == 0
    assert after.state_of("tiny") == "failed"
    assert after.get("llamarunner_models_loaded") == 0

    await openai_client(running).chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=4)
    again = await scrape(running)
    assert again.get("llamarunner_runner_starts_total", model="tiny") == 2
    assert again.get("llamarunner_runner_crashes_total", model="tiny") == 1
    assert again.state_of("tiny") == "ready"


# --- access ----------------------------------------------------------------------------


async def test_metrics_need_the_key_when_one_is_configured(
    write_config, start_service, llama_server_bin, tiny_model, plain_model
) -> None:
    config = write_config(models(tiny_model, plain_model), runtime=llama_server_bin,
                          proxies=both_ports(), security={"api_key": KEY})
    running = await start_service(config)
    async with aiohttp.ClientSession() as http:
        for api in ("lmstudio", "ollama"):
            url = url_of(running, api) + "/metrics"
            async with http.get(url) as resp:
                assert resp.status == 401
                assert "llamarunner_" not in await resp.text()
            async with http.get(url, headers={"Authorization": f"Bearer {KEY}"}) as resp:
                assert resp.status == 200
                text = await resp.text()
            samples = Samples(text)
            assert samples.requests(api, "/metrics", "", 401) == 1
            assert KEY not in text


async def test_requests_a_rate_limit_refuses_count_by_key_name(
    write_config, start_service, llama_server_bin, tiny_model, plain_model
) -> None:
    limited, admin = "limited-key-0123456789abcdef", "admin-key-0123456789abcdef"
    config = write_config(models(tiny_model, plain_model), runtime=llama_server_bin,
                          proxies=both_ports(), security={"api_keys": [
                              {"name": "ci", "key": limited, "requests_per_minute": 1},
                              {"name": "ops", "key": admin}]})
    running = await start_service(config)
    async with aiohttp.ClientSession() as http:
        url = url_of(running, "lmstudio")
        statuses = []
        for _ in range(3):
            async with http.get(url + "/v1/models",
                                headers={"Authorization": f"Bearer {limited}"}) as resp:
                statuses.append(resp.status)
        assert statuses == [200, 429, 429]
        async with http.get(url_of(running, "ollama") + "/metrics",
                            headers={"Authorization": f"Bearer {admin}"}) as resp:
            assert resp.status == 200
            samples = Samples(await resp.text())
    assert samples.get("llamarunner_rate_limited_total", key="ci") == 2
    assert samples.get("llamarunner_rate_limited_total", key="ops") == 0
    assert samples.requests("openai", "/v1/models", "", 429) == 2
    assert limited not in samples.text and admin not in samples.text


async def test_a_client_without_a_key_counts_under_an_empty_key(
    write_config, start_service, llama_server_bin, tiny_model, plain_model
) -> None:
    config = write_config(models(tiny_model, plain_model), runtime=llama_server_bin,
                          proxies=both_ports(), security={"client_requests_per_minute": 1})
    running = await start_service(config)
    async with aiohttp.ClientSession() as http:
        for expected in (200, 429):
            async with http.get(url_of(running, "ollama") + "/api/tags") as resp:
                assert resp.status == expected
    # Read in-process: this client's next request, a scrape included, is limited too.
    samples = Samples(running.service.metrics.render().decode())
    assert samples.get("llamarunner_rate_limited_total", key="") == 1
    assert samples.requests("ollama", "/api/tags", "", 429) == 1
