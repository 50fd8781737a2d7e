"""The access log on a real Service with a real llama-server: one line per request, with
its route, status, model, key name and tokens, never a key, a query or a prompt."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.support import http
from tests.support.both_listeners import both_ports, url_of
from tests.support.root_logger import restored_root_logger

from llamarunner.core import logging_setup
from llamarunner.core.logging_setup import (
    LOG_FILE_NAME,
    JsonFormatter,
    configure_logging,
    current_log_format,
)

MODEL_ARGS = {"ctx-size": 512, "threads": 1, "jinja": True}
KEY = "an-api-key-of-twenty-four"
ALICE_KEY = "alice-has-her-own-key-0001"
PROMPT = "a prompt that must stay out of the log"
HELLO = [{"role": "user", "content": PROMPT}]


class Lines(logging.Handler):
    """Every record of `llamarunner.access`, DEBUG included."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def info(self) -> list[logging.LogRecord]:
        return [r for r in self.records if r.levelno >= logging.INFO]

    async def wait_for(self, count: int) -> list[logging.LogRecord]:
        """The first `count` records: a stream's line is written as its handler returns,
        which may be just after the client has read the end."""
        for _ in range(200):
            if len(self.records) >= count:
                break
            await asyncio.sleep(0.01)
        return self.records[:count]


@pytest.fixture
def access() -> Iterator[Lines]:
    logger = logging.getLogger("llamarunner.access")
    lines, level = Lines(), logger.level
    logger.addHandler(lines)
    logger.setLevel(logging.DEBUG)
    yield lines
    logger.removeHandler(lines)
    logger.setLevel(level)


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def tiny(tiny_model: Path) -> dict[str, Any]:
    return {"tiny": {"path": str(tiny_model), "args": MODEL_ARGS}}


def as_json(record: logging.LogRecord) -> dict[str, Any]:
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def assert_nothing_secret(record: logging.LogRecord, *secrets: str) -> None:
    text = record.getMessage() + JsonFormatter().format(record)
    for secret in (PROMPT, *secrets):
        assert secret not in text, (secret, text)


async def test_one_line_per_request_with_model_status_and_tokens(
        write_config, start_service, llama_server_bin, tiny_model, access, client) -> None:
    config = write_config(tiny(tiny_model), runtime=llama_server_bin, proxies=both_ports())
    running = await start_service(config)
    openai_url, ollama_url = url_of(running, "lmstudio"), url_of(running, "ollama")

    async with client.post(openai_url + "/v1/chat/completions",
                           json={"model": "tiny", "messages": HELLO, "max_tokens": 8}) as resp:
        assert resp.status == 200
        usage = (await resp.json())["usage"]
    (line,) = await access.wait_for(1)
    assert line.levelno == logging.INFO
    message = line.getMessage()
    assert message.startswith("POST /v1/chat/completions 200 model=tiny "), message
    assert f"prompt={usage['prompt_tokens']} generated={usage['completion_tokens']} " \
           "api=openai client=127.0.0.1" in message
    fields = as_json(line)
    assert fields["route"] == "/v1/chat/completions" and fields["method"] == "POST"
    assert fields["status"] == 200 and fields["model"] == "tiny" and fields["key"] is None
    assert fields["prompt_tokens"] == usage["prompt_tokens"] > 0
    assert fields["generated_tokens"] == usage["completion_tokens"] > 0
    assert fields["api"] == "openai" and fields["client"] == "127.0.0.1"
    assert fields["duration_ms"] > 0 and fields["logger"] == "llamarunner.access"
    assert_nothing_secret(line)

    async with client.post(openai_url + "/v1/chat/completions",
                           json={"model": "tiny", "messages": HELLO, "max_tokens": 8,
                                 "stream": True}) as resp:
        assert resp.status == 200
        await resp.read()
    async with client.post(ollama_url + "/api/chat",
                           json={"model": "tiny", "messages": HELLO, "stream": False,
                                 "options": {"num_predict": 4}}) as resp:
        assert resp.status == 200
        ollama_reply = await resp.json()
    async with client.get(ollama_url + "/api/tags") as resp:
        assert resp.status == 200
    _, streamed, ollama_chat, tags = await access.wait_for(4)
    assert len(access.records) == 4  # one line per request, no more
    assert as_json(streamed)["generated_tokens"] > 0
    assert as_json(streamed)["first_byte_ms"] is not None
    assert "first_byte=" in streamed.getMessage()
    chat_fields = as_json(ollama_chat)
    assert chat_fields["route"] == "/api/chat" and chat_fields["api"] == "ollama"
    assert chat_fields["generated_tokens"] == ollama_reply["eval_count"]
    assert tags.getMessage().startswith("GET /api/tags 200 ")
    assert as_json(tags)["model"] is None and "model=" not in tags.getMessage()
    for record in access.records:
        assert_nothing_secret(record)


async def test_refused_and_unknown_requests_are_logged_without_key_or_query(
        write_config, start_service, llama_server_bin, tiny_model, access, client) -> None:
    config = write_config(tiny(tiny_model), runtime=llama_server_bin,
                          security={"api_key": KEY})
    running = await start_service(config)
    wrong = "not-the-key-but-a-guess-001"
    async with client.post(running.base_url + "/v1/chat/completions",
                           headers={"Authorization": f"Bearer {wrong}"},
                           json={"model": "tiny", "messages": HELLO}) as resp:
        assert resp.status == 401
    async with client.get(running.base_url + "/v1/no-such-thing?token=query-secret",
                          headers={"Authorization": f"Bearer {KEY}"}) as resp:
        assert resp.status == 404
    async with client.get(running.base_url + "/v1/models?token=query-secret",
                          headers={"Authorization": f"Bearer {KEY}"}) as resp:
        assert resp.status == 200
    refused, unknown, models = await access.wait_for(3)
    assert refused.levelno == logging.INFO
    assert refused.getMessage().startswith("POST /v1/chat/completions 401 ")
    assert as_json(refused)["status"] == 401 and as_json(refused)["key"] is None
    # The raw path could be anything a client makes up: only "unmatched" is logged.
    assert unknown.getMessage().startswith("GET unmatched 404 ")
    assert as_json(unknown)["route"] == "unmatched"
    assert models.getMessage().startswith("GET /v1/models 200 ")
    # A key without a name (security.api_key) is not named in the log.
    assert "key=" not in models.getMessage() and as_json(models)["key"] is None
    for record in (refused, unknown, models):
        assert_nothing_secret(record, KEY, wrong, "query-secret", "token=", "no-such-thing")


