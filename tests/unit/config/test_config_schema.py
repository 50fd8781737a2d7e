"""Validation rules of the config schema: every rule reports its key path and line."""

from __future__ import annotations

import json
import math
import os
import pickle
import textwrap
from typing import Any

import pytest

from llamarunner.config import (
    Config,
    ConfigSyntaxError,
    ConfigValidationError,
    ModelConfig,
    Problem,
    ProxyConfig,
    RuntimeConfig,
    SchedulerConfig,
    defaults,
    parse_config,
)

GEMMA = "/abs/path/gemma-3-270m-q4_k_m.gguf"

SAMPLE = """\
{
  "proxies": {
    "ollama":   {"enabled": true, "host": "127.0.0.1", "port": 11434},
    "lmstudio": {"enabled": true, "host": "127.0.0.1", "port": 1234}
  },
  "runtimes": {"default": {"path": "llama-server"}},
  "models": {
    "gemma-3-270m": {
      "path": "/abs/path/gemma-3-270m-q4_k_m.gguf",
      "runtime": "default",
      "args": {"ctx-size": 4096, "threads": 2, "jinja": true},
      "ttl": "5m"
    }
  },
  "model_dirs": [],
  "scheduler": {"max_loaded_models": 1, "default_ttl": "5m", "max_queue": 64,
                "load_timeout": "120s", "stop_grace": "5s"}
}
"""


def parse_text(text: str) -> Config:
    return parse_config(json.loads(text), text=text, file="cfg.json")


def problems_of(text: str) -> list[Problem]:
    with pytest.raises(ConfigValidationError) as info:
        parse_text(text)
    return info.value.problems


def test_empty_object_is_the_default_config() -> None:
    config = parse_config({})
    assert config == Config.default()
    assert config.proxies == {
        "ollama": ProxyConfig(True, "127.0.0.1", 11434, "0.13.0"),
        "lmstudio": ProxyConfig(True, "127.0.0.1", 1234),
    }
    assert config.runtimes == {"default": RuntimeConfig("llama-server")}
    assert config.models == {}
    assert config.model_dirs == ()
    assert config.scheduler == SchedulerConfig(1, 300.0, 64, 120.0, 5.0)


def test_defaults_module_matches_the_schema() -> None:
    config = Config.default()
    assert config.proxies["ollama"].port == defaults.DEFAULT_OLLAMA_PORT
    assert config.proxies["lmstudio"].port == defaults.DEFAULT_LMSTUDIO_PORT
    assert config.scheduler.default_ttl == defaults.DEFAULT_TTL


def test_sample_config_parses() -> None:
    config = parse_text(SAMPLE)
    model = config.models["gemma-3-270m"]
    assert model == ModelConfig(
        name="gemma-3-270m",
        path=GEMMA,
        runtime="default",
        args={"ctx-size": 4096, "threads": 2, "jinja": True},
        ttl=300.0,
        alias=(),
    )
    assert not model.serves_embeddings
    assert config.scheduler.load_timeout == 120.0
    assert config.ttl_for("gemma-3-270m") == 300.0


def test_model_defaults_and_ttl_inheritance() -> None:
    config = parse_config(
        {
            "scheduler": {"default_ttl": "10m"},
            "models": {
                "a": {"path": "/a.gguf"},
                "b": {"path": "/b.gguf", "ttl": -1, "alias": ["bee", "b2"]},
                "c": {"path": "/c.gguf", "ttl": 0},
                "d": {"path": "/d.gguf", "ttl": None},
            },
        }
    )
    a = config.models["a"]
    assert (a.runtime, a.args, a.ttl, a.alias) == ("default", {}, None, ())
    assert config.ttl_for("a") == 600.0
    assert config.ttl_for("b") == math.inf
    assert config.ttl_for("bee") == math.inf
    assert config.ttl_for("c") == 0.0
    assert config.ttl_for("d") == 600.0
    assert config.ttl_for("not-configured") == 600.0
    assert config.resolve_model("b2") is config.models["b"]
    assert config.resolve_model("nope") is None


def test_paths_expand_home() -> None:
    config = parse_config(
        {
            "model_dirs": ["~/models", "/abs"],
            "runtimes": {"gpu": {"path": "~/bin/llama-server"}},
            "models": {"m": {"path": "~/m.gguf", "runtime": "gpu"}},
        }
    )
    home = os.path.expanduser("~")
    assert config.model_dirs == (os.path.join(home, "models"), "/abs")
    assert config.runtimes["gpu"].path == os.path.join(home, "bin", "llama-server")
    assert config.runtimes["default"].path == "llama-server"
    assert config.models["m"].path == os.path.join(home, "m.gguf")


