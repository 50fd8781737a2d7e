"""Table tests for Ollama options, keep_alive and format mapping, errors in Ollama's words."""

from __future__ import annotations

import math
from typing import Any

import pytest

from llamarunner.proxy.ollama.options import (
    OllamaRequestError,
    go_type_error,
    load_args_from_options,
    parse_keep_alive,
    response_format_from,
    sampling_from_options,
)

# --- sampling ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (None, {}),
        ({}, {}),
        ({"temperature": 0.7}, {"temperature": 0.7}),
        ({"temperature": 0}, {"temperature": 0.0}),  # JSON ints are fine for floats
        ({"top_k": 40}, {"top_k": 40}),
        ({"top_k": 40.9}, {"top_k": 40}),  # Go truncates float64 -> int toward zero
        ({"top_k": -3.7}, {"top_k": -3}),
        ({"top_p": 0.9}, {"top_p": 0.9}),
        ({"min_p": 0.05}, {"min_p": 0.05}),
        ({"typical_p": 0.7}, {"typical_p": 0.7}),
        ({"repeat_penalty": 1.2}, {"repeat_penalty": 1.2}),
        ({"repeat_last_n": 33}, {"repeat_last_n": 33}),
        ({"repeat_last_n": 0}, {"repeat_last_n": 0}),
        ({"repeat_last_n": -1, "num_ctx": 4096}, {"repeat_last_n": 4096}),
        ({"presence_penalty": 1.5}, {"presence_penalty": 1.5}),
        ({"frequency_penalty": 1.0}, {"frequency_penalty": 1.0}),
        ({"seed": 42}, {"seed": 42}),
        ({"seed": -1}, {"seed": -1}),
        ({"stop": ["\n", "user:"]}, {"stop": ["\n", "user:"]}),
        ({"stop": "###"}, {"stop": ["###"]}),
        ({"stop": []}, {"stop": []}),
        ({"num_predict": 100}, {"max_tokens": 100}),
        ({"num_predict": -1}, {}),
        ({"num_predict": -2}, {}),
        ({"num_predict": 0}, {}),
        ({"num_keep": 5}, {"n_keep": 5}),
        ({"num_keep": -1}, {"n_keep": -1}),
        ({"num_keep": -7}, {"n_keep": -1}),
        ({"mirostat": 2}, {"mirostat": 2}),
        ({"mirostat_tau": 0.8}, {"mirostat_tau": 0.8}),
        ({"mirostat_eta": 0.6}, {"mirostat_eta": 0.6}),
        ({"tfs_z": 1.0}, {}),
        ({"temperature": None}, {}),  # null: Ollama keeps the default
        ({"num_ctx": 1024, "num_gpu": 1, "num_thread": 8, "num_batch": 2}, {}),
    ],
)
def test_sampling_mapping(options: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    body, _ = sampling_from_options(options)
    assert body == expected


def test_sampling_from_every_documented_option() -> None:
    # The "With options" example of Ollama's API documentation, every option set.
    options = {
        "num_keep": 5, "seed": 42, "num_predict": 100, "top_k": 20, "top_p": 0.9,
        "min_p": 0.0, "typical_p": 0.7, "repeat_last_n": 33, "temperature": 0.8,
        "repeat_penalty": 1.2, "presence_penalty": 1.5, "frequency_penalty": 1.0,
        "mirostat": 1, "mirostat_tau": 0.8, "mirostat_eta": 0.6, "penalize_newline": True,
        "stop": ["\n", "user:"], "numa": False, "num_ctx": 1024, "num_batch": 2, "num_gpu": 1,
        "main_gpu": 0, "low_vram": False, "vocab_only": False, "use_mmap": True,
        "use_mlock": False, "num_thread": 8,
    }
    body, ignored = sampling_from_options(options)
    assert body == {
        "n_keep": 5, "seed": 42, "max_tokens": 100, "top_k": 20, "top_p": 0.9, "min_p": 0.0,
        "typical_p": 0.7, "repeat_last_n": 33, "temperature": 0.8, "repeat_penalty": 1.2,
        "presence_penalty": 1.5, "frequency_penalty": 1.0, "mirostat": 1,
        "mirostat_tau": 0.8, "mirostat_eta": 0.6, "stop": ["\n", "user:"],
    }
    assert sorted(ignored) == ["low_vram", "numa", "penalize_newline", "use_mlock",
                               "use_mmap", "vocab_only"]
    assert all(isinstance(body[k], float) for k in ("top_p", "min_p", "temperature"))


@pytest.mark.parametrize(
    ("options", "ignored"),
    [
        ({"temprature": 0.5}, ["temprature"]),  # typo: Ollama only warns
        ({"foo": "bar", "temperature": 1}, ["foo"]),
        ({"foo": None}, ["foo"]),
        ({"tfs_z": 0.9}, ["tfs_z"]),
        ({"penalize_newline": False}, ["penalize_newline"]),
        ({"repeat_last_n": -1}, ["repeat_last_n"]),  # "whole context" but no num_ctx known
        ({"num_ctx": 2048}, []),  # load options are not "ignored": see load args
    ],
)
def test_ignored_options_are_reported(options: dict[str, Any], ignored: list[str]) -> None:
    _, got = sampling_from_options(options)
    assert got == ignored


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("temperature", "hot", 'option "temperature" must be of type float32'),
        ("temperature", True, 'option "temperature" must be of type float32'),
        ("temperature", [0.5], 'option "temperature" must be of type float32'),
        ("top_p", {}, 'option "top_p" must be of type float32'),
        ("min_p", "0.1", 'option "min_p" must be of type float32'),
        ("typical_p", False, 'option "typical_p" must be of type float32'),
        ("repeat_penalty", "1", 'option "repeat_penalty" must be of type float32'),
        ("presence_penalty", "x", 'option "presence_penalty" must be of type float32'),
        ("frequency_penalty", "x", 'option "frequency_penalty" must be of type float32'),
        ("mirostat_tau", "x", 'option "mirostat_tau" must be of type float32'),
        ("mirostat_eta", "x", 'option "mirostat_eta" must be of type float32'),
        ("tfs_z", "x", 'option "tfs_z" must be of type float32'),
        ("top_k", "40", 'option "top_k" must be of type integer'),
        ("top_k", True, 'option "top_k" must be of type integer'),
        ("top_k", math.inf, 'option "top_k" must be of type integer'),
        ("seed", "42", 'option "seed" must be of type integer'),
        ("num_predict", [1], 'option "num_predict" must be of type integer'),
        ("num_keep", "4", 'option "num_keep" must be of type integer'),
        ("repeat_last_n", {}, 'option "repeat_last_n" must be of type integer'),
        ("mirostat", "1", 'option "mirostat" must be of type integer'),
        ("num_ctx", "4096", 'option "num_ctx" must be of type integer'),
        ("num_gpu", False, 'option "num_gpu" must be of type integer'),
        ("num_thread", "8", 'option "num_thread" must be of type integer'),
        ("num_batch", "512", 'option "num_batch" must be of type integer'),
        ("main_gpu", "0", 'option "main_gpu" must be of type integer'),
        ("penalize_newline", 1, 'option "penalize_newline" must be of type boolean'),
        ("use_mmap", "yes", 'option "use_mmap" must be of type boolean'),
        ("numa", 0, 'option "numa" must be of type boolean'),
        ("low_vram", "no", 'option "low_vram" must be of type boolean'),
        ("use_mlock", 1, 'option "use_mlock" must be of type boolean'),
        ("stop", 5, 'option "stop" must be of type array'),
        ("stop", {"a": 1}, 'option "stop" must be of type array'),
        ("stop", ["a", 1], 'option "stop" must be of an array of strings'),
        ("stop", [None], 'option "stop" must be of an array of strings'),
    ],
)
def test_option_type_errors(key: str, value: object, message: str) -> None:
    with pytest.raises(OllamaRequestError) as info:
        sampling_from_options({key: value})
    assert str(info.value) == message
    assert info.value.message == message
    # The same options fail the same way when the route asks for load arguments.
    with pytest.raises(OllamaRequestError, match="must be of"):
        load_args_from_options({key: value})


