"""Reading OpenAI's speech-to-text form: what routing needs, and OpenAI's errors."""

from __future__ import annotations

import aiohttp
import pytest

from llamarunner.core.errors import BadRequestError
from llamarunner.proxy.openai.audio import (
    AudioTooLargeError,
    boundary_of,
    read_audio_form,
    split_form,
)
from llamarunner.service.transcribe import encode_form


def _aiohttp_form(fields: dict[str, str], audio: bytes | None) -> tuple[bytes, str]:
    """The bytes aiohttp's own client sends, as a real client would."""
    form = aiohttp.FormData(default_to_multipart=True)
    for name, value in fields.items():
        form.add_field(name, value)
    if audio is not None:
        form.add_field("file", audio, filename="speech.wav", content_type="audio/wav")
    payload = form()

    class Sink:
        def __init__(self) -> None:
            self.data = bytearray()

        async def write(self, chunk: bytes) -> None:
            self.data += chunk

    import asyncio
    sink = Sink()
    asyncio.run(payload.write(sink))  # type: ignore[arg-type]
    return bytes(sink.data), payload.content_type


AUDIO = b"RIFF\x00\x00\r\n--not-a-boundary\r\n\x00WAVEfmt " + bytes(range(256)) * 4


def test_a_real_clients_form_is_read_without_touching_the_file() -> None:
    body, content_type = _aiohttp_form({"model": "whisper", "stream": "true"}, AUDIO)
    form = read_audio_form(body, content_type, max_audio_bytes=10_000)
    assert (form.model, form.file_bytes, form.stream) == ("whisper", len(AUDIO), True)


def test_the_apps_own_encoder_round_trips() -> None:
    body, content_type = encode_form({"model": "w", "language": "en"}, 'odd "name".wav', AUDIO)
    parts = split_form(body, boundary_of(content_type))
    by_name = {part.name: part for part in parts}
    assert bytes(by_name["file"].data) == AUDIO
    assert by_name["file"].filename == 'odd "name".wav'
    assert bytes(by_name["language"].data) == b"en"


@pytest.mark.parametrize(("fields", "audio", "param", "words"), [
    ({"model": "whisper"}, None, "file", "missing required field 'file'"),
    ({}, AUDIO, "model", "must provide a model"),
    ({"model": "  "}, AUDIO, "model", "must provide a model"),
])
def test_missing_fields_are_named(fields: dict[str, str], audio: bytes | None, param: str,
                                  words: str) -> None:
    body, content_type = _aiohttp_form(fields, audio)
    with pytest.raises(BadRequestError) as caught:
        read_audio_form(body, content_type, max_audio_bytes=10_000)
    assert caught.value.param == param
    assert words in caught.value.message


def test_a_file_over_the_limit_is_413() -> None:
    body, content_type = _aiohttp_form({"model": "whisper"}, AUDIO)
    with pytest.raises(AudioTooLargeError) as caught:
        read_audio_form(body, content_type, max_audio_bytes=len(AUDIO) - 1)
    assert caught.value.status == 413
    assert "security.max_audio_bytes" in caught.value.message


@pytest.mark.parametrize("content_type", [
    "application/json", "text/plain", "", "multipart/form-data",
])
def test_not_a_form_is_400(content_type: str) -> None:
    with pytest.raises(BadRequestError):
        boundary_of(content_type)


@pytest.mark.parametrize("body", [
    b"", b"no boundary here", b"--b\r\nContent-Disposition: form-data; name=\"model\"",
    b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nw",
    b"--bXX",
])
def test_malformed_bodies_are_400_not_a_crash(body: bytes) -> None:
    with pytest.raises(BadRequestError):
        read_audio_form(body, "multipart/form-data; boundary=b", max_audio_bytes=100)
