"""The child-output line splitter: chunks in, whole decoded lines out."""

from __future__ import annotations

import pytest

from llamarunner.runner.process import _LineSplitter


def split(chunks: list[bytes], limit: int = 16) -> list[str]:
    splitter = _LineSplitter(limit)
    lines: list[str] = []
    for chunk in chunks:
        lines += splitter.feed(chunk)
    return lines + splitter.finish()


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([b"a\nb\n"], ["a", "b"]),
        ([b"ab", b"c\nd", b"e\n"], ["abc", "de"]),
        ([b"no newline at end"[:10]], ["no newline"]),
        ([b"crlf\r\n"], ["crlf"]),
        ([b"\n\n"], ["", ""]),
        ([b"caf\xc3", b"\xa9\n"], ["caf\u00e9"]),  # a character split across reads
        ([b"bad \xff byte\n"], ["bad \ufffd byte"]),
        ([], []),
    ],
)
def test_lines(chunks: list[bytes], expected: list[str]) -> None:
    assert split(chunks) == expected


def test_over_long_line_in_one_chunk_is_replaced_by_a_note() -> None:
    assert split([b"short\n" + b"x" * 40 + b"\nafter\n"]) == [
        "short", "[line too long, dropped]", "after",
    ]


def test_over_long_line_across_chunks_is_noted_once_and_its_tail_skipped() -> None:
    chunks = [b"x" * 10, b"x" * 10, b"x" * 10, b"x" * 10 + b"\nnext\n"]
    assert split(chunks) == ["[line too long, dropped]", "next"]


def test_unterminated_over_long_tail_is_not_emitted() -> None:
    assert split([b"x" * 40]) == ["[line too long, dropped]"]