def test_options_must_be_an_object() -> None:
    with pytest.raises(OllamaRequestError, match="cannot unmarshal array into Go struct field"):
        sampling_from_options(["temperature"])  # type: ignore[arg-type]


def test_request_error_is_a_value_error() -> None:
    assert issubclass(OllamaRequestError, ValueError)


# --- load args ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (None, {}),
        ({"temperature": 0.1}, {}),
        ({"num_ctx": 8192}, {"ctx-size": 8192}),
        ({"num_ctx": 8192.0}, {"ctx-size": 8192}),
        ({"num_gpu": 99}, {"n-gpu-layers": 99}),
        ({"num_gpu": 0}, {"n-gpu-layers": 0}),  # 0 = CPU only, a real choice
        ({"num_gpu": -1}, {}),  # Ollama: decide dynamically
        ({"num_thread": 8}, {"threads": 8}),
        ({"num_thread": 0}, {}),  # Ollama: let the runtime decide
        ({"num_batch": 256}, {"batch-size": 256}),
        ({"num_ctx": 0, "num_batch": -5}, {}),
        ({"main_gpu": 1}, {"main-gpu": 1}),
        ({"num_ctx": 1024, "num_gpu": 1, "num_thread": 8, "num_batch": 2, "foo": 1},
         {"ctx-size": 1024, "n-gpu-layers": 1, "threads": 8, "batch-size": 2}),
    ],
)
def test_load_args(options: dict[str, Any] | None, expected: dict[str, int]) -> None:
    assert load_args_from_options(options) == expected


