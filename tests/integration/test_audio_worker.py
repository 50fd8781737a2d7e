"""The speech worker as the runner manager runs it: a real process, the real Whisper
tiny.en model, real speech, and OpenAI's own client pointed at it.

One worker serves the module's read-only tests; the tests of starting and stopping run
their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import psutil
import pytest
from tests.support.speech import HEARD_WORDS, make_speech

from llamarunner.audio import launch
from llamarunner.audio.launch import WORKER_KEY_ENV
from llamarunner.audio.worker import ENGINE_MISSING

KEY = "audio-worker-test-key-0123456789abcdef"
ALIAS = "whisper"
# Small, so that the size limit can be crossed cheaply; the test speech is ~180 KB.
MAX_BYTES = 2_000_000
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Worker:
    """A worker process, its port and the files its stdout and stderr go to."""

    def __init__(self, folder: Path, model: Path, *, port: int | None = None,
                 env: dict[str, str] | None = None, args: dict[str, Any] | None = None
                 ) -> None:
        self.port = free_port() if port is None else port
        self.base = f"http://127.0.0.1:{self.port}"
        folder.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = folder / "stdout.log", folder / "stderr.log"
        argv = launch.worker_command(Path(sys.executable), str(model), ALIAS, "127.0.0.1",
                                     self.port, args or {})
        environment = {**os.environ, WORKER_KEY_ENV: KEY} if env is None else env
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(argv, env=environment, stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL)

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the worker exited with {self.proc.returncode}: {self.stderr}")
            with contextlib.suppress(OSError):
                if get(self.base + "/health")[0] == 200:
                    return
            time.sleep(0.05)
        pytest.fail(f"the worker never became healthy: {self.stdout} {self.stderr}")

    def exit_code(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def get(url: str, key: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with _OPENER.open(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


_MODULE_WORKERS: set[int] = set()


@pytest.fixture(scope="module")
def worker(whisper_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    running = Worker(tmp_path_factory.mktemp("worker"), whisper_model,
                     args={"threads": 2, "max-bytes": MAX_BYTES})
    _MODULE_WORKERS.add(running.proc.pid)
    try:
        running.wait_healthy()
        yield running
        assert running.stop() == 0, running.stderr
        assert KEY not in running.stdout + running.stderr
    finally:
        running.stop()
        _MODULE_WORKERS.discard(running.proc.pid)


@pytest.fixture
def no_orphans() -> Iterator[None]:
    """The suite's check, less the module's worker: it lives until the module ends (its
    fixture stops it and checks the exit code); anything else must be gone."""
    yield
    deadline = time.monotonic() + 3
    while True:
        strays = []
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if child.pid not in _MODULE_WORKERS and child.status() != psutil.STATUS_ZOMBIE:
                    strays.append(child)
        if not strays or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for child in strays:
        with contextlib.suppress(psutil.Error):
            child.kill()
    assert not strays, f"test left child processes behind: {strays}"


@pytest.fixture
def client(worker: Worker) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=worker.base + "/v1", api_key=KEY, max_retries=0,
                       timeout=120) as opened:
        yield opened


def heard(text: str) -> list[str]:
    return [word for word in HEARD_WORDS if word in text.lower()]


def assert_heard(text: str) -> None:
    assert len(heard(text)) >= 2, f"heard {text!r}"


def transcribe(client: openai.OpenAI, audio: Path, **kwargs: Any) -> Any:
    with audio.open("rb") as file:
        return client.audio.transcriptions.create(model=ALIAS, file=file, **kwargs)


# ---------------------------------------------------------------------------------------
# One worker, many requests


def test_announces_itself_and_the_model(worker: Worker) -> None:
    lines = worker.stdout.splitlines()
    assert lines[0] == f"listening on http://127.0.0.1:{worker.port}"
    assert any(line.startswith(f"model loaded: {ALIAS} (English-only), ") for line in lines)


def test_health_needs_no_key_and_models_list_the_alias(worker: Worker) -> None:
    assert get(worker.base + "/health") == (200, {"status": "ok"})
    status, body = get(worker.base + "/v1/models", KEY)
    assert status == 200
    assert body["object"] == "list"
    assert [(m["id"], m["object"], m["owned_by"]) for m in body["data"]] == [
        (ALIAS, "model", "llamarunner")]
    assert isinstance(body["data"][0]["created"], int)


@pytest.mark.parametrize("key", [None, "wrong", KEY + "x", "ünïcode"])
def test_every_other_route_wants_the_key(worker: Worker, key: str | None) -> None:
    for path in ("/v1/models", "/v1/audio/transcriptions", "/nowhere"):
        status, body = get(worker.base + path, key)
        assert status == 401
        assert body["error"]["code"] == "invalid_api_key"
        assert body["error"]["type"] == "invalid_request_error"


def test_a_wrong_key_is_an_authentication_error_for_the_client(worker: Worker,
                                                               speech_wav: Path) -> None:
    with openai.OpenAI(base_url=worker.base + "/v1", api_key="wrong", max_retries=0) as bad, \
            pytest.raises(openai.AuthenticationError):
        transcribe(bad, speech_wav)


def test_transcribes_real_speech(client: openai.OpenAI, speech_wav: Path) -> None:
    result = transcribe(client, speech_wav)
    assert_heard(result.text)
    assert result.text == result.text.strip()
    assert result.usage.type == "duration"
    assert result.usage.seconds >= 5


def test_text(client: openai.OpenAI, speech_wav: Path) -> None:
    text = transcribe(client, speech_wav, response_format="text")
    assert isinstance(text, str)
    assert text.endswith("\n") and not text.startswith(" ")
    assert_heard(text)


@pytest.mark.parametrize(("response_format", "opening"), [
    ("srt", "1\n00:00:00,000 --> 00:00:0"),
    ("vtt", "WEBVTT\n\n00:00:00.000 --> 00:00:0"),
])
def test_subtitles(client: openai.OpenAI, speech_wav: Path, response_format: str,
                   opening: str) -> None:
    subtitles = transcribe(client, speech_wav, response_format=response_format)
    assert subtitles.startswith(opening)
    assert subtitles.endswith("\n\n")
    assert_heard(subtitles)


def test_verbose_json(client: openai.OpenAI, speech_wav: Path) -> None:
    result = transcribe(client, speech_wav, response_format="verbose_json",
                        prompt="The fox story.")
    assert result.language == "english"
    assert 5 < result.duration < 6
    assert result.segments and result.segments[0].id == 0
    # Whisper predicts the timestamps: an end may overshoot the audio a little.
    assert all(0 <= s.start < s.end for s in result.segments)
    assert all(s.temperature == 0.0 for s in result.segments)
    assert "".join(s.text for s in result.segments).strip() == result.text
    assert_heard(result.text)
    assert result.words is None
    raw = result.model_dump()
    assert raw["task"] == "transcribe"
    assert raw["usage"] == {"type": "duration", "seconds": 6}


def test_a_temperature_is_the_one_the_engine_samples_at(client: openai.OpenAI,
                                                         speech_wav: Path) -> None:
    # Sampled text varies from run to run: only the temperature is checked.
    result = transcribe(client, speech_wav, response_format="verbose_json", temperature=0.3)
    assert result.text
    assert {s.temperature for s in result.segments} == {0.3}


def test_verbose_json_with_words(client: openai.OpenAI, speech_wav: Path) -> None:
    result = transcribe(client, speech_wav, response_format="verbose_json",
                        timestamp_granularities=["word", "segment"])
    assert result.words, result
    assert_heard(" ".join(w.word for w in result.words))
    assert all(w.word == w.word.strip() and 0 <= w.start <= w.end for w in result.words)
    starts = [w.start for w in result.words]
    assert starts == sorted(starts)


def test_streams_deltas_then_the_whole_text(client: openai.OpenAI, speech_wav: Path) -> None:
    events = list(transcribe(client, speech_wav, stream=True))
    kinds = [event.type for event in events]
    assert kinds[-1] == "transcript.text.done"
    assert kinds[:-1] and set(kinds[:-1]) == {"transcript.text.delta"}
    done = events[-1]
    assert_heard(done.text)
    assert "".join(event.delta for event in events[:-1]) == done.text
    assert done.usage.seconds == 6


@pytest.mark.parametrize("suffix", [".flac", ".ogg", ".mp3"])
def test_decodes_other_containers(client: openai.OpenAI, tmp_path: Path, suffix: str) -> None:
    assert_heard(transcribe(client, make_speech(tmp_path, suffix=suffix)).text)


def test_an_english_only_model_cannot_translate(client: openai.OpenAI,
                                                speech_wav: Path) -> None:
    with speech_wav.open("rb") as file, pytest.raises(openai.BadRequestError) as caught, \
            warnings.catch_warnings():
        # The SDK marks the endpoint deprecated; clients still call it.
        warnings.simplefilter("ignore", DeprecationWarning)
        client.audio.translations.create(model=ALIAS, file=file)
    assert "English-only" in caught.value.message
    assert caught.value.code == "model_not_multilingual"
    assert caught.value.param == "model"


def test_what_is_not_audio_is_refused_and_the_worker_carries_on(
        worker: Worker, client: openai.OpenAI, tmp_path: Path, speech_wav: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("This is not audio at all.\n" * 50)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    for upload in (notes, empty):
        with pytest.raises(openai.BadRequestError) as caught:
            transcribe(client, upload)
        assert "could not decode audio" in caught.value.message
        assert caught.value.code == "invalid_audio"
    assert get(worker.base + "/health") == (200, {"status": "ok"})
    assert_heard(transcribe(client, speech_wav).text)


def form(fields: dict[str, str], audio: bytes | None) -> aiohttp.FormData:
    data = aiohttp.FormData(default_to_multipart=True)
    for name, value in fields.items():
        data.add_field(name, value)
    if audio is not None:
        data.add_field("file", audio, filename="speech.wav", content_type="audio/wav")
    return data


async def post(url: str, data: Any, headers: dict[str, str] | None = None
               ) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as http, http.post(
            url, data=data, headers={"Authorization": f"Bearer {KEY}", **(headers or {})}
    ) as resp:
        return resp.status, resp.content_type, await resp.read()


@pytest.mark.parametrize(("path", "fields", "with_file", "param", "says"), [
    ("transcriptions", {"model": ALIAS}, False, "file", "missing required field 'file'"),
    ("translations", {}, False, "file", "'file'"),
    ("transcriptions", {"response_format": "xml"}, True, "response_format", "verbose_json"),
    ("transcriptions", {"temperature": "hot"}, True, "temperature", "from 0 to 1"),
    ("transcriptions", {"temperature": "1.5"}, True, "temperature", "from 0 to 1"),
    ("transcriptions", {"stream": "true", "response_format": "srt"}, True, "stream",
     "json or text"),
    ("transcriptions", {"stream": "maybe"}, True, "stream", "true or false"),
    ("transcriptions", {"language": "klingon"}, True, "language", "'klingon'"),
    ("transcriptions", {"language": "German"}, True, "language", "only understands English"),
    ("transcriptions", {"timestamp_granularities[]": "char"}, True,
     "timestamp_granularities", "'char'"),
])
async def test_bad_requests_name_the_field(worker: Worker, speech_wav: Path, path: str,
                                           fields: dict[str, str], with_file: bool,
                                           param: str, says: str) -> None:
    audio = await asyncio.to_thread(speech_wav.read_bytes) if with_file else None
    status, content_type, body = await post(f"{worker.base}/v1/audio/{path}",
                                            form(fields, audio))
    assert (status, content_type) == (400, "application/json"), body
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert says in error["message"]


async def test_a_body_that_is_not_a_form_is_refused(worker: Worker) -> None:
    url = worker.base + "/v1/audio/transcriptions"
    status, _, body = await post(url, b'{"file": "x"}', {"Content-Type": "application/json"})
    assert status == 400
    assert "multipart/form-data" in json.loads(body)["error"]["message"]
    status, _, body = await post(url, b"garbage",
                                 {"Content-Type": "multipart/form-data; boundary=xyz"})
    assert status == 400
    assert "malformed" in json.loads(body)["error"]["message"]


async def test_too_large_uploads_are_refused(worker: Worker) -> None:
    url = worker.base + "/v1/audio/transcriptions"
    big = b"\0" * (MAX_BYTES + 1)
    status, _, body = await post(url, form({}, big))  # with a Content-Length
    assert status == 413
    assert json.loads(body)["error"]["code"] == "file_too_large"

    boundary = "limit"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"big.wav\"\r\n\r\n").encode()

    async def chunks() -> Any:  # no Content-Length: the worker counts as it reads
        yield head
        for _ in range(MAX_BYTES // 65536 + 2):
            yield b"\0" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    status, _, body = await post(
        url, chunks(), {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 413
    assert get(worker.base + "/health")[0] == 200


async def test_requests_at_once_take_turns(worker: Worker, speech_wav: Path) -> None:
    url = worker.base + "/v1/audio/transcriptions"
    audio = await asyncio.to_thread(speech_wav.read_bytes)
    answers = await asyncio.gather(
        post(url, form({"response_format": "text"}, audio)),
        post(url, form({"response_format": "json"}, audio)),
        post(url, form({"stream": "true"}, audio)),
    )
    assert [(status, kind) for status, kind, _ in answers] == [
        (200, "text/plain"), (200, "application/json"), (200, "text/event-stream")]
    for _, _, body in answers:
        assert_heard(body.decode())


async def test_a_client_that_leaves_a_stream_frees_the_worker(worker: Worker, tmp_path: Path,
                                                             speech_wav: Path) -> None:
    # Long enough for several 30 s windows: the client leaves after the first one's text.
    story = " ".join(["The quick brown fox jumps over the lazy dog and runs away."] * 8)
    long_speech = await asyncio.to_thread(make_speech, tmp_path, story, suffix=".flac")
    url = worker.base + "/v1/audio/transcriptions"
    audio = await asyncio.to_thread(long_speech.read_bytes)
    async with aiohttp.ClientSession() as http, http.post(
            url, data=form({"stream": "true"}, audio),
            headers={"Authorization": f"Bearer {KEY}"}) as resp:
        assert resp.status == 200
        first = await resp.content.readline()
        assert first.startswith(b'data: {"type": "transcript.text.delta"')
    # The engine drops the rest of that job; the next request is served in full.
    status, _, body = await post(url, form({"response_format": "text"},
                                           await asyncio.to_thread(speech_wav.read_bytes)))
    assert status == 200
    assert_heard(body.decode())


def test_each_request_is_logged_with_its_cost(worker: Worker, client: openai.OpenAI,
                                              speech_wav: Path) -> None:
    transcribe(client, speech_wav, response_format="text")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = worker.stdout.splitlines()
        if lines and lines[-1].startswith("POST /v1/audio/transcriptions 200 "):
            break
        time.sleep(0.05)
    assert "audio 5.4 s" in lines[-1] and "real-time factor" in lines[-1], lines[-3:]


# ---------------------------------------------------------------------------------------
# Starting and stopping


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stops_cleanly_on_a_signal(tmp_path: Path, whisper_model: Path,
                                   signum: signal.Signals) -> None:
    running = Worker(tmp_path, whisper_model)
    try:
        running.wait_healthy()
        started = time.monotonic()
        running.proc.send_signal(signum)
        assert running.exit_code(timeout=10) == 0, running.stderr
        assert time.monotonic() - started < 5
    finally:
        running.stop()


@pytest.mark.parametrize("key", [None, ""])
def test_refuses_to_start_without_a_key(tmp_path: Path, whisper_model: Path,
                                        key: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if k != WORKER_KEY_ENV}
    if key is not None:
        env[WORKER_KEY_ENV] = key
    running = Worker(tmp_path, whisper_model, env=env)
    try:
        assert running.exit_code() == 2
        assert WORKER_KEY_ENV in running.stderr
        assert running.stdout == ""
    finally:
        running.stop()


def test_a_busy_port_is_reported_in_llama_server_words(tmp_path: Path,
                                                          whisper_model: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        running = Worker(tmp_path, whisper_model, port=busy.getsockname()[1])
        try:
            assert running.exit_code() == 1
            assert "couldn't bind HTTP server socket" in running.stderr
        finally:
            running.stop()


@pytest.mark.parametrize(("files", "says"), [
    ({}, "it has no model.bin"),
    ({"model.bin": b"not a model", "tokenizer.json": b"{}", "config.json": b"{}"},
     "could not load the Whisper model"),
    (None, "model folder not found"),
])
def test_a_folder_that_is_not_a_model_fails_the_start(
        tmp_path: Path, files: dict[str, bytes] | None, says: str) -> None:
    folder = tmp_path / "not-a-model"
    if files is not None:
        folder.mkdir()
        for name, content in files.items():
            (folder / name).write_bytes(content)
    running = Worker(tmp_path / "logs", folder)
    try:
        assert running.exit_code() == 1
        assert says in running.stderr
        assert running.stdout.startswith("listening on ")
    finally:
        running.stop()


def test_an_engine_that_will_not_import_is_exit_code_3(tmp_path: Path,
                                                       whisper_model: Path) -> None:
    shadow = tmp_path / "shadow" / "faster_whisper"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('no engine in this test')\n")
    env = {**os.environ, WORKER_KEY_ENV: KEY,
           "PYTHONPATH": os.pathsep.join([str(shadow.parent),
                                          os.environ.get("PYTHONPATH", "")])}
    running = Worker(tmp_path / "logs", whisper_model, env=env)
    try:
        assert running.exit_code() == 3
        assert ENGINE_MISSING in running.stderr
    finally:
        running.stop()
