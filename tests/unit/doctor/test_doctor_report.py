"""The doctor's report: one line per client, the summary, JSON and the exit status."""

from __future__ import annotations

import json

import pytest

from llamarunner.config import parse_config
from llamarunner.doctor import diagnose, target_from_config
from llamarunner.doctor.report import (
    EXIT_CLIENT_FAILS,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    ClientResult,
    Report,
    client_lines,
    format_report,
)

WORKS = ClientResult("OpenAI SDK", True)
NOTED = ClientResult("GitHub Copilot", True, notes=("agent mode is off", "assumes 4096"))
FAILS = ClientResult("Open WebUI", False, "POST /api/chat on 127.0.0.1:11434", 400,
                     "model 'x' cannot chat (chat_not_supported)", "give it a chat template")
BROKEN = ClientResult("Continue", False, "GET /api/tags (Ollama API)", None,
                      "the Ollama API is off", "")
APIS = ("Ollama API at http://127.0.0.1:11434", "LM Studio / OpenAI API at http://127.0.0.1:1234")


@pytest.mark.parametrize(("result", "line"), [
    (WORKS, "works"),
    (NOTED, "works (note: agent mode is off; assumes 4096)"),
    (FAILS, "fails at POST /api/chat on 127.0.0.1:11434 (HTTP 400): model 'x' cannot chat "
            "(chat_not_supported); fix: give it a chat template"),
    (BROKEN, "fails at GET /api/tags (Ollama API): the Ollama API is off"),
])
def test_summary(result: ClientResult, line: str) -> None:
    assert result.summary() == line


def test_client_lines_line_up_the_verdicts() -> None:
    assert client_lines((NOTED, WORKS, FAILS)) == [
        "GitHub Copilot: works (note: agent mode is off; assumes 4096)",
        "OpenAI SDK:     works",
        "Open WebUI:     fails at POST /api/chat on 127.0.0.1:11434 (HTTP 400): model 'x' "
        "cannot chat (chat_not_supported); fix: give it a chat template",
    ]


def test_all_work() -> None:
    report = Report((NOTED, WORKS), model="tiny", apis=APIS)
    assert report.ok and report.exit_code() == EXIT_OK
    assert format_report(report) == "\n".join([
        "Checking Ollama API at http://127.0.0.1:11434, LM Studio / OpenAI API at "
        "http://127.0.0.1:1234",
        "Model: tiny",
        "",
        "GitHub Copilot: works (note: agent mode is off; assumes 4096)",
        "OpenAI SDK:     works",
        "",
        "All 2 clients work.",
    ])


def test_one_fails() -> None:
    report = Report((WORKS, FAILS, BROKEN), model="x", apis=APIS)
    assert not report.ok and report.exit_code() == EXIT_CLIENT_FAILS
    text = format_report(report)
    assert text.splitlines()[-1] == "2 of 3 clients would fail."
    assert sum(line.startswith(("OpenAI SDK:", "Open WebUI:", "Continue:"))
               for line in text.splitlines()) == 3


def test_no_client_could_be_tried() -> None:
    report = Report(apis=APIS, problem="GET /api/tags on 127.0.0.1:11434 (HTTP 401): "
                                       "unauthorized", fix="name the config", notes=("n",))
    assert report.exit_code() == EXIT_CLIENT_FAILS
    assert format_report(report).splitlines()[1:] == [
        "Note: n",
        "Cannot check any client: GET /api/tags on 127.0.0.1:11434 (HTTP 401): unauthorized; "
        "fix: name the config",
    ]


def test_not_running_is_only_the_message() -> None:
    report = Report(apis=APIS, problem="LlamaRunner Pro is not running on ...", running=False)
    assert report.exit_code() == EXIT_NOT_RUNNING
    assert format_report(report) == "LlamaRunner Pro is not running on ..."


def test_json() -> None:
    report = Report((WORKS, FAILS), model="x", apis=APIS)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["works"] is False and data["running"] is True and data["model"] == "x"
    assert data["clients"] == [
        {"client": "OpenAI SDK", "works": True, "step": None, "status": None,
         "problem": None, "fix": None, "notes": []},
        {"client": "Open WebUI", "works": False, "step": "POST /api/chat on 127.0.0.1:11434",
         "status": 400, "problem": "model 'x' cannot chat (chat_not_supported)",
         "fix": "give it a chat template", "notes": []},
    ]


async def test_a_config_without_any_api_says_so_without_trying() -> None:
    config = parse_config({"proxies": {"ollama": {"enabled": False}, "lmstudio": {"port": 0}}})
    report = await diagnose(target_from_config(config, "/c.json", environ={}))
    assert report.exit_code() == EXIT_CLIENT_FAILS and not report.results
    assert format_report(report).splitlines()[-1] == (
        "Cannot check any client: the Ollama API is off; proxies.lmstudio.port is 0 (any free "
        "port), so its port is unknown here; fix: set proxies.ollama.enabled to true in /c.json; "
        "set a fixed proxies.lmstudio.port in /c.json")