def test_comment_keys_are_allowed_everywhere() -> None:
    data = {
        "$schema": "https://example.invalid/schema.json",
        "_comment": "top",
        "proxies": {"_c": 1, "ollama": {"$c": 2}},
        "runtimes": {"_c": 1, "default": {"_c": 2, "path": "llama-server"}},
        "models": {"_c": "x", "m": {"_why": "fast", "path": "/m.gguf", "args": {"_c": 1}}},
        "scheduler": {"_c": 1},
    }
    config = parse_config(data)
    assert list(config.models) == ["m"]
    assert config.models["m"].args == {}


def test_embeddings_flag() -> None:
    config = parse_config({"models": {"e": {"path": "/e.gguf", "args": {"--embeddings": True}}}})
    assert config.models["e"].serves_embeddings


# (file text, dotted path, 1-based line, message fragment)
RULES: list[tuple[str, str, int, str]] = [
    ('{\n  "prxies": {}\n}', "prxies", 2, "unknown key (did you mean 'proxies'?)"),
    ('{\n  "wat": 1\n}', "wat", 2, "unknown key (known keys:"),
    ('{\n  "proxies": []\n}', "proxies", 2, "must be an object"),
    ('{"proxies": {\n  "vllm": {}\n}}', "proxies.vllm", 2, "unknown proxy"),
    ('{"proxies": {\n  "ollama": 5\n}}', "proxies.ollama", 2, "must be an object"),
    (
        '{"proxies": {"ollama": {\n  "port": -1\n}}}',
        "proxies.ollama.port",
        2,
        "between 0 and 65535",
    ),
    (
        '{"proxies": {"ollama": {\n  "port": 65536\n}}}',
        "proxies.ollama.port",
        2,
        "between 0 and 65535, not 65536",
    ),
    ('{"proxies": {"ollama": {\n  "port": "11434"\n}}}', "proxies.ollama.port", 2, "whole number"),
    ('{"proxies": {"ollama": {\n  "port": 11434.0\n}}}', "proxies.ollama.port", 2, "whole number"),
    ('{"proxies": {"ollama": {\n  "port": true\n}}}', "proxies.ollama.port", 2, "whole number"),
    ('{"proxies": {"ollama": {\n  "enabled": "yes"\n}}}', "proxies.ollama.enabled", 2, "true or"),
    ('{"proxies": {"ollama": {\n  "host": ""\n}}}', "proxies.ollama.host", 2, "must not be empty"),
    ('{"proxies": {"ollama": {\n  "host": 1\n}}}', "proxies.ollama.host", 2, "must be a string"),
    ('{"proxies": {"lmstudio": {\n  "prot": 1\n}}}', "proxies.lmstudio.prot", 2, "'port'"),
    (
        '{"proxies": {\n  "ollama": {"port": 9000},\n  "lmstudio": {"port": 9000}\n}}',
        "proxies.lmstudio.port",
        3,
        "also used by proxies.ollama",
    ),
    ('{\n  "runtimes": 1\n}', "runtimes", 2, "must be an object"),
    ('{"runtimes": {\n  "gpu": {}\n}}', "runtimes.gpu.path", 2, "missing"),
    ('{"runtimes": {\n  "gpu": {"path": ""}\n}}', "runtimes.gpu.path", 2, "must not be empty"),
    ('{"runtimes": {\n  "gpu": {"exe": "x", "path": "x"}\n}}', "runtimes.gpu.exe", 2, "unknown"),
    ('{"runtimes": {\n  " ": {"path": "x"}\n}}', 'runtimes." "', 2, "needs a name"),
    ('{"runtimes": {\n  "gpu": "llama-server"\n}}', "runtimes.gpu", 2, "must be an object"),
    ('{\n  "models": []\n}', "models", 2, "must be an object"),
    ('{"models": {\n  "m": "x.gguf"\n}}', "models.m", 2, "must be an object"),
    ('{"models": {\n  "m": {}\n}}', "models.m.path", 2, "missing"),
    ('{"models": {"m": {\n  "path": ""\n}}}', "models.m.path", 2, "must not be empty"),
    ('{"models": {"m": {\n  "path": 5\n}}}', "models.m.path", 2, "must be a string"),
    ('{"models": {\n  "a/b": {"path": "x"}\n}}', "models.a/b", 2, "cannot contain '/'"),
    ('{"models": {\n  "a\\\\b": {"path": "x"}\n}}', "models.a\\b", 2, "cannot contain"),
    ('{"models": {\n  "": {"path": "x"}\n}}', 'models.""', 2, "needs a name"),
    ('{"models": {\n  "   ": {"path": "x"}\n}}', 'models."   "', 2, "needs a name"),
    ('{"models": {"m": {"path": "x",\n  "runtime": "gpu"\n}}}', "models.m.runtime", 2, "'gpu'"),
    ('{"models": {"m": {"path": "x",\n  "paht": "x"\n}}}', "models.m.paht", 2, "'path'"),
    ('{"models": {"m": {"path": "x",\n  "args": []\n}}}', "models.m.args", 2, "must be an object"),
    (
        '{"models": {"gemma": {"path": "x", "args": {\n  "port": 8080\n}}}}',
        "models.gemma.args.port",
        2,
        "set by the runner, remove it",
    ),
    (
        '{"models": {"m": {"path": "x", "args": {\n  "--host": "0.0.0.0"\n}}}}',
        "models.m.args.--host",
        2,
        "set by the runner",
    ),
    (
        '{"models": {"m": {"path": "x", "args": {\n  "-m": "y.gguf"\n}}}}',
        "models.m.args.-m",
        2,
        "set by the runner",
    ),
    (
        '{"models": {"m": {"path": "x", "args": {\n  "--model": "y"\n}}}}',
        "models.m.args.--model",
        2,
        "set by the runner",
    ),
    (
        '{"models": {"m": {"path": "x", "args": {\n  "lora": [\n    "a",\n    true\n]}}}}',
        "models.m.args.lora[1]",
        4,
        "strings or numbers",
    ),
    (
        '{"models": {"m": {"path": "x", "args": {\n  "x": {}\n}}}}',
        "models.m.args.x",
        2,
        "must be a string, a number",
    ),
    ('{"models": {"m": {"path": "x",\n  "ttl": "soon"\n}}}', "models.m.ttl", 2, "not a duration"),
    ('{"models": {"m": {"path": "x",\n  "ttl": true\n}}}', "models.m.ttl", 2, "not a duration"),
    ('{"models": {"m": {"path": "x",\n  "alias": "mm"\n}}}', "models.m.alias", 2, "list of names"),
    (
        '{"models": {"m": {"path": "x", "alias": [\n  "ok",\n  ""\n]}}}',
        "models.m.alias[1]",
        3,
        "non-empty name",
    ),
    (
        '{"models": {\n  "a": {"path": "x"},\n  "b": {"path": "y", "alias": ["a"]}\n}}',
        "models.b.alias[0]",
        3,
        "'a' is already the name of a model",
    ),
    (
        '{"models": {\n  "a": {"path": "x", "alias": ["z"]},\n  "b": {"path": "y",\n'
        '    "alias": ["q", "z"]}\n}}',
        "models.b.alias[1]",
        4,
        "already an alias of model 'a'",
    ),
    ('{\n  "model_dirs": "/models"\n}', "model_dirs", 2, "must be a list of folders"),
    ('{"model_dirs": [\n  "/a",\n  ""\n]}', "model_dirs[1]", 3, "folder path"),
    ('{"model_dirs": [\n  7\n]}', "model_dirs[0]", 2, "folder path"),
    ('{\n  "scheduler": 1\n}', "scheduler", 2, "must be an object"),
    ('{"scheduler": {\n  "max_loaded": 2\n}}', "scheduler.max_loaded", 2, "'max_loaded_models'"),
    (
        '{"scheduler": {\n  "max_loaded_models": 0\n}}',
        "scheduler.max_loaded_models",
        2,
        "must be 1 or more, not 0",
    ),
    ('{"scheduler": {\n  "max_loaded_models": 1.5\n}}', "scheduler.max_loaded_models", 2, "whole"),
    ('{"scheduler": {\n  "max_queue": -1\n}}', "scheduler.max_queue", 2, "0 or more, not -1"),
    ('{"scheduler": {\n  "default_ttl": "x"\n}}', "scheduler.default_ttl", 2, "not a duration"),
    ('{"scheduler": {\n  "load_timeout": 0\n}}', "scheduler.load_timeout", 2, "more than 0"),
    ('{"scheduler": {\n  "load_timeout": "0s"\n}}', "scheduler.load_timeout", 2, "more than 0"),
    ('{"scheduler": {\n  "stop_grace": -1\n}}', "scheduler.stop_grace", 2, "finite"),
    ('{"scheduler": {\n  "stop_grace": "x"\n}}', "scheduler.stop_grace", 2, "not a duration"),
    ('{"models": {\n  "m": {"path": "a"},\n  "m": {"path": "b"}\n}}', "models.m", 3, "twice"),
]


