"""OpenAI's speech-to-text routes: check the upload, pick the audio model, relay to its worker.

The speech worker (audio/worker.py) speaks OpenAI's audio API itself, as llama-server
speaks the chat API, so the form is forwarded byte for byte. Only what routing needs is
read here: the `model` field, whether there is a `file`, its size and `stream`.
"""

from __future__ import annotations

import email.message
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from ...core.errors import BadRequestError, LlamaRunnerError
from ...library.whisper import AUDIO_KIND
from ..context import BACKEND
from ..relay import OpenAiSse, relay
from ..scopes import resolve_for
from ..security import current_settings

TRANSCRIPTIONS_PATH: Final = "/v1/audio/transcriptions"
TRANSLATIONS_PATH: Final = "/v1/audio/translations"
_MULTIPART: Final = "multipart/form-data"
# Form fields other than the file are short; a longer one is not OpenAI's form.
_MAX_FIELD_BYTES: Final = 64 * 1024


class AudioTooLargeError(LlamaRunnerError):
    status = 413
    code = "request_too_large"
    error_type = "invalid_request_error"


@dataclass(frozen=True)
class FormPart:
    """One part of a multipart form: its field name, file name (if a file) and bytes."""

    name: str
    filename: str | None
    data: memoryview


@dataclass(frozen=True)
class AudioForm:
    """What the proxy reads of a speech-to-text form; the worker reads the rest."""

    model: str
    file_bytes: int
    stream: bool


def boundary_of(content_type: str) -> str:
    """The multipart boundary of a Content-Type header; BadRequestError when it has none."""
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_type() != _MULTIPART:
        raise BadRequestError(
            "send the audio as multipart/form-data with a 'file' field and a 'model' field, "
            f"as OpenAI's audio API takes it (this request is {message.get_content_type()})",
            param="file")
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise BadRequestError("the multipart/form-data request has no boundary parameter")
    return boundary


def split_form(body: bytes, boundary: str) -> list[FormPart]:
    """The parts of a multipart/form-data body (RFC 7578), without copying the file."""
    delimiter = b"--" + boundary.encode("latin-1")
    view = memoryview(body)
    start = body.find(delimiter)
    if start < 0:
        raise BadRequestError("the multipart body does not start with its boundary")
    parts: list[FormPart] = []
    position = start + len(delimiter)
    while True:
        if body.startswith(b"--", position):
            return parts  # the closing delimiter
        if not body.startswith(b"\r\n", position):
            raise BadRequestError("the multipart body is malformed (a boundary line)")
        head_end = body.find(b"\r\n\r\n", position + 2)
        if head_end < 0:
            raise BadRequestError("the multipart body is malformed (a part has no headers)")
        headers = _part_headers(body[position + 2:head_end])
        data_start = head_end + 4
        data_end = body.find(b"\r\n" + delimiter, data_start)
        if data_end < 0:
            raise BadRequestError("the multipart body ends before its closing boundary")
        name, filename = _disposition(headers.get("content-disposition", ""))
        parts.append(FormPart(name, filename, view[data_start:data_end]))
        position = data_end + 2 + len(delimiter)


def _part_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("utf-8", "replace").split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def _disposition(value: str) -> tuple[str, str | None]:
    message = email.message.Message()
    message["content-disposition"] = value
    name = message.get_param("name", header="content-disposition")
    filename = message.get_filename()
    return (name if isinstance(name, str) else ""), filename


def read_audio_form(body: bytes, content_type: str, max_audio_bytes: int) -> AudioForm:
    """Check a speech-to-text form the way OpenAI does, before any model loads."""
    model = ""
    file_bytes: int | None = None
    stream = False
    for part in split_form(body, boundary_of(content_type)):
        if part.name == "file" and file_bytes is None:
            file_bytes = len(part.data)
            continue
        if len(part.data) > _MAX_FIELD_BYTES:
            raise BadRequestError(f"form field '{part.name}' is too long", param=part.name)
        text = bytes(part.data).decode("utf-8", "replace").strip()
        if part.name == "model":
            model = text
        elif part.name == "stream":
            stream = text.lower() == "true"
    if file_bytes is None:
        raise BadRequestError("missing required field 'file' (the audio to transcribe)",
                              param="file")
    if file_bytes > max_audio_bytes:
        raise AudioTooLargeError(
            f"audio file too large: {file_bytes} bytes, the limit is {max_audio_bytes} bytes "
            "(security.max_audio_bytes)")
    if not model:
        raise BadRequestError("you must provide a model parameter", param="model")
    return AudioForm(model=model, file_bytes=file_bytes, stream=stream)


class TranscriptSse(OpenAiSse):
    """The worker's transcript events, relayed unchanged: they end with the done event,
    or with an error event when decoding failed midway."""

    END_MARKERS = (b'"transcript.text.done"', b'data: {"type": "error"',
                   b'data: {"type":"error"', b'data: {"error"')


async def _relay_audio(request: web.Request, upstream_path: str) -> web.StreamResponse:
    backend = request.app[BACKEND]
    content_type = request.headers.get("Content-Type", "")
    boundary_of(content_type)  # not a form: say so before reading any of it
    body = await request.read()
    form = read_audio_form(body, content_type, current_settings(request).max_audio_bytes)
    name = resolve_for(request, form.model)
    async with await backend.manager.acquire(name, kind=AUDIO_KIND) as lease:
        return await relay(request, backend.http, lease, upstream_path, body,
                           TranscriptSse(), content_type=content_type)


async def transcriptions(request: web.Request) -> web.StreamResponse:
    return await _relay_audio(request, TRANSCRIPTIONS_PATH)


async def translations(request: web.Request) -> web.StreamResponse:
    return await _relay_audio(request, TRANSLATIONS_PATH)


def add_audio_routes(app: web.Application) -> None:
    app.router.add_post(TRANSCRIPTIONS_PATH, transcriptions)
    app.router.add_post(TRANSLATIONS_PATH, translations)
