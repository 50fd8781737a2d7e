"""Table tests for llama-server args normalisation and argv building."""

from __future__ import annotations

import math

import pytest

from llamarunner.config import ArgValue, ModelConfig, args_to_argv, normalise_args


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ({}, {}),
        ({"ctx-size": 4096}, {"ctx-size": 4096}),
        ({"--ctx-size": 4096}, {"ctx-size": 4096}),
        ({"-c": 4096}, {"c": 4096}),
        ({"jinja": True}, {"jinja": True}),
        ({"jinja": False}, {}),
        ({"jinja": None}, {}),
        ({"lora": []}, {}),
        ({"temp": 0.6}, {"temp": 0.6}),
        ({"chat-template": "chatml"}, {"chat-template": "chatml"}),
        ({"lora": ["a.gguf", "b.gguf"]}, {"lora": ["a.gguf", "b.gguf"]}),
        ({"override-kv": ["x=int:1", 2, 0.5]}, {"override-kv": ["x=int:1", 2, 0.5]}),
        ({"_comment": "ignored", "$note": 1, "threads": 2}, {"threads": 2}),
        # Underscores are kept as written: llama-server's own flags use dashes.
        ({"ctx_size": 1}, {"ctx_size": 1}),
    ],
)
def test_normalise_args(raw: dict[str, object], normalised: dict[str, ArgValue]) -> None:
    assert normalise_args(raw) == normalised


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"port": 8080}, "port: set by the runner, remove it"),
        ({"--port": 8080}, "--port: set by the runner, remove it"),
        ({"host": "0.0.0.0"}, "host: set by the runner, remove it"),
        ({"-m": "x.gguf"}, "-m: set by the runner, remove it"),
        ({"model": "x.gguf"}, "model: set by the runner, remove it"),
        ({"--": 1}, "--: not a flag name"),
        ({"ctx size": 1}, "cannot contain spaces"),
        ({"ctx-size=4096": True}, "cannot contain spaces or '='"),
        ({"ctx-size": 1, "--ctx-size": 2}, "--ctx-size: same flag as 'ctx-size'"),
        ({"x": {"a": 1}}, "x: must be a string, a number"),
        ({"lora": [True]}, "lora[0]: list items must be strings or numbers"),
        ({"lora": ["a", None]}, "lora[1]: list items must be strings or numbers"),
        ({"lora": [["a"]]}, "lora[0]: list items"),
        ({"temp": math.nan}, "temp: nan is not a finite number"),
        ({"temp": math.inf}, "temp: inf is not a finite number"),
    ],
)
def test_normalise_args_rejects(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as info:
        normalise_args(raw)
    assert message in str(info.value)


def test_normalise_args_reports_every_problem() -> None:
    with pytest.raises(ValueError) as info:
        normalise_args({"port": 1, "host": "h", "x": {}})
    text = str(info.value)
    assert "port:" in text and "host:" in text and "x:" in text


@pytest.mark.parametrize(
    ("args", "argv"),
    [
        ({}, []),
        ({"c": 4096}, ["-c", "4096"]),
        ({"ctx-size": 4096}, ["--ctx-size", "4096"]),
        ({"jinja": True}, ["--jinja"]),
        ({"fa": True}, ["--fa"]),
        ({"v": True}, ["-v"]),
        ({"jinja": False, "x": None}, []),
        ({"temp": 0.6}, ["--temp", "0.6"]),
        ({"temp": 1.0}, ["--temp", "1"]),
        ({"min-p": 0.05}, ["--min-p", "0.05"]),
        ({"n-predict": -1}, ["--n-predict", "-1"]),
        ({"alias": "my model"}, ["--alias", "my model"]),
        ({"lora": ["a.gguf", "b.gguf"]}, ["--lora", "a.gguf", "--lora", "b.gguf"]),
        ({"override-kv": [1, 2.5]}, ["--override-kv", "1", "--override-kv", "2.5"]),
        # Order is kept: some llama-server flags depend on it.
        (
            {"threads": 2, "jinja": True, "c": 512},
            ["--threads", "2", "--jinja", "-c", "512"],
        ),
        # Still correct when handed keys that were not normalised.
        ({"--ctx-size": 1, "-t": 2}, ["--ctx-size", "1", "-t", "2"]),
    ],
)
def test_args_to_argv(args: dict[str, ArgValue], argv: list[str]) -> None:
    assert args_to_argv(args) == argv


def test_args_to_argv_rejects_bools_in_lists() -> None:
    with pytest.raises(ValueError, match="inside a list"):
        args_to_argv({"lora": [True]})


def test_args_to_argv_rejects_non_finite() -> None:
    with pytest.raises(ValueError, match="finite"):
        args_to_argv({"temp": math.inf})


def test_normalise_then_build() -> None:
    args = normalise_args({"--ctx-size": 4096, "-t": 2, "jinja": True, "mlock": False})
    assert args_to_argv(args) == ["--ctx-size", "4096", "-t", "2", "--jinja"]


@pytest.mark.parametrize(
    ("args", "embeddings"),
    [
        ({}, False),
        ({"embedding": True}, True),
        ({"embeddings": True}, True),
        ({"embedding": "true"}, False),
        ({"jinja": True}, False),
    ],
)
def test_serves_embeddings(args: dict[str, ArgValue], embeddings: bool) -> None:
    assert ModelConfig(name="m", path="/m.gguf", args=args).serves_embeddings is embeddings
