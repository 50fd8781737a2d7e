"""Config for the library: sources on/off/moved, and settings-only model entries."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from llamarunner.config import (
    Config,
    ConfigChanges,
    ConfigValidationError,
    diff_configs,
    parse_config,
)
from llamarunner.config.schema import SourceConfig


def problems(data: Any) -> list[str]:
    with pytest.raises(ConfigValidationError) as caught:
        parse_config(data)
    return [str(p) for p in caught.value.problems]


# ---------------------------------------------------------------------------------------------
# sources


def test_sources_default_to_on_and_auto_detected() -> None:
    config = Config.default()
    assert dict(config.sources) == {"ollama": SourceConfig(), "lmstudio": SourceConfig()}
    assert config.sources["ollama"] == SourceConfig(enabled=True, path="")
    assert "sources" not in config.to_dict()  # files without the section stay without it


def test_sources_are_parsed() -> None:
    config = parse_config({
        "sources": {
            "_comment": "read in place",
            "ollama": {"enabled": False},
            "lmstudio": {"path": "~/LLM"},
        }
    })
    assert config.sources["ollama"] == SourceConfig(enabled=False, path="")
    assert config.sources["lmstudio"].path.endswith("/LLM")
    assert not config.sources["lmstudio"].path.startswith("~")


def test_blank_path_means_auto_detect() -> None:
    config = parse_config({"sources": {"ollama": {"path": "  "}}})
    assert config.sources["ollama"].path == ""


@pytest.mark.parametrize(
    ("data", "path", "fragment"),
    [
        ({"sources": []}, "sources", "must be an object"),
        ({"sources": {"gpt4all": {}}}, "sources.gpt4all", "unknown source"),
        ({"sources": {"ollama": True}}, "sources.ollama", "must be an object"),
        ({"sources": {"ollama": {"enabled": "yes"}}}, "sources.ollama.enabled", "true or false"),
        ({"sources": {"ollama": {"path": 5}}}, "sources.ollama.path", "folder path"),
        ({"sources": {"lmstudio": {"folder": "x"}}}, "sources.lmstudio.folder", "unknown key"),
    ],
)
def test_source_problems(data: dict[str, Any], path: str, fragment: str) -> None:
    (problem,) = problems(data)
    assert problem.startswith(f"{path}:") and fragment in problem


def test_sources_round_trip() -> None:
    data = {"sources": {"ollama": {"enabled": False, "path": "/srv/ollama"}}}
    config = parse_config(data)
    out = config.to_dict()
    assert out["sources"] == {
        "ollama": {"enabled": False, "path": "/srv/ollama"},
        "lmstudio": {"enabled": True, "path": ""},
    }
    assert parse_config(json.loads(json.dumps(out))) == config


def test_sources_section_kept_when_the_file_has_it() -> None:
    data = {"sources": {"_why": "explicit", "ollama": {"enabled": True}}}
    out = parse_config(data).to_dict()
    assert out["sources"]["_why"] == "explicit"
    assert out["sources"]["ollama"] == {"enabled": True, "path": ""}


# ---------------------------------------------------------------------------------------------
# models.<name> without a path


def test_entry_without_path_gives_settings() -> None:
    config = parse_config({
        "models": {
            "llama3.2:3b": {"args": {"ctx-size": 8192}, "ttl": "1h", "alias": ["fast"]},
            "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M": {"ttl": -1},
        }
    })
    model = config.models["llama3.2:3b"]
    assert model.settings_only and model.path == ""
    assert (dict(model.args), model.ttl, model.alias) == ({"ctx-size": 8192}, 3600.0, ("fast",))
    # Ollama names keep their slashes when they only give settings.
    assert config.models["hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M"].settings_only
    assert config.ttl_for("fast") == 3600.0


def test_entry_with_path_is_not_settings_only() -> None:
    config = parse_config({"models": {"m": {"path": "/m.gguf"}}})
    assert not config.models["m"].settings_only


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        # Nothing at all: surely a forgotten path.
        ({"models": {"m": {}}}, "models.m.path: missing"),
        # Slashes stay refused for models with a file of their own.
        ({"models": {"a/b": {"path": "/x.gguf"}}}, "cannot contain '/'"),
        # Backslashes are never part of a discovered name.
        ({"models": {"a\\b": {"ttl": 5}}}, "cannot contain"),
        ({"models": {"m": {"args": {"port": 1}}}}, "set by the runner"),
    ],
)
def test_settings_only_problems(data: dict[str, Any], fragment: str) -> None:
    assert any(fragment in p for p in problems(data))


def test_switched_off_defaults_are_kept_and_round_trip() -> None:
    data = {"models": {"llama3.2:3b": {"args": {"--jinja": False, "mmproj": None, "t": 4}}}}
    config = parse_config(data)
    model = config.models["llama3.2:3b"]
    assert dict(model.args) == {"t": 4}
    assert model.unset_args == ("jinja", "mmproj")
    out = config.to_dict()
    assert out["models"]["llama3.2:3b"]["args"] == {"jinja": False, "mmproj": False, "t": 4}
    assert "path" not in out["models"]["llama3.2:3b"]
    assert parse_config(json.loads(json.dumps(out))) == config


def test_false_args_of_models_with_a_path_still_vanish() -> None:
    config = parse_config({"models": {"m": {"path": "/m.gguf", "args": {"jinja": False}}}})
    assert config.models["m"].unset_args == ()
    assert config.to_dict()["models"]["m"]["args"] == {}


# ---------------------------------------------------------------------------------------------
# diff_configs


BASE: dict[str, Any] = {
    "models": {"llama3.2:3b": {"args": {"ctx-size": 8192}}},
}


def edit(change: Any) -> ConfigChanges:
    new = copy.deepcopy(BASE)
    change(new)
    return diff_configs(parse_config(BASE), parse_config(new))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.update({"sources": {"ollama": {"enabled": False}}}),
         ConfigChanges(sources_changed=True)),
        (lambda d: d.update({"sources": {"lmstudio": {"path": "/l"}}}),
         ConfigChanges(sources_changed=True)),
        # Writing the defaults out changes nothing.
        (lambda d: d.update({"sources": {"ollama": {"enabled": True, "path": ""}}}),
         ConfigChanges()),
        (lambda d: d["models"]["llama3.2:3b"]["args"].update({"ctx-size": 4096}),
         ConfigChanges(models_restart=frozenset({"llama3.2:3b"}))),
        (lambda d: d["models"]["llama3.2:3b"]["args"].update({"jinja": False}),
         ConfigChanges(models_restart=frozenset({"llama3.2:3b"}))),
        (lambda d: d["models"]["llama3.2:3b"].update({"ttl": "1h"}),
         ConfigChanges(models_updated=frozenset({"llama3.2:3b"}))),
    ],
)
def test_library_changes(change: Any, expected: ConfigChanges) -> None:
    assert edit(change) == expected


def test_library_changed_covers_sources_and_model_dirs() -> None:
    assert edit(lambda d: d.update({"sources": {"ollama": {"enabled": False}}})).library_changed
    assert edit(lambda d: d.update({"model_dirs": ["/m"]})).library_changed
    assert not edit(lambda d: d["models"]["llama3.2:3b"].update({"ttl": 5})).library_changed
    assert not ConfigChanges().library_changed