# --- keep_alive --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        (0, 0.0),
        (0.0, 0.0),
        (300, 300.0),
        (1.5, 1.5),
        (-1, math.inf),
        (-0.5, math.inf),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1h", 3600.0),
        ("300ms", 0.3),
        ("10s", 10.0),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("1s500ms", 1.5),
        ("2h45m30.5s", 9930.5),
        ("100us", 0.0001),
        ("100µs", 0.0001),
        ("100μs", 0.0001),
        ("250ns", 2.5e-7),
        ("+5m", 300.0),
        ("0", 0.0),
        ("0s", 0.0),
        ("-1m", math.inf),
        ("-1s", math.inf),
        ("-5m30s", math.inf),
        ("300", 300.0),  # bare number in a string: seconds, like OLLAMA_KEEP_ALIVE
        ("-1", math.inf),
        ("2.5", 2.5),
        (" 60 ", 60.0),
    ],
)
def test_parse_keep_alive(value: object, seconds: float | None) -> None:
    got = parse_keep_alive(value)
    if seconds is None:
        assert got is None
    else:
        assert got == pytest.approx(seconds)
        assert isinstance(got, float)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", 'time: invalid duration ""'),
        ("abc", 'time: invalid duration "abc"'),
        (".s", 'time: invalid duration ".s"'),
        ("-", 'time: invalid duration "-"'),
        ("5x", 'time: unknown unit "x" in duration "5x"'),
        ("5M", 'time: unknown unit "M" in duration "5M"'),
        ("5 m", 'time: unknown unit " m" in duration "5 m"'),
        ("1h-30m", 'time: unknown unit "h-" in duration "1h-30m"'),
        ("1h30", 'time: missing unit in duration "1h30"'),
        ("9999999999h", 'time: invalid duration "9999999999h"'),
        (True, "unsupported duration type: 'bool'"),
        (False, "unsupported duration type: 'bool'"),
        ({}, "unsupported duration type: 'map[string]interface {}'"),
        ([], "unsupported duration type: '[]interface {}'"),
        (math.nan, 'time: invalid duration "NaN"'),
    ],
)
def test_parse_keep_alive_rejects(value: object, message: str) -> None:
    with pytest.raises(OllamaRequestError) as info:
        parse_keep_alive(value)
    assert str(info.value) == message


# --- format ------------------------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("json", {"type": "json_object"}),
        (SCHEMA, {"type": "json_schema", "json_schema": {"name": "response", "schema": SCHEMA}}),
        ({}, {"type": "json_schema", "json_schema": {"name": "response", "schema": {}}}),
    ],
)
def test_response_format(value: object, expected: dict[str, Any] | None) -> None:
    assert response_format_from(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("xml", r'invalid format: "\"xml\""; expected "json" or a valid JSON Schema object'),
        ("JSON", r'invalid format: "\"JSON\""; expected "json" or a valid JSON Schema object'),
        (5, 'invalid format: "5"; expected "json" or a valid JSON Schema object'),
        (True, 'invalid format: "true"; expected "json" or a valid JSON Schema object'),
        (["json"], r'invalid format: "[\"json\"]"; expected "json" or a valid JSON Schema '
                   "object"),
    ],
)
def test_response_format_rejects(value: object, message: str) -> None:
    with pytest.raises(OllamaRequestError) as info:
        response_format_from(value)
    assert str(info.value) == message


# --- Go-style body type errors -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "go_type", "message"),
    [
        ("yes", "bool", "json: cannot unmarshal string into Go struct field "
                        "ChatRequest.stream of type bool"),
        (1, "bool", "json: cannot unmarshal number into Go struct field "
                    "ChatRequest.stream of type bool"),
        (1.5, "int", "json: cannot unmarshal number 1.5 into Go struct field "
                     "ChatRequest.stream of type int"),
        ([], "bool", "json: cannot unmarshal array into Go struct field "
                     "ChatRequest.stream of type bool"),
        ({}, "bool", "json: cannot unmarshal object into Go struct field "
                     "ChatRequest.stream of type bool"),
        (True, "string", "json: cannot unmarshal bool into Go struct field "
                         "ChatRequest.stream of type string"),
    ],
)
def test_go_type_error(value: object, go_type: str, message: str) -> None:
    assert str(go_type_error("ChatRequest", "stream", go_type, value)) == message
