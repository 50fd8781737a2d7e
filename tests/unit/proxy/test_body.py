"""Request bodies to JSON objects: the fast parser, the standard library's leniency, errors."""

from __future__ import annotations

import math

import pytest

from llamarunner.core.errors import BadRequestError
from llamarunner.proxy.body import parse_json_object, required_model


@pytest.mark.parametrize(("raw", "expected"), [
    (b'{"model": "m", "stream": true}', {"model": "m", "stream": True}),
    (b' \n{"model": "m"}\n', {"model": "m"}),
    ('{"content": "héllo ☃"}'.encode(), {"content": "héllo ☃"}),
    (b'{"a": 1, "a": 2}', {"a": 2}),  # the last of a repeated key, as json.loads
    (b'{"n": 12345678901234567890}', {"n": 12345678901234567890}),  # fits 64 bits unsigned
    # Only the standard library takes these; they parse as they always did.
    ('{"model": "m"}'.encode("utf-16"), {"model": "m"}),
    (b'\xef\xbb\xbf{"model": "m"}', {"model": "m"}),
    (b'{"text": "\\ud800"}', {"text": "\ud800"}),
])
def test_bodies_that_parse(raw: bytes, expected: dict[str, object]) -> None:
    assert parse_json_object(raw) == expected


def test_non_finite_numbers_parse_as_the_standard_library_reads_them() -> None:
    data = parse_json_object(b'{"a": NaN, "b": Infinity, "c": 1e400}')
    assert math.isnan(data["a"]) and data["b"] == math.inf and data["c"] == math.inf


@pytest.mark.parametrize(("raw", "message"), [
    (b"", "the request body is empty; send a JSON object"),
    (b" \r\n\t", "the request body is empty; send a JSON object"),
    (b'{"model": "m",', "the request body is not valid JSON: Expecting property name"),
    (b'{"model": "\xff"}', "the request body is not valid JSON: 'utf-8' codec can't decode"),
    (b'["m"]', "the request body must be a JSON object"),
    (b'"m"', "the request body must be a JSON object"),
    (b"null", "the request body must be a JSON object"),
])
def test_bodies_that_are_refused_say_why(raw: bytes, message: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        parse_json_object(raw)
    assert caught.value.message.startswith(message)
    assert caught.value.status == 400


@pytest.mark.parametrize(("data", "message"), [
    ({}, "you must provide a model parameter"),
    ({"model": None}, "you must provide a model parameter"),
    ({"model": 7}, "'model' must be a non-empty string"),
    ({"model": " "}, "'model' must be a non-empty string"),
])
def test_model_is_required(data: dict[str, object], message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        required_model(data)
    assert required_model({"model": "m"}) == "m"
