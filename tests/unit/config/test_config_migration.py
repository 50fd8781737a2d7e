"""Conversion of the original llama-runner config format: nothing may be lost."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from llamarunner.config import args_to_argv, is_legacy, migrate_legacy, parse_config
from llamarunner.config.migration import legacy_key_path

# An old-format file as a user of the original project might have written it.
LEGACY: dict[str, Any] = {
    "$schema": "kept-as-is",
    "llama-runtimes": {
        "default": {"runtime": "llama-server"},
        "ik": {"runtime": "/opt/ik_llama/bin/llama-server", "supports_tools": False},
        "plain": "/usr/local/bin/llama-server",
        "broken": {"supports_tools": True},
    },
    "default_runtime": "/opt/fallback/llama-server",
    "concurrentRunners": 2,
    "proxies": {
        "ollama": {"enabled": False},
        "lmstudio": {"enabled": True, "api_key": "sk-local"},
    },
    "logging": {"prompt_logging_enabled": True},
    "audio": {
        "runtimes": {"whisper": {"runtime": "/opt/whisper/server"}},
        "models": {"tiny": {"model_path": "/m/ggml-tiny.bin", "runtime": "whisper"}},
    },
    "models": {
        "Mistral Small": {
            "model_path": "/m/mistral-small-q4.gguf",
            "llama_cpp_runtime": "default",
            "parameters": {
                "ctx_size": 16384,
                "gpu_layers": 99,
                "flash-attn": True,
                "cache-type-k": "q8_0",
                "temp": 0.15,
                "no_mmap": False,
                "jinja": True,
            },
        },
        "Phi 4 Mini": {
            "model_id": "phi-4-mini",
            "model_path": "/m/phi-4-mini.gguf",
            "llama_cpp_runtime": "ik",
            "has_tools": True,
            "parameters": {"ctx_size": 8192, "port": 8089, "threads": 6},
        },
        "Granite Embed": {
            "model_path": "/m/granite-embed.gguf",
            "parameters": {"embeddings": True, "pooling": "mean"},
        },
        "Via Fallback": {
            "model_path": "/m/fallback.gguf",
            "llama_cpp_runtime": "not-defined",
        },
        "org/name": {"model_path": "/m/org-name.gguf", "llama_cpp_runtime": "plain"},
        "Self Id": {"model_id": "Self Id", "model_path": "/m/self.gguf"},
        "Dup Id": {"model_id": "phi-4-mini", "model_path": "/m/dup.gguf"},
        "No Path": {"llama_cpp_runtime": "default", "parameters": {"ctx_size": 1}},
    },
}

EXPECTED: dict[str, Any] = {
    "proxies": {"ollama": {"enabled": False}, "lmstudio": {"enabled": True}},
    "runtimes": {
        "default": {"path": "llama-server"},
        "ik": {"path": "/opt/ik_llama/bin/llama-server"},
        "plain": {"path": "/usr/local/bin/llama-server"},
        "not-defined": {"path": "/opt/fallback/llama-server"},
    },
    "models": {
        "Mistral Small": {
            "path": "/m/mistral-small-q4.gguf",
            "runtime": "default",
            "args": {
                "ctx-size": 16384,
                "gpu-layers": 99,
                "flash-attn": True,
                "cache-type-k": "q8_0",
                "temp": 0.15,
                "no-mmap": False,
                "jinja": True,
            },
        },
        "Phi 4 Mini": {
            "path": "/m/phi-4-mini.gguf",
            "runtime": "ik",
            "args": {"ctx-size": 8192, "threads": 6},
            "alias": ["phi-4-mini"],
        },
        "Granite Embed": {
            "path": "/m/granite-embed.gguf",
            "runtime": "default",
            "args": {"embeddings": True, "pooling": "mean"},
        },
        "Via Fallback": {"path": "/m/fallback.gguf", "runtime": "not-defined"},
        "org-name": {"path": "/m/org-name.gguf", "runtime": "plain", "alias": ["org/name"]},
        "Self Id": {"path": "/m/self.gguf", "runtime": "default"},
        "Dup Id": {"path": "/m/dup.gguf", "runtime": "default"},
    },
    "scheduler": {"max_loaded_models": 2},
    "$schema": "kept-as-is",
    "_legacy": {
        "llama-runtimes": {
            "ik": {"supports_tools": False},
            "broken": {"supports_tools": True},
        },
        "proxies": {"lmstudio": {"api_key": "sk-local"}},
        "models": {
            "Phi 4 Mini": {"has_tools": True, "parameters": {"port": 8089}},
            "Dup Id": {"model_id": "phi-4-mini"},
            "No Path": {"llama_cpp_runtime": "default", "parameters": {"ctx_size": 1}},
        },
        "logging": {"prompt_logging_enabled": True},
        "audio": {
            "runtimes": {"whisper": {"runtime": "/opt/whisper/server"}},
            "models": {"tiny": {"model_path": "/m/ggml-tiny.bin", "runtime": "whisper"}},
        },
    },
}


def test_sample_migrates_exactly() -> None:
    assert migrate_legacy(LEGACY) == EXPECTED


def test_migrated_sample_is_valid_and_means_the_same() -> None:
    config = parse_config(migrate_legacy(LEGACY))
    assert config.proxies["ollama"].enabled is False
    assert config.proxies["ollama"].port == 11434
    assert config.proxies["lmstudio"].port == 1234
    assert config.scheduler.max_loaded_models == 2
    phi = config.models["Phi 4 Mini"]
    assert config.runtimes[phi.runtime].path == "/opt/ik_llama/bin/llama-server"
    assert config.resolve_model("phi-4-mini") is phi
    assert config.resolve_model("org/name") is config.models["org-name"]
    assert config.models["Granite Embed"].serves_embeddings
    fallback = config.models["Via Fallback"]
    assert config.runtimes[fallback.runtime].path == "/opt/fallback/llama-server"
    assert config.to_dict()["_legacy"] == EXPECTED["_legacy"]


def old_runner_argv(parameters: dict[str, Any]) -> list[str]:
    """What the original runner appended to its command line for `parameters`."""
    argv: list[str] = []
    for key, value in parameters.items():
        if key == "port":
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv += [flag] if value else []
        else:
            argv += [flag, str(value)]
    return argv


@pytest.mark.parametrize("name", ["Mistral Small", "Phi 4 Mini", "Granite Embed"])
def test_command_line_matches_the_old_runner(name: str) -> None:
    config = parse_config(migrate_legacy(LEGACY))
    assert args_to_argv(config.models[name].args) == old_runner_argv(
        LEGACY["models"][name]["parameters"]
    )


def _leaves(node: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    if isinstance(node, dict) and node:
        return [leaf for k, v in node.items() for leaf in _leaves(v, (*path, k))]
    return [(path, node)]


def test_every_old_value_survives_somewhere() -> None:
    migrated_text = json.dumps(migrate_legacy(LEGACY))
    for path, value in _leaves(LEGACY):
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            assert json.dumps(value) in migrated_text, path
    kept = migrate_legacy(LEGACY)["_legacy"]
    # Booleans are too common to find by text; check the ones that had no new home.
    homeless = ("supports_tools", "has_tools", "prompt_logging_enabled")
    for path, value in _leaves(LEGACY):
        if isinstance(value, bool) and path[-1] in homeless:
            node = kept
            for part in path:
                node = node[part]
            assert node == value


def test_input_is_not_changed() -> None:
    before = copy.deepcopy(LEGACY)
    migrate_legacy(LEGACY)
    assert before == LEGACY


@pytest.mark.parametrize(
    ("old", "expected"),
    [
        ({"llama-runtimes": {}}, {"runtimes": {"default": {"path": "llama-server"}}}),
        (
            {"llama-runtimes": {}, "default_runtime": "/x/llama-server"},
            {"runtimes": {"default": {"path": "/x/llama-server"}}},
        ),
        (
            # "default" exists, nothing falls back: the setting is kept, not dropped.
            {"llama-runtimes": {"default": "/a"}, "default_runtime": "/b"},
            {"runtimes": {"default": {"path": "/a"}}, "_legacy": {"default_runtime": "/b"}},
        ),
        (
            {"llama-runtimes": {"default": "/a"}, "default_runtime": "/a"},
            {"runtimes": {"default": {"path": "/a"}}},
        ),
        (
            {"llama-runtimes": [], "concurrentRunners": 0},
            {
                "runtimes": {"default": {"path": "llama-server"}},
                "_legacy": {"llama-runtimes": [], "concurrentRunners": 0},
            },
        ),
        (
            {"default_runtime": 5},
            {"runtimes": {"default": {"path": "llama-server"}}, "_legacy": {"default_runtime": 5}},
        ),
        (
            {"concurrentRunners": True},
            {
                "runtimes": {"default": {"path": "llama-server"}},
                "_legacy": {"concurrentRunners": True},
            },
        ),
        (
            {"concurrentRunners": 1, "proxies": {"other": {"enabled": True}, "_c": 1}},
            {
                "proxies": {"_c": 1},
                "runtimes": {"default": {"path": "llama-server"}},
                "scheduler": {"max_loaded_models": 1},
                "_legacy": {"proxies": {"other": {"enabled": True}}},
            },
        ),
        (
            {"concurrentRunners": 1, "_legacy": {"earlier": 1}, "_note": "x"},
            {
                "runtimes": {"default": {"path": "llama-server"}},
                "scheduler": {"max_loaded_models": 1},
                "_note": "x",
                "_legacy": {"earlier": 1},
            },
        ),
    ],
)
def test_top_level_cases(old: dict[str, Any], expected: dict[str, Any]) -> None:
    migrated = migrate_legacy(old)
    expected = {"models": {}, **expected}
    assert migrated == expected
    parse_config(migrated)


@pytest.mark.parametrize(
    ("parameters", "args", "kept"),
    [
        ({"ctx_size": 1}, {"ctx-size": 1}, None),
        ({"--ctx-size": 1}, {"ctx-size": 1}, None),
        ({"host": "0.0.0.0", "model": "x"}, {}, {"host": "0.0.0.0", "model": "x"}),
        ({"m": "x", "port": 1}, {}, {"m": "x", "port": 1}),
        ({"ctx_size": 1, "ctx-size": 2}, {"ctx-size": 1}, {"ctx-size": 2}),
        ({"rope": {"a": 1}}, {}, {"rope": {"a": 1}}),
        ({"lora": ["a", "b"]}, {"lora": ["a", "b"]}, None),
        ({"lora": [True]}, {}, {"lora": [True]}),
        ({"x": None, "y": False}, {"x": None, "y": False}, None),
    ],
)
def test_parameters_cases(
    parameters: dict[str, Any], args: dict[str, Any], kept: dict[str, Any] | None
) -> None:
    migrated = migrate_legacy({"models": {"m": {"model_path": "/m", "parameters": parameters}}})
    assert migrated["models"]["m"]["args"] == args
    if kept is None:
        assert "_legacy" not in migrated
    else:
        assert migrated["_legacy"] == {"models": {"m": {"parameters": kept}}}
    parse_config(migrated)


def test_parameters_that_are_not_an_object_are_kept() -> None:
    migrated = migrate_legacy({"models": {"m": {"model_path": "/m", "parameters": [1]}}})
    assert migrated["models"]["m"]["args"] == {}
    assert migrated["_legacy"] == {"models": {"m": {"parameters": [1]}}}


def test_renamed_model_does_not_take_an_existing_name() -> None:
    migrated = migrate_legacy(
        {"models": {"a/b": {"model_path": "/1"}, "a-b": {"model_path": "/2"}}}
    )
    assert migrated["models"]["a-b-2"] == {"path": "/1", "runtime": "default", "alias": ["a/b"]}
    assert migrated["models"]["a-b"] == {"path": "/2", "runtime": "default"}
    parse_config(migrated)


def test_model_id_equal_to_another_models_name_is_kept_aside() -> None:
    migrated = migrate_legacy(
        {"models": {"a": {"model_path": "/1", "model_id": "b"}, "b": {"model_path": "/2"}}}
    )
    assert "alias" not in migrated["models"]["a"]
    assert migrated["_legacy"] == {"models": {"a": {"model_id": "b"}}}
    parse_config(migrated)


@pytest.mark.parametrize(
    ("data", "legacy"),
    [
        ({}, False),
        ([], False),
        ("x", False),
        ({"models": {}}, False),
        ({"models": {"m": {"path": "/m"}}}, False),
        # A new-format file with one stray old key is a mistake to report, not to convert.
        ({"models": {"m": {"path": "/m", "model_id": "x"}}}, False),
        ({"llama-runtimes": {}}, True),
        ({"default_runtime": "llama-server"}, True),
        ({"concurrentRunners": 1}, True),
        ({"models": {"m": {"model_path": "/m"}}}, True),
        ({"models": {"m": {"model_path": "/m", "parameters": {}}}}, True),
        (LEGACY, True),
        (EXPECTED, False),
    ],
)
def test_is_legacy(data: object, legacy: bool) -> None:
    assert is_legacy(data) is legacy


@pytest.mark.parametrize(
    ("path", "old"),
    [
        (("runtimes", "ik", "path"), ("llama-runtimes", "ik", "runtime")),
        (("runtimes", "ik"), ("llama-runtimes", "ik")),
        (("models", "m", "path"), ("models", "m", "model_path")),
        (("models", "m", "runtime"), ("models", "m", "llama_cpp_runtime")),
        (("models", "m", "args", "ctx size"), ("models", "m", "parameters", "ctx size")),
        (("models", "m", "alias", 0), ("models", "m", "model_id")),
        (("models", "m", "ttl"), ("models", "m")),
        (("models", "m"), ("models", "m")),
        (("scheduler", "max_loaded_models"), ("concurrentRunners",)),
        (("proxies", "ollama", "enabled"), ("proxies", "ollama", "enabled")),
    ],
)
def test_legacy_key_path(path: tuple[str | int, ...], old: tuple[str | int, ...]) -> None:
    assert legacy_key_path(path) == old