@pytest.mark.parametrize(("text", "path", "line", "message"), RULES)
def test_each_rule_reports_path_and_line(text: str, path: str, line: int, message: str) -> None:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    problem = problems[0]
    assert problem.path == path
    assert problem.line == line
    assert message in problem.message


@pytest.mark.parametrize(
    "data",
    [
        {"scheduler": {"max_queue": 0, "default_ttl": 0, "stop_grace": 0}},
        {"scheduler": {"load_timeout": -1}},  # never time out a load
        {"proxies": {"ollama": {"enabled": False}, "lmstudio": {"port": 11434}}},
        {"proxies": {"ollama": {"host": "127.0.0.1"}, "lmstudio": {"host": "::1", "port": 11434}}},
        {"proxies": {"ollama": {"port": 1}, "lmstudio": {"port": 65535}}},
        # 0 = any free port, so two of them do not clash.
        {"proxies": {"ollama": {"port": 0}, "lmstudio": {"port": 0}}},
        {"models": {"Qwen3 14B": {"path": "/q.gguf", "alias": ["qwen/qwen3-14b"]}}},
        {"models": {"qwen2.5:7b": {"path": "/q.gguf"}}},
        {"models": {"m": {"path": "/m.gguf", "alias": ["m", "m", "x"]}}},
        {"runtimes": {"gpu": {"path": "/opt/llama-server"}}},
    ],
)
def test_valid_edge_cases(data: dict[str, Any]) -> None:
    parse_config(data)


