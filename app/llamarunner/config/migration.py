"""Convert a config.json of the original llama-runner project into this app's format."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import defaults
from .locate import KeyPath, is_comment_key

# Where the settings with no equivalent are kept; a comment key, so validation skips it.
LEGACY_KEY = "_legacy"

# Top-level keys only the old format had.
_LEGACY_TOP_KEYS = ("llama-runtimes", "default_runtime", "concurrentRunners")
# Model keys only the old format had, and the ones only the new one has.
_LEGACY_MODEL_KEYS = ("model_path", "llama_cpp_runtime", "parameters", "model_id")
_NEW_MODEL_KEYS = ("path", "runtime", "args")
# New model field -> the old key it came from, for line numbers in error messages.
_MODEL_FIELD_TO_LEGACY = {
    "path": "model_path",
    "runtime": "llama_cpp_runtime",
    "args": "parameters",
    "alias": "model_id",
}


def legacy_config_path() -> Path:
    """Where the old llama-runner kept its config, for offering an import."""
    return Path.home() / ".llama-runner" / "config.json"


def is_legacy(data: object) -> bool:
    """True when decoded JSON is in the old llama-runner format rather than this app's."""
    if not isinstance(data, Mapping):
        return False
    if any(key in data for key in _LEGACY_TOP_KEYS):
        return True
    models = data.get("models")
    if not isinstance(models, Mapping):
        return False
    entries = [entry for entry in models.values() if isinstance(entry, Mapping)]
    has_old = any(key in entry for entry in entries for key in _LEGACY_MODEL_KEYS)
    has_new = any(key in entry for entry in entries for key in _NEW_MODEL_KEYS)
    # A new-format file with one stray old key is a typo to report, not a file to convert.
    return has_old and not has_new


def legacy_key_path(path: KeyPath) -> KeyPath:
    """Where a key of the migrated config came from in the old file (best effort).

    Used to put line numbers of the user's old file on problems found after migration.
    """
    if len(path) >= 2 and path[0] == "runtimes":
        mapped: KeyPath = ("llama-runtimes", path[1])
        return (*mapped, "runtime") if path[2:3] == ("path",) else mapped
    if len(path) >= 3 and path[0] == "models":
        field = path[2]
        old = _MODEL_FIELD_TO_LEGACY.get(field) if isinstance(field, str) else None
        if old is None:
            return path[:2]
        if old == "parameters":
            return (*path[:2], old, *path[3:4])
        return (*path[:2], old)
    if path[:2] == ("scheduler", "max_loaded_models"):
        return ("concurrentRunners",)
    return path


def _keep(leftovers: dict[str, Any], where: KeyPath, value: Any) -> None:
    """Store `value` under `_legacy` at the place it had in the old file."""
    node = leftovers
    for part in where[:-1]:
        node = node.setdefault(str(part), {})
    node[str(where[-1])] = copy.deepcopy(value)


def _is_arg_value(value: object) -> bool:
    if value is None or isinstance(value, str | int | float):
        return True
    if isinstance(value, list):
        return all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in value)
    return False


def _unique_name(name: str, taken: set[str]) -> str:
    base = name.replace("/", "-").replace("\\", "-")
    candidate, counter = base, 2
    while candidate in taken:
        candidate = f"{base}-{counter}"
        counter += 1
    return candidate


