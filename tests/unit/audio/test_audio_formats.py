"""Each of OpenAI's audio response formats, rendered from hand-made transcriptions."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from llamarunner.audio import formats
from llamarunner.audio.formats import Segment, Transcription, Word


def seg(index: int, start: float, end: float, text: str) -> Segment:
    return Segment(id=index, seek=index * 3000, start=start, end=end, text=text,
                   tokens=(50363, 383 + index, 50613), temperature=0.0,
                   avg_logprob=-0.25, compression_ratio=1.5, no_speech_prob=0.01)


TWO = Transcription(
    text="Hello there. General Kenobi.", language="en", duration=5.44, task="transcribe",
    segments=(seg(0, 0.0, 2.5, " Hello there."), seg(1, 2.5, 4.96, " General Kenobi.")),
)
EMPTY = Transcription(text="", language="en", duration=0.0, task="transcribe", segments=())
WORDS = replace(TWO, words=(Word(" Hello", 0.0, 0.5), Word(" there.", 0.5, 1.0)))


@pytest.mark.parametrize(("seconds", "srt", "vtt"), [
    (0.0, "00:00:00,000", "00:00:00.000"),
    (4.96, "00:00:04,960", "00:00:04.960"),
    (0.0006, "00:00:00,001", "00:00:00.001"),
    (0.0004, "00:00:00,000", "00:00:00.000"),
    (59.9996, "00:01:00,000", "00:01:00.000"),   # rounding carries into the minutes
    (61.25, "00:01:01,250", "00:01:01.250"),
    (3600 + 2 * 60 + 3.5, "01:02:03,500", "01:02:03.500"),
    (100 * 3600.0, "100:00:00,000", "100:00:00.000"),
    (-0.2, "00:00:00,000", "00:00:00.000"),
])
def test_timestamps(seconds: float, srt: str, vtt: str) -> None:
    assert formats.timestamp(seconds, ",") == srt
    assert formats.timestamp(seconds, ".") == vtt


@pytest.mark.parametrize(("response_format", "content_type", "body"), [
    ("text", formats.TEXT_TYPE, "Hello there. General Kenobi.\n"),
    ("srt", formats.TEXT_TYPE,
     "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n"
     "2\n00:00:02,500 --> 00:00:04,960\nGeneral Kenobi.\n\n"),
    ("vtt", formats.TEXT_TYPE,
     "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n\n"
     "00:00:02.500 --> 00:00:04.960\nGeneral Kenobi.\n\n"),
])
def test_text_formats(response_format: str, content_type: str, body: str) -> None:
    assert formats.render(TWO, response_format) == (body.encode(), content_type)


@pytest.mark.parametrize(("response_format", "body"), [
    ("text", "\n"),
    ("srt", ""),
    ("vtt", "WEBVTT\n\n"),
])
def test_text_formats_without_segments(response_format: str, body: str) -> None:
    assert formats.render(EMPTY, response_format)[0] == body.encode()


def test_json() -> None:
    body, content_type = formats.render(TWO, "json")
    assert content_type == "application/json"
    assert json.loads(body) == {"text": "Hello there. General Kenobi.",
                                "usage": {"type": "duration", "seconds": 6}}


@pytest.mark.parametrize(("duration", "seconds"), [(0.0, 0), (0.01, 1), (5.0, 5), (5.44, 6)])
def test_usage_bills_whole_seconds_rounded_up(duration: float, seconds: int) -> None:
    assert formats.usage(duration) == {"type": "duration", "seconds": seconds}


def test_verbose_json() -> None:
    body = json.loads(formats.render(TWO, "verbose_json")[0])
    assert body == {
        "task": "transcribe", "language": "english", "duration": 5.44,
        "text": "Hello there. General Kenobi.",
        "segments": [
            {"id": 0, "seek": 0, "start": 0.0, "end": 2.5, "text": " Hello there.",
             "tokens": [50363, 383, 50613], "temperature": 0.0, "avg_logprob": -0.25,
             "compression_ratio": 1.5, "no_speech_prob": 0.01},
            {"id": 1, "seek": 3000, "start": 2.5, "end": 4.96, "text": " General Kenobi.",
             "tokens": [50363, 384, 50613], "temperature": 0.0, "avg_logprob": -0.25,
             "compression_ratio": 1.5, "no_speech_prob": 0.01},
        ],
        "usage": {"type": "duration", "seconds": 6},
    }


def test_verbose_json_words_only_when_asked_and_without_leading_spaces() -> None:
    assert "words" not in formats.render_verbose_json(TWO)
    assert formats.render_verbose_json(WORDS)["words"] == [
        {"word": "Hello", "start": 0.0, "end": 0.5}, {"word": "there.", "start": 0.5, "end": 1.0}]
    assert formats.render_verbose_json(replace(EMPTY, words=()))["words"] == []


@pytest.mark.parametrize(("language", "task", "name"), [
    ("en", "transcribe", "english"),
    ("de", "transcribe", "german"),
    ("yue", "transcribe", "cantonese"),
    ("xx", "transcribe", "xx"),
    ("de", "translate", "english"),   # a translation's language is its output's
])
def test_verbose_json_language(language: str, task: formats.Task, name: str) -> None:
    result = replace(TWO, language=language, task=task)
    body = formats.render_verbose_json(result)
    assert (body["language"], body["task"]) == (name, task)


def test_verbose_json_floats_are_plain_floats() -> None:
    body = formats.render_verbose_json(replace(EMPTY, duration=3))
    assert isinstance(body["duration"], float)


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="xml"):
        formats.render(TWO, "xml")


def test_stream_events_add_up_to_the_text() -> None:
    deltas = [formats.delta_event(s, first=i == 0) for i, s in enumerate(TWO.segments)]
    done = formats.done_event(TWO)
    events = [json.loads(event.removeprefix(b"data: ")) for event in [*deltas, done]]
    assert all(event.startswith(b"data: ") and event.endswith(b"\n\n")
               for event in [*deltas, done])
    assert events == [
        {"type": "transcript.text.delta", "delta": "Hello there.", "start": 0.0, "end": 2.5},
        {"type": "transcript.text.delta", "delta": " General Kenobi.", "start": 2.5,
         "end": 4.96},
        {"type": "transcript.text.done", "text": "Hello there. General Kenobi.",
         "usage": {"type": "duration", "seconds": 6}},
    ]
    assert "".join(e["delta"] for e in events[:2]) == events[2]["text"]


def test_error_shapes() -> None:
    assert formats.error_body("bad", param="file", code="invalid_audio") == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "file",
                  "code": "invalid_audio"}}
    event = formats.error_event("gone", code="invalid_audio")
    assert json.loads(event.removeprefix(b"data: ")) == {
        "type": "error", "error": {"message": "gone", "type": "invalid_request_error",
                                   "code": "invalid_audio"}}


@pytest.mark.parametrize(("pieces", "text"), [
    ([" Hello.", " World."], "Hello. World."),
    ([], ""),
    ([" ", " Hi "], "Hi"),
])
def test_join_text(pieces: list[str], text: str) -> None:
    assert formats.join_text(pieces) == text


def test_non_ascii_text_is_sent_as_is() -> None:
    result = replace(TWO, text="Grüße", segments=(seg(0, 0.0, 1.0, " Grüße"),))
    assert formats.render(result, "json")[0].decode() == (
        '{"text": "Grüße", "usage": {"type": "duration", "seconds": 6}}')
    assert formats.render(result, "srt")[0].decode().splitlines()[2] == "Grüße"