def test_alias_repeats_and_own_name_are_dropped() -> None:
    config = parse_config({"models": {"m": {"path": "/m.gguf", "alias": ["m", "x", "x"]}}})
    assert config.models["m"].alias == ("x",)


def test_every_problem_is_reported_together() -> None:
    text = textwrap.dedent(
        """\
        {
          "proxies": {
            "ollama": {"port": -5}
          },
          "models": {
            "gemma": {
              "path": "/g.gguf",
              "runtime": "gpu",
              "args": {
                "port": 8080,
                "ctx-size": 4096
              },
              "ttl": "later"
            }
          },
          "scheduler": {
            "max_loaded_models": 0
          },
          "extra": true
        }
        """
    )
    problems = problems_of(text)
    assert [(p.path, p.line) for p in problems] == [
        ("proxies.ollama.port", 3),
        ("models.gemma.runtime", 8),
        ("models.gemma.args.port", 10),
        ("models.gemma.ttl", 13),
        ("scheduler.max_loaded_models", 17),
        ("extra", 19),
    ]
    with pytest.raises(ConfigValidationError) as info:
        parse_config(json.loads(text), text=text, file="config.json")
    lines = str(info.value).splitlines()
    assert len(lines) == 6
    assert lines[2] == "config.json:10: models.gemma.args.port: set by the runner, remove it"
    assert info.value.file == "config.json"


def test_without_text_there_are_no_line_numbers() -> None:
    with pytest.raises(ConfigValidationError) as info:
        parse_config({"models": {"gemma": {"path": "x", "args": {"port": 1}}}}, file="c.json")
    (problem,) = info.value.problems
    assert problem == Problem("models.gemma.args.port", "set by the runner, remove it", None)
    assert str(problem) == "models.gemma.args.port: set by the runner, remove it"
    assert str(info.value) == "c.json: models.gemma.args.port: set by the runner, remove it"


@pytest.mark.parametrize("data", [[], "x", 1, None, True])
def test_top_level_must_be_an_object(data: object) -> None:
    with pytest.raises(ConfigValidationError) as info:
        parse_config(data, text=json.dumps(data))
    (problem,) = info.value.problems
    assert problem.path == ""
    assert problem.line == 1
    assert "JSON object" in problem.message
    assert str(info.value).startswith("config.json:1: the file must hold a JSON object")


def test_keys_with_dots_are_located() -> None:
    text = '{\n  "models": {\n    "qwen2.5": {\n      "path": "x",\n      "ttl": "x"\n    }\n  }\n}'
    (problem,) = problems_of(text)
    assert problem.path == 'models."qwen2.5".ttl'
    assert problem.key == ("models", "qwen2.5", "ttl")
    assert problem.line == 5


def test_repeated_comment_keys_are_fine() -> None:
    text = '{\n  "_comment": "a",\n  "_comment": "b"\n}'
    parse_text(text)


