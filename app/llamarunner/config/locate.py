"""Map JSON key paths to the 1-based line numbers where they appear in the file text."""

from __future__ import annotations

import bisect
import contextlib
import json
import re

# A path into decoded JSON: object keys are str, list indexes are int. A tuple, not a dotted
# string, because model names such as "qwen2.5" contain dots.
KeyPath = tuple[str | int, ...]

_DECODER = json.JSONDecoder()
_WHITESPACE = re.compile(r"[ \t\n\r]*")
# Keys that need quotes when a path is shown, so `models."qwen2.5".path` stays unambiguous.
_PLAIN_KEY = re.compile(r"[^.\s\"\[\]]+")


def render_path(path: KeyPath) -> str:
    """Show a key path the way users read it: `models.gemma.args.port`, `model_dirs[1]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        shown = part if _PLAIN_KEY.fullmatch(part) else json.dumps(part, ensure_ascii=False)
        out += f".{shown}" if out else shown
    return out


def is_comment_key(key: object) -> bool:
    """Keys starting with "_" or "$" are comments (`_comment`, `$schema`): kept, not checked."""
    return isinstance(key, str) and key[:1] in ("_", "$")


class KeyLocator:
    """Scans JSON text once and answers "on which line is this key?".

    The scanner only tracks positions; the text is expected to be what `json.loads` accepted.
    On malformed text it keeps what it found so far rather than failing: line numbers are a
    help for the reader, never a reason to reject a config.
    """

    def __init__(self, text: str) -> None:
        self._text = text
        self._newlines = [m.start() for m in re.finditer("\n", text)]
        self._lines: dict[KeyPath, int] = {}
        self._duplicates: list[tuple[KeyPath, int]] = []
        with contextlib.suppress(ValueError, IndexError, RecursionError):
            self._scan_value(self._skip(0), ())

    @property
    def duplicates(self) -> list[tuple[KeyPath, int]]:
        """Keys written twice in one object (json.loads silently keeps the last), with lines."""
        return list(self._duplicates)

    def exact_line(self, path: KeyPath) -> int | None:
        """Line of exactly this key (or list item), or None when the text does not hold it."""
        return self._lines.get(path)

    def line(self, path: KeyPath) -> int | None:
        """Line of the key, else of its nearest ancestor: a missing key points at its parent."""
        for end in range(len(path), -1, -1):
            found = self._lines.get(path[:end])
            if found is not None:
                return found
        return None

    def _line_at(self, pos: int) -> int:
        # Newlines before pos, plus one: lines are 1-based like editors show them.
        return bisect.bisect_left(self._newlines, pos) + 1

    def _skip(self, pos: int) -> int:
        match = _WHITESPACE.match(self._text, pos)
        return match.end() if match else pos

    def _scan_value(self, pos: int, path: KeyPath) -> int:
        if not path:
            self._lines[()] = self._line_at(pos)
        char = self._text[pos]
        if char == "{":
            return self._scan_object(pos + 1, path)
        if char == "[":
            return self._scan_array(pos + 1, path)
        _, end = _DECODER.raw_decode(self._text, pos)
        return end

    def _scan_object(self, pos: int, path: KeyPath) -> int:
        text = self._text
        pos = self._skip(pos)
        if text[pos] == "}":
            return pos + 1
        seen: set[str] = set()
        while True:
            pos = self._skip(pos)
            if text[pos] != '"':
                raise ValueError("expected a key")
            key, end = _DECODER.raw_decode(text, pos)
            key_path = (*path, key)
            line = self._line_at(pos)
            if key in seen:
                self._duplicates.append((key_path, line))
                # The later value wins in json.loads; forget what the earlier one held.
                for old in [p for p in self._lines if p[: len(key_path)] == key_path]:
                    del self._lines[old]
            seen.add(key)
            self._lines[key_path] = line
            pos = self._skip(end)
            if text[pos] != ":":
                raise ValueError("expected ':'")
            pos = self._scan_value(self._skip(pos + 1), key_path)
            pos = self._skip(pos)
            if text[pos] == ",":
                pos += 1
                continue
            if text[pos] == "}":
                return pos + 1
            raise ValueError("expected ',' or '}'")

    def _scan_array(self, pos: int, path: KeyPath) -> int:
        text = self._text
        pos = self._skip(pos)
        if text[pos] == "]":
            return pos + 1
        index = 0
        while True:
            pos = self._skip(pos)
            item_path = (*path, index)
            self._lines[item_path] = self._line_at(pos)
            pos = self._skip(self._scan_value(pos, item_path))
            if text[pos] == ",":
                pos += 1
                index += 1
                continue
            if text[pos] == "]":
                return pos + 1
            raise ValueError("expected ',' or ']'")
