"""Speech to text through the app: real Whisper worker, real speech, real `openai` client,
on both listeners; swapping with a chat model, and every bad input the issue names."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from tests.support.both_listeners import BOTH_PORTS, MODEL_ARGS, both_ports, url_of
from tests.support.speech import HEARD_WORDS, make_speech, reencode

from llamarunner.audio import launch

pytestmark = pytest.mark.timeout(180)


def heard(text: str) -> int:
    """How many of the words tiny.en reliably hears are in `text`."""
    lowered = text.lower()
    return sum(word in lowered for word in HEARD_WORDS)


@pytest.fixture
def audio_config(write_config, llama_server_bin, tiny_model, whisper_model):  # type: ignore[no-untyped-def]
    def make(**extra: Any) -> Path:
        path: Path = write_config(
            {"whisper": {"path": str(whisper_model), "alias": ["whisper-1"]},
             "tiny": {"path": str(tiny_model), "args": MODEL_ARGS}},
            runtime=llama_server_bin, proxies=both_ports(),
            scheduler={"max_loaded_models": 1}, **extra)
        return path

    return make


@pytest.fixture(scope="session")
def speech(speech_wav: Path) -> bytes:
    return speech_wav.read_bytes()


@pytest.fixture(scope="session")
def long_speech(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Half a minute of speech: long enough to kill the worker while it decodes."""
    sentence = "The quick brown fox jumps over the lazy dog."
    return make_speech(tmp_path_factory.mktemp("long"), " ".join([sentence] * 12)).read_bytes()


@pytest.fixture
async def running(audio_config, start_service):  # type: ignore[no-untyped-def]
    return await start_service(audio_config())


def client(running: Any, api: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url_of(running, api) + "/v1", api_key="unused",
                              max_retries=0)


def states(running: Any) -> dict[str, str]:
    return {info.name: info.state for info in running.service.manager.snapshot()}


async def post_form(url: str, fields: dict[str, str],
                    file: tuple[str, bytes] | None) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData(default_to_multipart=True)
    for name, value in fields.items():
        form.add_field(name, value)
    if file is not None:
        form.add_field("file", file[1], filename=file[0])
    async with aiohttp.ClientSession() as http, http.post(url, data=form) as resp:
        return resp.status, await resp.json(content_type=None)


# --- what works ------------------------------------------------------------------------------


