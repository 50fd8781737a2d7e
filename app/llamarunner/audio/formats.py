"""A transcription rendered in each of OpenAI's audio response formats (pure, no I/O)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

from .languages import language_name

Task = Literal["transcribe", "translate"]

RESPONSE_FORMATS: Final = ("json", "text", "srt", "vtt", "verbose_json")
# OpenAI streams only the formats whose text can grow piece by piece.
STREAM_FORMATS: Final = ("json", "text")

JSON_TYPE: Final = "application/json"
TEXT_TYPE: Final = "text/plain; charset=utf-8"
EVENT_STREAM_TYPE: Final = "text/event-stream"


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float


@dataclass(frozen=True)
class Segment:
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: tuple[int, ...]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


@dataclass(frozen=True)
class Transcription:
    """What the engine heard; `words` is None unless word timestamps were asked for."""

    text: str
    language: str
    duration: float
    task: Task
    segments: tuple[Segment, ...]
    words: tuple[Word, ...] | None = None


def join_text(pieces: Iterable[str]) -> str:
    """The whole text from segment texts, which Whisper starts with a space."""
    return "".join(pieces).strip()


def usage(duration: float) -> dict[str, Any]:
    # OpenAI bills whole seconds, rounded up.
    return {"type": "duration", "seconds": max(0, math.ceil(duration))}


def render(result: Transcription, response_format: str) -> tuple[bytes, str]:
    """The response body and its content type for one of RESPONSE_FORMATS."""
    if response_format == "json":
        return _json_bytes(render_json(result)), JSON_TYPE
    if response_format == "verbose_json":
        return _json_bytes(render_verbose_json(result)), JSON_TYPE
    if response_format == "text":
        return render_text(result).encode(), TEXT_TYPE
    if response_format == "srt":
        return render_srt(result).encode(), TEXT_TYPE
    if response_format == "vtt":
        return render_vtt(result).encode(), TEXT_TYPE
    raise ValueError(f"unknown response format {response_format!r}")


def render_json(result: Transcription) -> dict[str, Any]:
    return {"text": result.text, "usage": usage(result.duration)}


def render_text(result: Transcription) -> str:
    return result.text + "\n"


def render_srt(result: Transcription) -> str:
    return "".join(
        f"{number}\n{timestamp(seg.start, ',')} --> {timestamp(seg.end, ',')}\n"
        f"{seg.text.strip()}\n\n"
        for number, seg in enumerate(result.segments, start=1)
    )


def render_vtt(result: Transcription) -> str:
    cues = "".join(
        f"{timestamp(seg.start, '.')} --> {timestamp(seg.end, '.')}\n{seg.text.strip()}\n\n"
        for seg in result.segments
    )
    return "WEBVTT\n\n" + cues


def render_verbose_json(result: Transcription) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": result.task,
        # A translation's language is its output's, always English (OpenAI's rule).
        "language": "english" if result.task == "translate" else language_name(result.language),
        "duration": float(result.duration),
        "text": result.text,
        "segments": [_segment(seg) for seg in result.segments],
    }
    if result.words is not None:
        body["words"] = [
            {"word": word.word.strip(), "start": float(word.start), "end": float(word.end)}
            for word in result.words
        ]
    body["usage"] = usage(result.duration)
    return body


def _segment(seg: Segment) -> dict[str, Any]:
    return {
        "id": seg.id,
        "seek": seg.seek,
        "start": float(seg.start),
        "end": float(seg.end),
        "text": seg.text,
        "tokens": list(seg.tokens),
        "temperature": float(seg.temperature),
        "avg_logprob": float(seg.avg_logprob),
        "compression_ratio": float(seg.compression_ratio),
        "no_speech_prob": float(seg.no_speech_prob),
    }


def timestamp(seconds: float, decimal_marker: str) -> str:
    """HH:MM:SS,mmm (SRT) or HH:MM:SS.mmm (WebVTT); hours grow past two digits."""
    # Whole milliseconds first, so that 59.9996 s becomes 00:01:00,000, never 00:00:60,000.
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{millis:03d}"


def delta_event(segment: Segment, *, first: bool) -> bytes:
    """One server-sent event carrying a newly decoded segment's text; the deltas add up
    to the done event's text, so only the first loses Whisper's leading space. `start`
    and `end` (seconds) are ours, not OpenAI's: with them a client can make subtitles
    from the stream (the desktop's Transcribe window does)."""
    return sse({"type": "transcript.text.delta",
                "delta": segment.text.lstrip() if first else segment.text,
                "start": round(segment.start, 3), "end": round(segment.end, 3)})


def done_event(result: Transcription) -> bytes:
    return sse({"type": "transcript.text.done", "text": result.text,
                "usage": usage(result.duration)})


def error_event(message: str, *, code: str | None,
                error_type: str = "invalid_request_error") -> bytes:
    return sse({"type": "error", "error": {"message": message, "type": error_type,
                                           "code": code}})


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + _json_bytes(payload) + b"\n\n"


def error_body(message: str, *, param: str | None = None, code: str | None = None,
               error_type: str = "invalid_request_error") -> dict[str, Any]:
    """OpenAI's error shape, which its SDKs turn into typed exceptions."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def _json_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode()
