"""The child-output line splitter: chunks in, whole decoded lines out."""

from __future__ import annotations

import random

import pytest

from llamarunner.runner.process import _TOO_LONG, _LineSplitter


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


def reference_lines(stream: bytes, limit: int) -> list[str]:
    """What the splitter must produce, from the whole stream at once."""
    *complete, last = stream.split(b"\n")
    lines = [_TOO_LONG if len(raw) > limit
             else raw.decode("utf-8", "replace").rstrip("\r") for raw in complete]
    if last:
        lines.append(_TOO_LONG if len(last) > limit
                     else last.decode("utf-8", "replace").rstrip("\r"))
    return lines


@pytest.mark.parametrize("seed", range(40))
def test_any_cut_of_a_stream_gives_the_lines_of_the_whole(seed: int) -> None:
    # Log-like text with CRLF, multi-byte characters cut anywhere, a bad byte, and lines
    # both under and over the limit, fed in random pieces.
    rng = random.Random(seed)
    pieces = [b"srv  slot", b"caf\xc3\xa9", b" \xe2\x98\x83", b"\r", b"\xff", b"x" * 9]
    stream = b"".join(rng.choice(pieces) + (b"\n" if rng.random() < 0.4 else b"")
                      for _ in range(rng.randrange(1, 60)))
    cuts = sorted(rng.sample(range(len(stream) + 1), min(len(stream), rng.randrange(1, 12))))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert split(chunks, limit=24) == reference_lines(stream, 24)