async def test_a_named_key_is_logged_by_its_name(
        write_config, start_service, llama_server_bin, tiny_model, access, client) -> None:
    config = write_config(tiny(tiny_model), runtime=llama_server_bin,
                          security={"api_keys": [{"name": "alice", "key": ALICE_KEY}]})
    running = await start_service(config)
    async with client.get(running.base_url + "/v1/models",
                          headers={"Authorization": f"Bearer {ALICE_KEY}"}) as resp:
        assert resp.status == 200
    (line,) = await access.wait_for(1)
    assert line.getMessage().startswith("GET /v1/models 200 key=alice ")
    assert as_json(line)["key"] == "alice"
    assert_nothing_secret(line, ALICE_KEY)


async def test_health_checks_are_logged_at_debug_only(
        write_config, start_service, llama_server_bin, tiny_model, access, client) -> None:
    config = write_config(tiny(tiny_model), runtime=llama_server_bin, proxies=both_ports())
    running = await start_service(config)
    openai_url, ollama_url = url_of(running, "lmstudio"), url_of(running, "ollama")
    for method, url in (("GET", ollama_url + "/"), ("HEAD", ollama_url + "/"),
                        ("GET", ollama_url + "/api/version"), ("GET", openai_url + "/"),
                        ("HEAD", ollama_url + "/api/tags")):
        async with client.request(method, url) as resp:
            assert resp.status == 200, (method, url)
    lines = await access.wait_for(5)
    assert len(lines) == 5 and all(r.levelno == logging.DEBUG for r in lines)
    assert not access.info
    async with client.get(ollama_url + "/api/tags") as resp:
        assert resp.status == 200
    await access.wait_for(6)
    assert [r.getMessage().split(" 200 ")[0] for r in access.info] == ["GET /api/tags"]


# --- the log format, live and on the command line ---------------------------------------


@pytest.fixture
def app_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Let a test run configure_logging; pytest's own handlers come back afterwards."""
    with restored_root_logger(monkeypatch):
        yield


async def test_the_service_applies_the_logging_section_at_start_and_live(
        write_config, start_service, fake_bin, tmp_path, app_logging) -> None:
    configure_logging("INFO", tmp_path / "logs")
    config = write_config({}, runtime=fake_bin,
                          logging={"format": "json", "max_bytes": 100_000, "backups": 2})
    running = await start_service(config)
    assert current_log_format() == "json"
    file_handler = logging.getLogger().handlers[1]
    assert isinstance(file_handler, logging_setup.SizeRotatingFileHandler)
    assert (file_handler.maxBytes, file_handler.backupCount) == (100_000, 2)

    await running.service.update_config(
        lambda data: data["logging"].update(format="text", max_bytes=70_000))
    assert current_log_format() == "text"
    assert file_handler.maxBytes == 70_000
    lines = (tmp_path / "logs" / LOG_FILE_NAME).read_text().splitlines()
    assert "configuration reloaded" in lines[-1] and not lines[-1].startswith("{")


def test_headless_with_log_format_json_writes_only_json(
        tmp_path, llama_server_bin, tiny_model) -> None:
    port = http_port()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "proxies": {"ollama": {"enabled": False}, "lmstudio": {"port": port}},
        "runtimes": {"default": {"path": str(llama_server_bin)}},
        "models": {"tiny": {"path": str(tiny_model), "args": {"ctx-size": 256}}},
    }))
    env = {**os.environ, "LLAMARUNNER_DATA_DIR": str(tmp_path / "data"),
           "LLAMARUNNER_LOG_DIR": str(tmp_path / "logs"),
           "LLAMARUNNER_CACHE_DIR": str(tmp_path / "cache")}
    app = subprocess.Popen(
        [sys.executable, "-m", "llamarunner", "--headless", "--log-format", "json",
         "--config", str(config)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        http.wait_until_up(base + "/v1/models")
        status, body = http.post_json(base + "/v1/completions",
                                      {"model": "tiny", "prompt": PROMPT, "max_tokens": 2})
        assert status == 200, body
        app.send_signal(signal.SIGTERM)
        _, err = app.communicate(timeout=20)
        assert app.returncode == 0, err
    finally:
        if app.poll() is None:
            app.kill()
            app.communicate()
    stderr_lines = [json.loads(line) for line in err.splitlines()]
    file_lines = [json.loads(line) for line in
                  (tmp_path / "logs" / LOG_FILE_NAME).read_text().splitlines()]
    assert stderr_lines and stderr_lines == file_lines
    (completion,) = [e for e in stderr_lines if e["logger"] == "llamarunner.access"
                     and e["route"] == "/v1/completions"]
    assert completion["status"] == 200 and completion["model"] == "tiny"
    assert completion["generated_tokens"] > 0 and completion["level"] == "INFO"
    assert any(e["message"] == "stopped cleanly" for e in stderr_lines)
    assert PROMPT not in err


def http_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
