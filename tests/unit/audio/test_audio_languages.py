"""Whisper's language table and how a client's `language` field is read."""

from __future__ import annotations

import pytest

from llamarunner.audio.languages import LANGUAGES, language_name, normalise_language


@pytest.mark.parametrize(("given", "code"), [
    ("en", "en"),
    ("EN", "en"),
    (" fr ", "fr"),
    ("English", "en"),
    ("GERMAN", "de"),
    ("haitian creole", "ht"),
    ("Haitian  Creole", "ht"),
    ("haitian", "ht"),       # Whisper's other names for the same language
    ("castilian", "es"),
    ("mandarin", "zh"),
    ("haw", "haw"),          # three-letter codes
    ("yue", "yue"),
    ("en-US", "en"),         # a tag with a region keeps its language
    ("pt_BR", "pt"),
    ("zh-Hans", "zh"),
    ("klingon", None),
    ("xx", None),
    ("xx-YY", None),
    ("", None),
    ("english-US", None),
])
def test_normalise_language(given: str, code: str | None) -> None:
    assert normalise_language(given) == code


@pytest.mark.parametrize(("code", "name"), [
    ("en", "english"), ("de", "german"), ("ht", "haitian creole"), ("jw", "javanese"),
    ("zz", "zz"),
])
def test_language_name(code: str, name: str) -> None:
    assert language_name(code) == name


def test_every_name_leads_back_to_its_code() -> None:
    assert len(LANGUAGES) == 100
    assert all(normalise_language(name) == code for code, name in LANGUAGES.items())
    assert len(set(LANGUAGES.values())) == len(LANGUAGES)


def test_the_table_matches_the_engine() -> None:
    tokenizer = pytest.importorskip("faster_whisper.tokenizer")
    assert set(LANGUAGES) == set(tokenizer._LANGUAGE_CODES)
