"""The JSON key path -> line locator."""

from __future__ import annotations

import pytest

from llamarunner.config import KeyLocator, KeyPath, render_path

TEXT = """\
{
  "a": 1,
  "b": {
    "c": [
      10,
      {"d": true},
      [1, 2]
    ],
    "e.f": "x"
  },
  "esc\\"aped": {"\\u00e9": null},
  "empty": {}, "list": []
}
"""


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ((), 1),
        (("a",), 2),
        (("b",), 3),
        (("b", "c"), 4),
        (("b", "c", 0), 5),
        (("b", "c", 1), 6),
        (("b", "c", 1, "d"), 6),
        (("b", "c", 2), 7),
        (("b", "c", 2, 1), 7),
        (("b", "e.f"), 9),
        (('esc"aped',), 11),
        (('esc"aped', "é"), 11),
        (("empty",), 12),
        (("list",), 12),
    ],
)
def test_exact_lines(path: KeyPath, line: int) -> None:
    assert KeyLocator(TEXT).exact_line(path) == line


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (("b", "missing"), 3),
        (("b", "c", 1, "missing", "deeper"), 6),
        (("nope",), 1),
        (("b", "c", 9), 4),
    ],
)
def test_missing_keys_point_at_the_nearest_ancestor(path: KeyPath, line: int) -> None:
    locator = KeyLocator(TEXT)
    assert locator.exact_line(path) is None
    assert locator.line(path) == line


def test_crlf_line_endings() -> None:
    text = '{\r\n  "a": {\r\n    "b": 1\r\n  }\r\n}\r\n'
    assert KeyLocator(text).line(("a", "b")) == 3


def test_leading_whitespace_before_root() -> None:
    assert KeyLocator('\n\n  {"a": 1}').line(("a",)) == 3


def test_duplicates_are_found_and_the_last_wins() -> None:
    text = '{\n  "m": {"x": 1},\n  "m": {"y": 2}\n}'
    locator = KeyLocator(text)
    assert locator.duplicates == [(("m",), 3)]
    assert locator.exact_line(("m",)) == 3
    assert locator.exact_line(("m", "x")) is None
    assert locator.exact_line(("m", "y")) == 3


def test_same_key_in_different_objects_is_not_a_duplicate() -> None:
    assert KeyLocator('{"a": {"k": 1}, "b": {"k": 2}}').duplicates == []


@pytest.mark.parametrize("text", ["", "{", '{"a": ', '{"a" 1}', "[1, 2", "{'a': 1}", "nul"])
def test_malformed_text_never_raises(text: str) -> None:
    locator = KeyLocator(text)
    locator.line(("a",))


def test_partial_results_survive_malformed_text() -> None:
    locator = KeyLocator('{\n  "a": 1,\n  "b": oops\n}')
    assert locator.exact_line(("a",)) == 2
    assert locator.exact_line(("b",)) == 3


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ((), ""),
        (("models", "gemma", "args", "port"), "models.gemma.args.port"),
        (("model_dirs", 1), "model_dirs[1]"),
        (("models", "m", "args", "lora", 0), "models.m.args.lora[0]"),
        (("models", "qwen2.5", "path"), 'models."qwen2.5".path'),
        (("models", "Qwen3 14B"), 'models."Qwen3 14B"'),
        (("models", ""), 'models.""'),
        (("models", "a/b"), "models.a/b"),
        (("args", "--port"), "args.--port"),
    ],
)
def test_render_path(path: KeyPath, shown: str) -> None:
    assert render_path(path) == shown