@BOTH_PORTS
async def test_every_response_format_with_the_openai_client(running, api: str,
                                                            speech: bytes) -> None:
    sdk = client(running, api)
    audio = speech
    plain = await sdk.audio.transcriptions.create(model="whisper", file=("s.wav", audio))
    assert heard(plain.text) >= 2, plain.text
    text = await sdk.audio.transcriptions.create(model="whisper-1", file=("s.wav", audio),
                                                 response_format="text")
    assert isinstance(text, str) and heard(text) >= 2 and text.endswith("\n")
    srt = await sdk.audio.transcriptions.create(model="whisper", file=("s.wav", audio),
                                                response_format="srt")
    assert srt.startswith("1\n00:00:00,000 --> 00:00:0") and heard(srt) >= 2
    vtt = await sdk.audio.transcriptions.create(model="whisper", file=("s.wav", audio),
                                                response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> ") and heard(vtt) >= 2
    verbose = await sdk.audio.transcriptions.create(
        model="whisper", file=("s.wav", audio), response_format="verbose_json",
        timestamp_granularities=["word", "segment"], language="en", temperature=0.0,
        prompt="A pangram.")
    assert verbose.language == "english"
    assert 4 < verbose.duration < 8
    assert verbose.segments and verbose.segments[0].id == 0
    assert verbose.words and verbose.words[0].start == 0.0
    assert heard(" ".join(w.word for w in verbose.words)) >= 2
    assert states(running)["whisper"] == "ready"


@BOTH_PORTS
async def test_streaming_sends_deltas_then_done(running, api: str, speech: bytes) -> None:
    stream = await client(running, api).audio.transcriptions.create(
        model="whisper", file=("s.wav", speech), stream=True)
    events = [event async for event in stream]
    kinds = [event.type for event in events]
    assert kinds[-1] == "transcript.text.done" and "transcript.text.delta" in kinds
    assert set(kinds[:-1]) == {"transcript.text.delta"}
    done = events[-1]
    assert heard(done.text) >= 2
    deltas = "".join(e.delta for e in events[:-1])  # type: ignore[union-attr]
    assert deltas.strip() == done.text.strip()


@pytest.fixture(scope="session")
def containers(tmp_path_factory: pytest.TempPathFactory, speech_wav: Path) -> list[Path]:
    """The same speech as flac, ogg and mp3 (sox), m4a/AAC and webm/Opus (PyAV)."""
    folder = tmp_path_factory.mktemp("containers")
    clips = [make_speech(folder / suffix, suffix=f".{suffix}") for suffix in ("flac", "ogg", "mp3")]
    return [*clips, reencode(speech_wav, folder / "speech.m4a", "aac"),
            reencode(speech_wav, folder / "speech.webm", "libopus")]


async def test_every_common_container_decodes(running, containers: list[Path]) -> None:
    sdk = client(running, "lmstudio")
    for clip in containers:
        result = await sdk.audio.transcriptions.create(model="whisper", file=clip)
        assert heard(result.text) >= 2, (clip.suffix, result.text)


async def test_audio_and_chat_models_swap_with_one_slot(running, speech_wav: Path) -> None:
    sdk = client(running, "ollama")
    first = await sdk.audio.transcriptions.create(model="whisper", file=speech_wav)
    assert heard(first.text) >= 2
    assert states(running) == {"whisper": "ready", "tiny": "stopped"}
    reply = await sdk.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert reply.choices
    assert states(running) == {"whisper": "stopped", "tiny": "ready"}
    again = await sdk.audio.transcriptions.create(model="whisper", file=speech_wav)
    assert again.text == first.text
    assert states(running) == {"whisper": "ready", "tiny": "stopped"}


async def test_listed_as_an_audio_model_by_every_api(running) -> None:
    base = url_of(running, "lmstudio")
    ollama = url_of(running, "ollama")
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/v1/models") as resp:
            assert "whisper" in {m["id"] for m in (await resp.json())["data"]}
        async with http.get(base + "/api/v0/models/whisper") as resp:
            v0 = await resp.json()
        async with http.get(base + "/api/v1/models") as resp:
            v1 = {m["key"]: m for m in (await resp.json())["models"]}
        async with http.post(ollama + "/api/show", json={"model": "whisper"}) as resp:
            show = await resp.json()
        async with http.get(ollama + "/api/tags") as resp:
            tags = {m["name"]: m for m in (await resp.json())["models"]}
    assert (v0["type"], v0["arch"], v0["compatibility_type"]) == ("audio", "whisper",
                                                                  "ctranslate2")
    assert v1["whisper"]["type"] == "audio" and v1["whisper"]["format"] == "ctranslate2"
    assert v1["tiny"]["type"] == "llm"
    assert show["capabilities"] == ["audio"]
    assert tags["whisper:latest"]["size"] > 70_000_000


async def test_the_worker_is_supervised_like_llama_server(running, speech_wav: Path) -> None:
    await client(running, "lmstudio").audio.transcriptions.create(model="whisper",
                                                                 file=speech_wav)
    runner = running.service.manager.runner("whisper")
    assert runner is not None and runner.pid is not None
    assert any("model loaded" in line for line in runner.tail(50)), runner.tail(50)
    # (That the app itself never loads the engine is checked in a fresh interpreter by
    # tests/unit/core/test_core_plumbing.py: other tests here import PyAV themselves.)
    argv = runner.describe_argv()
    assert argv[1:3] == ["-m", launch.WORKER_MODULE]
    assert launch.WORKER_KEY_ENV not in " ".join(argv)  # the key is in the environment
    await running.service.manager.unload("whisper")
    assert states(running)["whisper"] == "stopped"


# --- bad input: OpenAI's error shape, and the runner lives on ---------------------------------


@BOTH_PORTS
async def test_bad_input_is_answered_in_openais_shape(running, api: str, speech_wav: Path,
                                                      speech: bytes) -> None:
    url = url_of(running, api) + "/v1/audio/transcriptions"
    status, body = await post_form(url, {"model": "whisper"},
                                   ("notes.txt", b"this is not audio at all\n" * 40))
    assert status == 400 and "could not decode audio" in body["error"]["message"]
    assert states(running)["whisper"] == "ready"
    status, body = await post_form(url, {"model": "whisper"}, None)
    assert status == 400 and body["error"]["param"] == "file"
    assert "'file'" in body["error"]["message"]
    status, body = await post_form(url, {"model": "nope"}, ("s.wav", speech))
    assert status == 404 and body["error"]["code"] == "model_not_found"
    status, body = await post_form(url, {"model": "tiny"}, ("s.wav", speech))
    assert status == 400 and body["error"]["code"] == "model_not_audio"
    assert "model 'tiny' is not an audio model" in body["error"]["message"]
    async with aiohttp.ClientSession() as http, http.post(
            url, data=b'{"model": "whisper"}',
            headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400
        assert "multipart/form-data" in (await resp.json())["error"]["message"]
    # The worker survived all of it.
    result = await client(running, api).audio.transcriptions.create(model="whisper",
                                                                   file=speech_wav)
    assert heard(result.text) >= 2


async def test_a_text_route_refuses_an_audio_model(running) -> None:
    sdk = client(running, "lmstudio")
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.chat.completions.create(model="whisper",
                                          messages=[{"role": "user", "content": "hi"}])
    assert "audio" in str(caught.value)
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.completions.create(model="whisper", prompt="hi", max_tokens=2)
    assert caught.value.code == "model_is_audio"
    assert states(running)["whisper"] == "stopped"  # nothing loaded for it


# The SDK marks translations deprecated; clients still call them.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_translation_needs_a_multilingual_model(running, speech_wav: Path) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client(running, "lmstudio").audio.translations.create(model="whisper",
                                                                   file=speech_wav)
    assert "English-only" in str(caught.value)


async def test_a_file_over_max_audio_bytes_is_413(audio_config, start_service,
                                                 speech_wav: Path) -> None:
    running = await start_service(audio_config(security={"max_audio_bytes": 4096}))
    sdk = client(running, "lmstudio")
    with pytest.raises(openai.APIStatusError) as caught:
        await sdk.audio.transcriptions.create(model="whisper", file=speech_wav)
    assert caught.value.status_code == 413
    assert "security.max_audio_bytes" in str(caught.value)
    # Just under the overall cap but a file over the limit: refused after parsing.
    url = url_of(running, "lmstudio") + "/v1/audio/transcriptions"
    status, body = await post_form(url, {"model": "whisper"}, ("s.wav", b"\0" * 5000))
    assert status == 413 and "5000 bytes" in body["error"]["message"]
    assert states(running)["whisper"] == "stopped"


async def test_a_worker_crash_mid_request_is_502_then_a_restart(running, long_speech: bytes,
                                                               speech_wav: Path) -> None:
    sdk = client(running, "lmstudio")
    await sdk.audio.transcriptions.create(model="whisper", file=speech_wav)  # loaded
    runner = running.service.manager.runner("whisper")
    assert runner is not None and runner.pid is not None
    pid = runner.pid
    url = url_of(running, "lmstudio") + "/v1/audio/transcriptions"
    request = asyncio.ensure_future(
        post_form(url, {"model": "whisper"}, ("long.wav", long_speech)))
    for _ in range(500):  # until the request reaches the worker
        if runner.inflight:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)  # the worker is decoding now
    os.kill(pid, signal.SIGKILL)
    status, body = await request
    assert status == 502, body
    assert "whisper" in body["error"]["message"]
    result = await sdk.audio.transcriptions.create(model="whisper", file=speech_wav)
    assert heard(result.text) >= 2
    assert runner.pid != pid


async def test_without_the_engine_the_error_names_the_extra(
        running, speech_wav: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = launch.importlib.util.find_spec

    def no_engine(name: str, *args: Any) -> Any:
        return None if name == "faster_whisper" else real_find_spec(name, *args)

    monkeypatch.setattr(launch.importlib.util, "find_spec", no_engine)
    with pytest.raises(openai.APIStatusError) as caught:
        await client(running, "ollama").audio.transcriptions.create(model="whisper",
                                                                   file=speech_wav)
    assert caught.value.status_code == 501
    body = caught.value.body
    assert isinstance(body, dict) and body.get("code") == "audio_engine_missing", body
    assert 'pip install "llamarunner[audio]"' in body["message"]
    # Chat models are untouched.
    reply = await client(running, "ollama").chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert reply.choices
