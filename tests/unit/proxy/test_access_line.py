"""The access line of one request record: its level, its words, its fields."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from llamarunner.proxy.access_log import log, log_request
from llamarunner.proxy.observe import RequestRecord


class Collect(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def lines() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []
    handler = Collect(records)
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    yield records
    log.removeHandler(handler)
    log.setLevel(level)


def record(**fields: object) -> RequestRecord:
    base: dict[str, object] = {"api": "openai", "route": "/v1/chat/completions",
                               "method": "POST", "started": 0.0, "status": 200,
                               "seconds": 0.4121}
    return RequestRecord(**{**base, **fields})  # type: ignore[arg-type]


def test_a_full_line(lines: list[logging.LogRecord]) -> None:
    log_request(record(model="tiny", key_name="alice", prompt_tokens=12, generated_tokens=16,
                       first_byte_seconds=0.05, client="127.0.0.1"))
    (line,) = lines
    assert line.levelno == logging.INFO
    assert line.getMessage() == ("POST /v1/chat/completions 200 model=tiny key=alice 0.412s "
                                 "first_byte=0.050s prompt=12 generated=16 api=openai "
                                 "client=127.0.0.1")
    fields = {name: getattr(line, name) for name in (
        "route", "method", "status", "model", "key", "duration_ms", "first_byte_ms",
        "prompt_tokens", "generated_tokens", "api", "client")}
    assert fields == {"route": "/v1/chat/completions", "method": "POST", "status": 200,
                      "model": "tiny", "key": "alice", "duration_ms": 412.1,
                      "first_byte_ms": 50.0, "prompt_tokens": 12, "generated_tokens": 16,
                      "api": "openai", "client": "127.0.0.1"}


def test_unknown_facts_are_left_out_of_the_text(lines: list[logging.LogRecord]) -> None:
    log_request(record(route="/api/tags", method="GET", api="ollama", status=499))
    assert lines[0].getMessage() == "GET /api/tags 499 0.412s api=ollama"


@pytest.mark.parametrize(("method", "route", "status", "level"), [
    ("GET", "/", 200, logging.DEBUG),
    ("GET", "/api/version", 200, logging.DEBUG),
    ("HEAD", "/api/tags", 200, logging.DEBUG),
    ("POST", "/", 405, logging.INFO),
    ("GET", "/", 403, logging.INFO),  # a refused probe is worth seeing
    ("GET", "/api/tags", 200, logging.INFO),
])
def test_health_checks_are_debug(lines: list[logging.LogRecord], method: str, route: str,
                                 status: int, level: int) -> None:
    log_request(record(method=method, route=route, status=status))
    assert lines[0].levelno == level


def test_odd_model_names_stay_one_word(lines: list[logging.LogRecord]) -> None:
    log_request(record(model="two words\nPOST /fake 200", key_name="x"))
    message = lines[0].getMessage()
    assert "\n" not in message and "model='two words\\nPOST /fake 200' key=x" in message
    log_request(record(model="m" * 1000))
    assert len(lines[1].getMessage()) < 300 and len(lines[1].model) == 200  # type: ignore[attr-defined]


def test_nothing_is_done_when_the_level_is_off(lines: list[logging.LogRecord]) -> None:
    log.setLevel(logging.WARNING)
    # Only the fields that pick the level are read: no line is built.
    log_request(SimpleNamespace(method="POST", route="/v1/chat/completions",  # type: ignore[arg-type]
                                status=200))
    assert lines == []