class _Migration:
    """One conversion; holds the pieces while the old file is walked."""

    def __init__(self, old: Mapping[str, Any]) -> None:
        self.old = old
        self.leftovers: dict[str, Any] = {}
        self.runtimes: dict[str, dict[str, Any]] = {}
        fallback = old.get("default_runtime", defaults.DEFAULT_RUNTIME_PATH)
        if not isinstance(fallback, str) or not fallback.strip():
            _keep(self.leftovers, ("default_runtime",), fallback)
            fallback = defaults.DEFAULT_RUNTIME_PATH
        self.fallback_command: str = fallback
        self.fallback_used = False

    def run(self) -> dict[str, Any]:
        old = self.old
        out: dict[str, Any] = {}
        self._runtimes()
        proxies = self._proxies()
        models = self._models()
        if self.fallback_used or defaults.DEFAULT_RUNTIME_NAME not in self.runtimes:
            self.runtimes.setdefault(defaults.DEFAULT_RUNTIME_NAME, {"path": self.fallback_command})
        elif (
            "default_runtime" in old
            and self.fallback_command != self.runtimes[defaults.DEFAULT_RUNTIME_NAME]["path"]
        ):
            # Every runtime name resolved, so the fallback command is not used by anything
            # here; keep it so that nothing the user wrote disappears.
            _keep(self.leftovers, ("default_runtime",), old["default_runtime"])
        if proxies:
            out["proxies"] = proxies
        out["runtimes"] = self.runtimes
        out["models"] = models
        self._scheduler(out)
        handled = {*_LEGACY_TOP_KEYS, "proxies", "models", LEGACY_KEY}
        for key, value in old.items():
            if is_comment_key(key) and key != LEGACY_KEY:
                out[key] = copy.deepcopy(value)
            elif key not in handled:
                # logging, audio and anything else the old app knew and this one does not.
                _keep(self.leftovers, (key,), value)
        earlier = old.get(LEGACY_KEY)
        if isinstance(earlier, Mapping):
            self.leftovers = {**copy.deepcopy(dict(earlier)), **self.leftovers}
        elif earlier is not None:
            self.leftovers.setdefault(LEGACY_KEY, copy.deepcopy(earlier))
        if self.leftovers:
            out[LEGACY_KEY] = self.leftovers
        return out

    def _runtimes(self) -> None:
        raw = self.old.get("llama-runtimes", {})
        if not isinstance(raw, Mapping):
            _keep(self.leftovers, ("llama-runtimes",), raw)
            return
        for name, details in raw.items():
            if isinstance(details, str) and details.strip():
                self.runtimes[name] = {"path": details}
            elif (
                isinstance(details, Mapping)
                and isinstance(details.get("runtime"), str)
                and details["runtime"].strip()
            ):
                self.runtimes[name] = {"path": details["runtime"]}
                for key, value in details.items():
                    if key != "runtime":
                        _keep(self.leftovers, ("llama-runtimes", name, key), value)
            else:
                # The old app skipped such entries with a warning; keep them for the user.
                _keep(self.leftovers, ("llama-runtimes", name), details)

    def _runtime_for(self, key: object, where: KeyPath) -> str:
        if not isinstance(key, str) or not key.strip():
            _keep(self.leftovers, where, key)
            key = defaults.DEFAULT_RUNTIME_NAME
        if key not in self.runtimes:
            # The old manager ran `default_runtime` for a runtime name it did not know.
            self.runtimes[key] = {"path": self.fallback_command}
            self.fallback_used = True
        return key

    def _proxies(self) -> dict[str, Any]:
        raw = self.old.get("proxies")
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            _keep(self.leftovers, ("proxies",), raw)
            return {}
        out: dict[str, Any] = {}
        for name, entry in raw.items():
            if is_comment_key(name):
                out[name] = copy.deepcopy(entry)
            elif name in defaults.PROXY_NAMES and isinstance(entry, Mapping):
                shaped: dict[str, Any] = {}
                for key, value in entry.items():
                    if key in ("enabled", "host", "port") or is_comment_key(key):
                        shaped[key] = copy.deepcopy(value)
                    else:
                        _keep(self.leftovers, ("proxies", name, key), value)  # e.g. api_key
                out[name] = shaped
            else:
                _keep(self.leftovers, ("proxies", name), entry)
        return out

    def _models(self) -> dict[str, Any]:
        raw = self.old.get("models", {})
        if not isinstance(raw, Mapping):
            _keep(self.leftovers, ("models",), raw)
            return {}
        # Names first, so a model_id cannot become an alias that equals a later model's name.
        taken: set[str] = set()
        names: dict[str, str] = {}
        for name, entry in raw.items():
            if is_comment_key(name) or not self._runnable(entry):
                continue
            names[name] = _unique_name(name, taken | (set(raw) - {name}))
            taken.add(names[name])
        out: dict[str, Any] = {}
        for name, entry in raw.items():
            if is_comment_key(name):
                out[name] = copy.deepcopy(entry)
            elif name not in names:
                # Not a model the old app could start (no model_path); keep it as it was.
                _keep(self.leftovers, ("models", name), entry)
            else:
                out[names[name]] = self._model(name, names[name], entry, taken)
        return out

    @staticmethod
    def _runnable(entry: object) -> bool:
        return (
            isinstance(entry, Mapping)
            and isinstance(entry.get("model_path"), str)
            and bool(entry["model_path"].strip())
        )

    def _model(
        self, old_name: str, name: str, entry: Mapping[str, Any], taken: set[str]
    ) -> dict[str, Any]:
        where: KeyPath = ("models", old_name)
        model: dict[str, Any] = {"path": entry["model_path"]}
        model["runtime"] = self._runtime_for(
            entry.get("llama_cpp_runtime", defaults.DEFAULT_RUNTIME_NAME),
            (*where, "llama_cpp_runtime"),
        )
        aliases: list[str] = []
        if name != old_name:
            aliases.append(old_name)
        for key, value in entry.items():
            if key in ("model_path", "llama_cpp_runtime"):
                continue
            if key == "parameters":
                model["args"] = self._parameters(value, (*where, key))
            elif key == "model_id":
                if value == name or value in aliases:
                    continue  # already reachable under that name
                if isinstance(value, str) and value.strip() and value not in taken:
                    aliases.append(value)
                    taken.add(value)
                else:
                    # Empty, not a string, or already another model's name or alias.
                    _keep(self.leftovers, (*where, key), value)
            elif is_comment_key(key):
                model[key] = copy.deepcopy(value)
            else:
                _keep(self.leftovers, (*where, key), value)  # e.g. has_tools
        if aliases:
            model["alias"] = aliases
        return model

    def _parameters(self, raw: object, where: KeyPath) -> dict[str, Any]:
        if not isinstance(raw, Mapping):
            _keep(self.leftovers, where, raw)
            return {}
        args: dict[str, Any] = {}
        for key, value in raw.items():
            # The old runner wrote every parameter as "--" + key with "_" replaced by "-".
            flag = key.lstrip("-").replace("_", "-")
            owned = flag in defaults.RUNNER_OWNED_ARGS  # e.g. a fixed port for ik_llama
            if owned or flag in args or not flag or not _is_arg_value(value):
                _keep(self.leftovers, (*where, key), value)
            else:
                args[flag] = copy.deepcopy(value)
        return args

    def _scheduler(self, out: dict[str, Any]) -> None:
        if "concurrentRunners" not in self.old:
            return
        value = self.old["concurrentRunners"]
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            out["scheduler"] = {"max_loaded_models": value}
        else:
            _keep(self.leftovers, ("concurrentRunners",), value)


