"""The llama-server argv a runner builds from a model's config."""

from __future__ import annotations

from pathlib import Path

from llamarunner.config import ModelConfig
from llamarunner.runner.model_runner import build_command, pick_free_port, safe_file_name


def model(**args: object) -> ModelConfig:
    return ModelConfig(name="gemma", path="/models/g.gguf", runtime="default", args=args,
                       ttl=None, alias=())


def test_runner_owned_flags_come_first() -> None:
    argv = build_command(Path("/bin/llama-server"), model(), 4242)
    assert argv == ["/bin/llama-server", "--host", "127.0.0.1", "--port", "4242",
                    "-m", "/models/g.gguf", "--alias", "gemma"]


def test_user_args_follow_and_bare_flags_have_no_value() -> None:
    argv = build_command(Path("ls"), model(**{"ctx-size": 4096, "jinja": True, "t": 2}), 1)
    assert argv[-5:] == ["--ctx-size", "4096", "--jinja", "-t", "2"]


def test_a_user_alias_is_kept() -> None:
    argv = build_command(Path("ls"), model(alias="custom"), 1)
    assert argv.count("--alias") == 1
    assert argv[-2:] == ["--alias", "custom"]


def test_free_port_is_usable() -> None:
    assert 1024 <= pick_free_port() <= 65535


def test_log_file_names_are_safe() -> None:
    assert safe_file_name("org/model:7b") == "org_model_7b"
    assert safe_file_name("../../etc") == ".._.._etc"