def test_to_dict_round_trips() -> None:
    config = parse_text(SAMPLE)
    again = parse_config(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert again.to_dict() == config.to_dict()


def test_to_dict_of_default_is_complete() -> None:
    assert Config.default().to_dict() == {
        "proxies": {
            "ollama": {"enabled": True, "host": "127.0.0.1", "port": 11434,
                       "version": "0.13.0"},
            "lmstudio": {"enabled": True, "host": "127.0.0.1", "port": 1234},
        },
        "runtimes": {"default": {"path": "llama-server"}},
        "models": {},
        "model_dirs": [],
        "scheduler": {
            "max_loaded_models": 1,
            "default_ttl": "5m",
            "max_queue": 64,
            "load_timeout": "2m",
            "stop_grace": "5s",
        },
    }


def test_to_dict_keeps_comment_keys_in_place() -> None:
    data = {
        "$schema": "s",
        "models": {
            "_c": "models comment",
            "m": {
                "_why": "fast",
                "path": "/m.gguf",
                "args": {"_c": 1, "--ctx-size": 8, "jinja": False, "lora": ["a"]},
                "ttl": "-1",
                "alias": ["mm"],
            },
        },
        "_legacy": {"logging": {"prompt_logging_enabled": False}},
    }
    out = parse_config(data).to_dict()
    assert next(iter(out)) == "$schema"
    assert out["_legacy"] == {"logging": {"prompt_logging_enabled": False}}
    assert out["models"]["_c"] == "models comment"
    model = out["models"]["m"]
    assert next(iter(model)) == "_why"
    assert model["args"] == {"_c": 1, "ctx-size": 8, "lora": ["a"]}
    assert model["ttl"] == "-1"
    assert model["alias"] == ["mm"]
    assert parse_config(out) == parse_config(data)


def test_to_dict_does_not_share_state() -> None:
    config = parse_config({"models": {"m": {"path": "/m", "args": {"lora": ["a"]}}}})
    out = config.to_dict()
    out["models"]["m"]["args"]["lora"].append("b")
    assert config.models["m"].args["lora"] == ["a"]


def test_raw_is_kept_but_not_compared() -> None:
    a = parse_config({"_comment": "a"})
    b = parse_config({"_comment": "b"})
    assert a == b
    assert a.raw == {"_comment": "a"}


def test_raw_is_a_copy() -> None:
    data: dict[str, Any] = {"models": {"m": {"path": "/m"}}}
    config = parse_config(data)
    data["models"]["m"]["path"] = "/changed"
    assert config.raw["models"]["m"]["path"] == "/m"


def test_errors_pickle() -> None:
    syntax = ConfigSyntaxError("c.json", 3, 4, "Expecting value")
    assert str(syntax) == "c.json:3:4: invalid JSON: Expecting value"
    assert str(pickle.loads(pickle.dumps(syntax))) == str(syntax)
    validation = ConfigValidationError("c.json", [Problem("a", "b", 2)])
    copy = pickle.loads(pickle.dumps(validation))
    assert copy.problems == validation.problems
    assert str(copy) == "c.json:2: a: b"


def test_ollama_version_is_configurable_and_checked() -> None:
    config = parse_config({"proxies": {"ollama": {"version": "0.9.1"}}})
    assert config.proxies["ollama"].version == "0.9.1"
    assert config.to_dict()["proxies"]["ollama"]["version"] == "0.9.1"
    with pytest.raises(ConfigValidationError, match=r"proxies.ollama.version: must look like"):
        parse_config({"proxies": {"ollama": {"version": "new"}}})
    with pytest.raises(ConfigValidationError, match=r"proxies.lmstudio.version"):
        parse_config({"proxies": {"lmstudio": {"version": "0.9.1"}}})


def test_chat_template_setting_parses_and_round_trips() -> None:
    config = parse_config({"models": {
        "g": {"path": "/g.gguf", "chat_template": "gemma"},
        "found": {"chat_template": "~/templates/mine.jinja"},
    }})
    assert config.models["g"].chat_template == "gemma"
    assert config.models["found"].settings_only
    assert config.models["found"].chat_template == "~/templates/mine.jinja"
    again = parse_config(json.loads(json.dumps(config.to_dict())))
    assert again == config


@pytest.mark.parametrize("value", ['""', "3", "null", '["gemma"]'])
def test_chat_template_must_be_a_name_or_path(value: str) -> None:
    text = '{"models": {"g": {"path": "/g.gguf", "chat_template": ' + value + "}}}"
    if value == "null":
        assert parse_text(text).models["g"].chat_template is None
        return
    problems = problems_of(text)
    assert [p.path for p in problems] == ["models.g.chat_template"]
