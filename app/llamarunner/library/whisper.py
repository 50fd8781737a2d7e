"""Recognise CTranslate2 Whisper model folders (speech to text) and read what they can do."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Final

__all__ = [
    "AUDIO_KIND",
    "WhisperInfo",
    "folder_size",
    "is_whisper_folder",
    "read_whisper_info",
]

# The model kind of a speech-to-text model, as the library, LM Studio's `type` and
# Ollama's capabilities name it.
AUDIO_KIND: Final = "audio"
_REQUIRED: Final = ("config.json", "model.bin")
# CTranslate2's converter writes one of these, depending on its version.
_TOKENIZERS: Final = ("tokenizer.json", "vocabulary.txt", "vocabulary.json")
# Keys only CTranslate2's Whisper converter writes into config.json.
_WHISPER_KEYS: Final = ("alignment_heads", "lang_ids", "suppress_ids_begin")
# Whisper's English-only checkpoints have 51864 tokens, multilingual ones 51865 or more
# (large-v3: 51866); CTranslate2 and faster-whisper decide "multilingual" the same way.
_MULTILINGUAL_VOCABULARY: Final = 51865
_MULTILINGUAL_EOT: Final = 50257
# A config.json bigger than this is not a CTranslate2 model's (tiny's is 2 KB).
_MAX_CONFIG_BYTES: Final = 1 << 20


@dataclass(frozen=True)
class WhisperInfo:
    """What the library shows of a Whisper model: languages, and bytes on disk."""

    multilingual: bool
    size: int
    mtime: float

    @property
    def languages(self) -> str:
        """A short description for lists: "English" or "multilingual"."""
        return "multilingual" if self.multilingual else "English"


def is_whisper_folder(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a folder holding a CTranslate2 Whisper model.

    Cheap: a few `stat`s and one small JSON read, so scans may ask of every folder.
    """
    folder = os.fspath(path)
    if not all(os.path.isfile(os.path.join(folder, name)) for name in _REQUIRED):
        return False
    if not any(os.path.isfile(os.path.join(folder, name)) for name in _TOKENIZERS):
        return False
    config = _read_config(folder)
    return config is not None and any(key in config for key in _WHISPER_KEYS)


def read_whisper_info(path: str | os.PathLike[str]) -> WhisperInfo:
    """Languages and size of the Whisper model in `path`; OSError when it cannot be read."""
    folder = os.fspath(path)
    size, mtime = folder_size(folder)
    return WhisperInfo(multilingual=_vocabulary_size(folder) >= _MULTILINGUAL_VOCABULARY,
                       size=size, mtime=mtime)


def folder_size(folder: str) -> tuple[int, float]:
    """Bytes of the files directly in `folder` and the newest modification time."""
    size, mtime = 0, 0.0
    with os.scandir(folder) as listing:
        for entry in listing:
            if entry.is_file():
                st = entry.stat()
                size += st.st_size
                mtime = max(mtime, st.st_mtime)
    return size, mtime


def _read_config(folder: str) -> dict[str, object] | None:
    path = os.path.join(folder, "config.json")
    try:
        if os.path.getsize(path) > _MAX_CONFIG_BYTES:
            return None
        with open(path, encoding="utf-8") as source:
            data = json.load(source)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _vocabulary_size(folder: str) -> int:
    """How many tokens the model's vocabulary has (0 when nothing says)."""
    text_path = os.path.join(folder, "vocabulary.txt")
    if os.path.isfile(text_path):
        with open(text_path, "rb") as source:
            return sum(1 for _ in source)
    json_path = os.path.join(folder, "vocabulary.json")
    if os.path.isfile(json_path):
        with open(json_path, encoding="utf-8") as source:
            data = json.load(source)
        if isinstance(data, list):
            return len(data)
    # tokenizer.json lacks the timestamp tokens, but config.json says where the special
    # tokens start: <|endoftext|> is 50256 in English-only checkpoints and 50257 in
    # multilingual ones, and CTranslate2 puts it after the space (220) in this list.
    config = _read_config(folder) or {}
    begin = config.get("suppress_ids_begin")
    if isinstance(begin, list) and begin and isinstance(begin[-1], int):
        return _MULTILINGUAL_VOCABULARY if begin[-1] >= _MULTILINGUAL_EOT else 0
    return 0
