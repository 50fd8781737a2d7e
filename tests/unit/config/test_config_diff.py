"""diff_configs: which listeners, models and scheduler settings a config change touches."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from llamarunner.config import ConfigChanges, diff_configs, parse_config

BASE: dict[str, Any] = {
    "runtimes": {"gpu": {"path": "/opt/gpu/llama-server"}},
    "models": {
        "a": {"path": "/a.gguf", "args": {"ctx-size": 4096}},
        "b": {"path": "/b.gguf", "runtime": "gpu"},
        "c": {"path": "/c.gguf", "alias": ["see"]},
    },
}


def edit(change: Callable[[dict[str, Any]], None]) -> ConfigChanges:
    new = copy.deepcopy(BASE)
    change(new)
    return diff_configs(parse_config(BASE), parse_config(new))


def test_identical_configs_have_no_changes() -> None:
    changes = diff_configs(parse_config(BASE), parse_config(copy.deepcopy(BASE)))
    assert changes == ConfigChanges()
    assert changes.empty


def test_comments_are_not_changes() -> None:
    changes = edit(lambda d: d.update({"_comment": "hello"}))
    assert changes.empty


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d.update({"proxies": {"ollama": {"port": 11500}}}),
            ConfigChanges(listeners_changed=frozenset({"ollama"})),
        ),
        (
            lambda d: d.update({"proxies": {"lmstudio": {"enabled": False}}}),
            ConfigChanges(listeners_changed=frozenset({"lmstudio"})),
        ),
        (
            lambda d: d.update(
                {"proxies": {"ollama": {"host": "0.0.0.0"}, "lmstudio": {"port": 1235}}}
            ),
            ConfigChanges(listeners_changed=frozenset({"ollama", "lmstudio"})),
        ),
        (
            # Writing out a default explicitly changes nothing.
            lambda d: d.update({"proxies": {"ollama": {"port": 11434, "enabled": True}}}),
            ConfigChanges(),
        ),
        (
            lambda d: d["models"].update({"d": {"path": "/d.gguf"}}),
            ConfigChanges(models_added=frozenset({"d"})),
        ),
        (
            lambda d: d["models"].pop("a"),
            ConfigChanges(models_removed=frozenset({"a"})),
        ),
        (
            lambda d: d["models"].update({"z": d["models"].pop("a")}),
            ConfigChanges(models_added=frozenset({"z"}), models_removed=frozenset({"a"})),
        ),
        (
            lambda d: d["models"]["a"].update({"path": "/a2.gguf"}),
            ConfigChanges(models_restart=frozenset({"a"})),
        ),
        (
            lambda d: d["models"]["a"]["args"].update({"ctx-size": 8192}),
            ConfigChanges(models_restart=frozenset({"a"})),
        ),
        (
            lambda d: d["models"]["a"]["args"].update({"jinja": True}),
            ConfigChanges(models_restart=frozenset({"a"})),
        ),
        (
            # false means "flag left out", which is what the old config did already.
            lambda d: d["models"]["a"]["args"].update({"jinja": False}),
            ConfigChanges(),
        ),
        (
            # Same flag, different spelling: same command line.
            lambda d: d["models"]["a"].update({"args": {"--ctx-size": 4096}}),
            ConfigChanges(),
        ),
        (
            lambda d: d["models"]["a"].update({"runtime": "gpu"}),
            ConfigChanges(models_restart=frozenset({"a"})),
        ),
        (
            lambda d: d["runtimes"]["gpu"].update({"path": "/opt/new/llama-server"}),
            ConfigChanges(models_restart=frozenset({"b"})),
        ),
        (
            lambda d: d.update(
                {"runtimes": {"default": {"path": "/x/llama-server"}, **d["runtimes"]}}
            ),
            ConfigChanges(models_restart=frozenset({"a", "c"})),
        ),
        (
            lambda d: d["models"]["a"].update({"ttl": "1h"}),
            ConfigChanges(models_updated=frozenset({"a"})),
        ),
        (
            lambda d: d["models"]["c"].update({"alias": ["sea"]}),
            ConfigChanges(models_updated=frozenset({"c"})),
        ),
        (
            # A restart covers the ttl change too, so the model is listed once.
            lambda d: d["models"]["a"].update({"ttl": "1h", "path": "/a2.gguf"}),
            ConfigChanges(models_restart=frozenset({"a"})),
        ),
        (
            lambda d: d.update({"scheduler": {"max_loaded_models": 2}}),
            ConfigChanges(scheduler_changed=True),
        ),
        (
            lambda d: d.update({"scheduler": {"default_ttl": "10m"}}),
            ConfigChanges(scheduler_changed=True),
        ),
        (
            lambda d: d.update({"scheduler": {"default_ttl": "300s"}}),
            ConfigChanges(),
        ),
        (
            lambda d: d.update({"model_dirs": ["/models"]}),
            ConfigChanges(model_dirs_changed=True),
        ),
    ],
)
def test_changes(change: Callable[[dict[str, Any]], None], expected: ConfigChanges) -> None:
    changes = edit(change)
    assert changes == expected
    assert changes.empty is (expected == ConfigChanges())


def test_many_changes_at_once() -> None:
    def change(d: dict[str, Any]) -> None:
        d["proxies"] = {"ollama": {"enabled": False}}
        d["models"].pop("c")
        d["models"]["b"]["args"] = {"threads": 4}
        d["models"]["n"] = {"path": "/n.gguf"}
        d["scheduler"] = {"max_queue": 1}

    assert edit(change) == ConfigChanges(
        listeners_changed=frozenset({"ollama"}),
        models_added=frozenset({"n"}),
        models_removed=frozenset({"c"}),
        models_restart=frozenset({"b"}),
        scheduler_changed=True,
    )
