"""Every curl example in docs/API_REFERENCE.md, run in document order against a live
`llamarunner --headless` with real llama-server and the tiny model under the names the
examples use."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from tests.docs.markdown_docs import (
    API_REFERENCE,
    Endpoint,
    ShellCommand,
    code_blocks,
    endpoint_sections,
    shell_blocks,
    shell_commands,
)
from tests.support.tiny_gguf import write_tiny_gguf

from llamarunner.config import Config
from llamarunner.proxy.servers import API_TITLES

DEFAULT_PORTS = {name: proxy.port for name, proxy in Config.default().proxies.items()}
# Each example runs in well under a second against the tiny model; a minute is a hang.
CURL_TIMEOUT = 60
_DATA_FLAGS = ("-d", "--data", "--data-raw", "--data-binary", "--data-urlencode", "--json",
               "-F", "--form")
_OWN_OUTPUT_FLAGS = ("-o", "--output", "-w", "--write-out", "-O", "--remote-name")
# The line the app logs for each listener it starts: "<API title> listening on <URL>".
_LISTENING = re.compile(rf"({'|'.join(map(re.escape, API_TITLES.values()))}) listening on "
                        r"http://127\.0\.0\.1:(\d+)")


def _examples() -> list[ShellCommand]:
    commands: list[ShellCommand] = []
    for block in shell_blocks(API_REFERENCE.read_text()):
        for command in shell_commands(block):
            assert command.argv[0] == "curl", (
                f"API_REFERENCE.md:{command.line}: examples are curl commands: {command.source}")
            commands.append(command)
    return commands


EXAMPLES = _examples()


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    port: int
    path: str


def _request(command: ShellCommand) -> Request:
    argv = command.argv
    urls = [arg for arg in argv if arg.startswith(("http://", "https://"))]
    assert len(urls) == 1, f"API_REFERENCE.md:{command.line}: one URL per example"
    method = "GET"
    for index, arg in enumerate(argv):
        if arg in ("-X", "--request"):
            method = argv[index + 1]
            break
        if arg in ("-I", "--head"):
            method = "HEAD"
        elif arg in _DATA_FLAGS and method == "GET":
            method = "POST"
    match = re.fullmatch(r"https?://(?:127\.0\.0\.1|localhost):(\d+)(/[^?#]*)?.*", urls[0])
    assert match, f"API_REFERENCE.md:{command.line}: examples call 127.0.0.1 or localhost"
    return Request(method, urls[0], int(match.group(1)), match.group(2) or "/")


# ---------------------------------------------------------------------------------------------
# Every endpoint has an example (no process needed)


def _matches(endpoint: Endpoint, request: Request) -> bool:
    pattern = re.sub(r"\\\{[^}]+\\\}", ".+", re.escape(endpoint.path))
    return (endpoint.method == request.method and request.port in endpoint.ports
            and re.fullmatch(pattern, request.path) is not None)


def test_every_endpoint_has_a_curl_example_in_its_section() -> None:
    missing = []
    for section in endpoint_sections(API_REFERENCE.read_text()):
        body = "\n".join(section.body)
        requests = [_request(command) for block in shell_blocks(body)
                    for command in shell_commands(block)]
        for endpoint in section.endpoints:
            # HEAD answers exactly like GET without the body; its GET example covers it.
            if endpoint.method == "HEAD" and any(e.method == "GET" and e.path == endpoint.path
                                                 for e in section.endpoints):
                continue
            if not any(_matches(endpoint, request) for request in requests):
                missing.append(f"line {endpoint.line}: {endpoint.method} {endpoint.path}")
    assert not missing, f"endpoints without a curl example in their section: {missing}"


def test_examples_use_the_default_ports_and_let_the_test_read_the_answer() -> None:
    for command in EXAMPLES:
        assert _request(command).port in DEFAULT_PORTS.values(), command.source
        own = [arg for arg in command.argv if arg in _OWN_OUTPUT_FLAGS]
        assert not own, f"API_REFERENCE.md:{command.line}: {own} would hide the answer"


# ---------------------------------------------------------------------------------------------
# The live app


@dataclass(frozen=True)
class LiveApp:
    process: subprocess.Popen[bytes]
    ports: dict[int, int]  # documented port -> the port the app really listens on
    workdir: Path
    log: Path


def _wait_ready(process: subprocess.Popen[bytes], log: Path, timeout: float = 60
                ) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if " ready; " in text:
            titles = {title: api for api, title in API_TITLES.items()}
            return {titles[title]: int(port) for title, port in _LISTENING.findall(text)}
        if process.poll() is not None:
            break
        time.sleep(0.05)
    text = log.read_text(errors="replace") if log.exists() else ""
    raise AssertionError(f"llamarunner --headless did not become ready:\n{text}")


@pytest.fixture(scope="module")
def live_app(tmp_path_factory: pytest.TempPathFactory, llama_server_bin: Path,
             whisper_model: Path, speech_wav: Path) -> Iterator[LiveApp]:
    workdir = tmp_path_factory.mktemp("api-examples")
    # The audio examples upload ./speech.wav: they run in this folder.
    shutil.copyfile(speech_wav, workdir / "speech.wav")
    # The tiny model under the examples' names; a long training context so that the
    # examples' prompts (tools included) and the load example's 8192 fit.
    model = write_tiny_gguf(workdir / "tiny.gguf", name="tiny", context_length=8192)
    config = workdir / "config.json"
    config.write_text(json.dumps({
        # Port 0: the OS picks free ports, which the app logs and the examples are sent to.
        "proxies": {"ollama": {"port": 0}, "lmstudio": {"port": 0}},
        "runtimes": {"default": {"path": str(llama_server_bin)}},
        "models": {
            "gemma-3-270m": {"path": str(model),
                             "args": {"ctx-size": 2048, "threads": 1, "jinja": True}},
            "my-embedder": {"path": str(model),
                            "args": {"embedding": True, "pooling": "mean", "ctx-size": 512,
                                     "threads": 1}},
            "whisper-tiny.en": {"path": str(whisper_model)},
        },
        "model_dirs": [str(workdir / "models")],
        "sources": {"ollama": {"enabled": False}, "lmstudio": {"enabled": False}},
        "scheduler": {"max_loaded_models": 2, "load_timeout": "30s", "stop_grace": "2s"},
    }, indent=2))
    env = {key: value for key, value in os.environ.items()
           if key.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env.update({
        "LLAMARUNNER_DATA_DIR": str(workdir / "data"),
        "LLAMARUNNER_LOG_DIR": str(workdir / "logs"),
        "LLAMARUNNER_CACHE_DIR": str(workdir / "cache"),
        "OLLAMA_MODELS": str(workdir / "no-ollama-store"),
        "HOME": str(workdir / "home"),
        "USERPROFILE": str(workdir / "home"),
    })
    log = workdir / "app.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "llamarunner", "--headless", "--config", str(config)],
            env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        bound = _wait_ready(process, log)
        ports = {DEFAULT_PORTS[api]: port for api, port in bound.items()}
        assert set(ports) == set(DEFAULT_PORTS.values()), bound
        yield LiveApp(process, ports, workdir, log)
        children = psutil.Process(process.pid).children(recursive=True)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text(errors="replace")
        _, alive = psutil.wait_procs(children, timeout=5)
        assert not alive, f"llama-server outlived the app: {alive}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture
def no_orphans(request: pytest.FixtureRequest) -> Iterator[None]:
    """The app lives for the whole module: only it and its own children may be running.

    (Replaces the suite's per-test check, which would count the app itself; the module
    fixture checks after shutdown that nothing outlived it.)
    """
    yield
    if "live_app" not in request.fixturenames:
        return  # the tests that only read the document start nothing
    live_app: LiveApp = request.getfixturevalue("live_app")
    mine = {live_app.process.pid}
    with contextlib.suppress(psutil.Error):
        mine |= {p.pid for p in psutil.Process(live_app.process.pid).children(recursive=True)}
    strays = [p for p in psutil.Process().children(recursive=True) if p.pid not in mine]
    _, alive = psutil.wait_procs(strays, timeout=3)
    assert not alive, f"processes left behind: {alive}"


# ---------------------------------------------------------------------------------------------
# Running one example


def _local(arg: str, ports: dict[int, int]) -> str:
    def swap(match: re.Match[str]) -> str:
        port = int(match.group(2))
        return f"127.0.0.1:{ports.get(port, port)}"

    return re.sub(r"(127\.0\.0\.1|localhost):(\d+)(?!\d)", swap, arg)


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes


def _run(command: ShellCommand, app: LiveApp, index: int) -> Answer:
    body_file = app.workdir / f"answer-{index}.out"
    argv = [command.argv[0], "-sS", "--noproxy", "*", "--max-time", str(CURL_TIMEOUT),
            "-o", str(body_file), "-w", "%{http_code} %{content_type}",
            *(_local(arg, app.ports) for arg in command.argv[1:])]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=CURL_TIMEOUT + 10,
                          check=False, cwd=app.workdir)
    assert done.returncode == 0, (
        f"API_REFERENCE.md:{command.line}: curl failed ({done.returncode}): {done.stderr}\n"
        f"{command.source}")
    status, _, content_type = done.stdout.partition(" ")
    body = body_file.read_bytes() if body_file.exists() else b""
    if any(arg in ("-i", "--include", "-I", "--head") for arg in command.argv):
        body = body.partition(b"\r\n\r\n")[2]  # the headers curl wrote before the body
    return Answer(int(status), content_type.split(";")[0].strip(), body)


def _check_body(answer: Answer, command: ShellCommand, method: str) -> None:
    where = f"API_REFERENCE.md:{command.line}"
    text = answer.body.decode()
    if method == "HEAD" or answer.status == 204:
        assert text == "", where
        return
    if answer.content_type == "application/json":
        data = json.loads(text)
        if answer.status >= 400:
            assert "error" in data, f"{where}: an error answer without 'error': {text}"
    elif answer.content_type == "application/x-ndjson":
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        assert lines and lines[-1].get("done") is True, f"{where}: unfinished stream {text}"
        assert all("error" not in line for line in lines), f"{where}: {text}"
    elif answer.content_type == "text/event-stream":
        events = [line[len("data:"):].strip() for line in text.splitlines()
                  if line.startswith("data:")]
        assert events, f"{where}: an empty stream"
        if events[-1] != "[DONE]":  # a transcript ends with its done event instead
            assert json.loads(events[-1]).get("type") == "transcript.text.done", (
                f"{where}: unfinished stream {text}")
            events.append("[DONE]")
        for event in events[:-1]:
            assert "error" not in json.loads(event), f"{where}: {event}"
    elif answer.content_type == "text/plain":
        assert text.strip(), f"{where}: empty text answer"
    else:
        # Ollama's copy and delete answer 200 with an empty body, as Ollama does.
        assert text == "", f"{where}: unexpected {answer.content_type!r} answer: {text[:200]}"


@pytest.mark.parametrize(
    "index", range(len(EXAMPLES)),
    ids=[f"line{c.line}-{_request(c).method}-{_request(c).path}" for c in EXAMPLES])
def test_example_answers_as_documented(live_app: LiveApp, index: int) -> None:
    command = EXAMPLES[index]
    request = _request(command)
    answer = _run(command, live_app, index)
    where = f"API_REFERENCE.md:{command.line}"
    if command.expect is not None:
        assert answer.status == command.expect, (
            f"{where}: expected {command.expect}, got {answer.status}: {answer.body[:500]!r}\n"
            f"{command.source}")
    else:
        assert 200 <= answer.status < 300, (
            f"{where}: {answer.status}: {answer.body[:500]!r}\n{command.source}")
    _check_body(answer, command, request.method)


# ---------------------------------------------------------------------------------------------
# The SDK examples


SDK_EXAMPLES = [block for block in code_blocks(API_REFERENCE.read_text())
                if block.language == "python"]


@pytest.mark.parametrize("index", range(len(SDK_EXAMPLES)),
                         ids=[f"line{block.line}" for block in SDK_EXAMPLES])
def test_sdk_example_runs(live_app: LiveApp, index: int) -> None:
    block = SDK_EXAMPLES[index]
    source = _local(block.text, live_app.ports)
    env = {key: value for key, value in os.environ.items()
           if key.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    done = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True,
                          timeout=CURL_TIMEOUT, check=False, cwd=live_app.workdir, env=env)
    assert done.returncode == 0, f"API_REFERENCE.md:{block.line}: {done.stderr}"
    assert done.stdout.strip(), f"API_REFERENCE.md:{block.line}: printed nothing"
