"""Transcribe an audio file through the Service, streamed as typed events (the desktop's
"Transcribe file…" window): the same route, worker and limits as an API request."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import mimetypes
import secrets
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from ..config import Config
from ..core.errors import LlamaRunnerError
from ..library.whisper import AUDIO_KIND
from ..proxy.openai.audio import TRANSCRIPTIONS_PATH
from ..proxy.relay import first_byte_deadline, open_upstream, upstream_error_message
from ..runner.manager import Lease, RunnerManager
from .sse_reader import sse_payloads

__all__ = [
    "TranscribeBackend",
    "TranscriptDelta",
    "TranscriptDone",
    "TranscriptError",
    "TranscriptEvent",
    "encode_form",
    "stream_transcript",
]

log = logging.getLogger(__name__)


class TranscribeBackend(Protocol):
    """What a transcription needs from the Service: the same calls an API request makes."""

    @property
    def manager(self) -> RunnerManager: ...

    @property
    def http(self) -> aiohttp.ClientSession: ...

    @property
    def config(self) -> Config: ...

    def resolve_model(self, requested: str) -> str: ...


@dataclass(frozen=True)
class TranscriptDelta:
    """One decoded segment: its text and where it lies in the audio (seconds)."""

    text: str
    start: float | None
    end: float | None


@dataclass(frozen=True)
class TranscriptDone:
    """The last event of a transcription that ended normally."""

    model: str
    text: str
    audio_seconds: float | None
    load_seconds: float = 0.0


@dataclass(frozen=True)
class TranscriptError:
    """The last event of a transcription that failed: a message for the user, and a code."""

    message: str
    code: str = "upstream_error"


TranscriptEvent = TranscriptDelta | TranscriptDone | TranscriptError


def encode_form(fields: Mapping[str, str], file_name: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with `fields` and the audio as `file`; (body, type)."""
    boundary = f"llamarunner-{secrets.token_hex(16)}"
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                     f"{value}\r\n".encode())
    quoted = file_name.replace("\\", "\\\\").replace('"', '\\"')
    mime = mimetypes.guess_type(file_name)[0] or "application/octet-stream"
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                 f'filename="{quoted}"\r\nContent-Type: {mime}\r\n\r\n'.encode())
    parts.append(data)
    parts.append(f"\r\n--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


async def stream_transcript(
    backend: TranscribeBackend, model: str, audio: Path, *, language: str | None = None,
) -> AsyncGenerator[TranscriptEvent, None]:
    """Transcribe `audio` with `model`, streaming TranscriptDelta events as segments are
    decoded, then exactly one TranscriptDone or TranscriptError.

    Cancelling the iterating task (a Stop button) closes the connection to the worker,
    which stops at its next segment.
    """
    try:
        name = backend.resolve_model(model)
        limit = backend.config.security.max_audio_bytes
        data = await asyncio.to_thread(_read_limited, audio, limit)
        if data is None:
            yield TranscriptError(f"{audio.name} is larger than {limit} bytes, the limit "
                                  "(security.max_audio_bytes)", "request_too_large")
            return
        fields = {"model": name, "response_format": "json", "stream": "true"}
        if language:
            fields["language"] = language
        body, content_type = encode_form(fields, audio.name, data)
        lease = await backend.manager.acquire(name, kind=AUDIO_KIND)
    except LlamaRunnerError as exc:
        yield TranscriptError(exc.message, exc.code)
        return
    except OSError as exc:
        yield TranscriptError(f"cannot read {audio}: {exc.strerror or exc}", "unreadable_file")
        return
    try:
        async with contextlib.aclosing(
                _relay(backend.http, lease, name, body, content_type)) as events:
            async for event in events:
                yield event
    finally:
        lease.release()


async def _relay(
    http: aiohttp.ClientSession, lease: Lease, name: str, body: bytes, content_type: str,
) -> AsyncGenerator[TranscriptEvent, None]:
    deadline = first_byte_deadline(lease)
    try:
        upstream = await open_upstream(http, lease, TRANSCRIPTIONS_PATH, body, deadline,
                                       content_type)
    except LlamaRunnerError as exc:
        yield TranscriptError(exc.message, exc.code)
        return
    try:
        if upstream.status != 200:
            message, _ = upstream_error_message(upstream.status, await upstream.read())
            yield TranscriptError(message)
            return
        async with contextlib.aclosing(sse_payloads(upstream, lease, deadline)) as payloads:
            async for payload in payloads:
                event = _event(payload, name, lease.load_wait)
                if event is not None:
                    yield event
                    if not isinstance(event, TranscriptDelta):
                        return
    except LlamaRunnerError as exc:  # the first-byte watchdog
        yield TranscriptError(exc.message, exc.code)
        return
    except aiohttp.ClientError as exc:
        yield TranscriptError(_broken(name, f": {exc}"))
        return
    finally:
        upstream.close()
    yield TranscriptError(_broken(name, ""))


def _read_limited(path: Path, limit: int) -> bytes | None:
    """The file's bytes, or None when it has more than `limit` (never reading them all)."""
    with open(path, "rb") as source:
        data = source.read(limit + 1)
    return None if len(data) > limit else data


def _event(payload: bytes, name: str, load_seconds: float) -> TranscriptEvent | None:
    try:
        data: Any = json.loads(payload)
    except ValueError:
        log.debug("ignoring a transcript event that is not JSON: %r", payload[:200])
        return None
    if not isinstance(data, dict):
        return None
    kind = data.get("type")
    if kind == "transcript.text.delta" and isinstance(data.get("delta"), str):
        return TranscriptDelta(data["delta"], _number(data.get("start")),
                               _number(data.get("end")))
    if kind == "transcript.text.done" and isinstance(data.get("text"), str):
        usage = data.get("usage")
        seconds = _number(usage.get("seconds")) if isinstance(usage, dict) else None
        return TranscriptDone(name, data["text"], seconds, load_seconds)
    error = data.get("error")
    if kind == "error" or error is not None:
        if isinstance(error, dict):
            return TranscriptError(str(error.get("message") or error),
                                   str(error.get("code") or "upstream_error"))
        return TranscriptError(str(error or data))
    return None


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _broken(name: str, detail: str) -> str:
    return (f"the speech worker for model '{name}' stopped in the middle of the "
            f"transcript{detail}; see the model's log")