def migrate_legacy(data: Mapping[str, Any]) -> dict[str, Any]:
    """The old llama-runner config converted to this app's format; the input is not changed.

    The old format (llama-runner, `~/.llama-runner/config.json`) looked like::

        {"llama-runtimes": {"default": {"runtime": "llama-server", "supports_tools": true},
                            "older": "/opt/older/llama-server"},
         "default_runtime": "llama-server", "concurrentRunners": 1,
         "proxies": {"ollama": {"enabled": true}, "lmstudio": {"enabled": true, "api_key": null}},
         "logging": {"prompt_logging_enabled": false}, "audio": {...},
         "models": {"My Model": {"model_path": "/m/my-model.gguf", "llama_cpp_runtime": "older",
                                 "model_id": "my-model", "has_tools": true,
                                 "parameters": {"ctx_size": 8192, "no_mmap": true}}}}

    How each setting is carried over:

    - `llama-runtimes.NAME` (a command string, or `{"runtime": ...}`) -> `runtimes.NAME.path`.
    - `default_runtime` was the command used when a model's runtime name was not defined; such
      models get a runtime of that name pointing at that command, and "default" is created from
      it when missing.
    - `models.NAME.model_path` -> `path`, `llama_cpp_runtime` -> `runtime` (default "default").
    - `parameters` -> `args`, with "_" turned into "-" in flag names exactly as the old runner
      did when it built the command line (`ctx_size` -> `--ctx-size`).
    - `model_id` was the id the LM Studio API showed and accepted for the model, while the
      Ollama side and the old UI used the config key. The key stays the model's name (so
      existing clients and scripts keep working) and `model_id` becomes an alias, so requests
      using it still reach the model.
    - A model name containing "/" or "\\" (not allowed here) is renamed with "-" and the old
      name becomes an alias.
    - `concurrentRunners` -> `scheduler.max_loaded_models`. The old proxies used the fixed
      ports 11434 and 1234, which are this app's defaults.

    Nothing is dropped: every setting without an equivalent (`supports_tools`, `has_tools`,
    `api_key`, `logging`, `audio`, runner-owned parameters such as a fixed `port`, entries the old
    app itself skipped as invalid, ...) is kept verbatim under `_legacy`, mirroring where it was
    in the old file, e.g. `_legacy.models["My Model"].has_tools`.
    """
    return _Migration(data).run()
