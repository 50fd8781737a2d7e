"""Typed config model: validates decoded config.json into frozen dataclasses, or says why not."""

from __future__ import annotations

import copy
import difflib
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from . import defaults
from .locate import KeyLocator, KeyPath, is_comment_key, render_path

ArgValue: TypeAlias = str | int | float | bool | list[str | int | float] | None

# ---------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: where (dotted key path and line) and what to do."""

    path: str
    message: str
    line: int | None = None
    # The same place as a tuple, for code that needs to map it (e.g. back to a legacy file);
    # not part of equality so that tests and callers can compare on what users see.
    key: KeyPath = field(default=(), compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def render(self, file: str) -> str:
        """`config.json:12: models.gemma.args.port: set by the runner, remove it`."""
        where = f"{file}:{self.line}" if self.line is not None else file
        return f"{where}: {self}"


class ConfigError(Exception):
    """Base of every error a config file can cause; its str is written for the user."""


class ConfigSyntaxError(ConfigError):
    """The file is not valid JSON (or not UTF-8 text)."""

    def __init__(self, file: str, line: int, column: int, reason: str) -> None:
        self.file = file
        self.line = line
        self.column = column
        self.reason = reason
        super().__init__(f"{file}:{line}:{column}: invalid JSON: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.file, self.line, self.column, self.reason))


class ConfigValidationError(ConfigError):
    """The file is JSON but breaks the schema; lists every problem, one per line."""

    def __init__(self, file: str, problems: Sequence[Problem]) -> None:
        self.file = file
        self.problems = list(problems)
        super().__init__("\n".join(problem.render(file) for problem in self.problems))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.file, self.problems))


class ConfigReadError(ConfigError):
    """The file exists but cannot be read (permissions, a folder in its place...)."""

    def __init__(self, file: str, reason: str) -> None:
        self.file = file
        self.reason = reason
        super().__init__(f"{file}: cannot read the config file: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.file, self.reason))


# ---------------------------------------------------------------------------------------------
# Durations

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PLAIN_SECONDS = re.compile(rf"-?{_NUMBER}")
# "ms" is listed before "m" so that "250ms" is not read as 250 minutes and a stray "s".
_WITH_UNITS = re.compile(rf"(-?)\s*((?:{_NUMBER}\s*(?:ms|s|m|h)\s*)+)")
_UNIT_PART = re.compile(rf"({_NUMBER})\s*(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_HELP = (
    "use seconds (90), a unit (250ms, 90s, 5m, 1h, 1h30m), 0 for 'right away' or -1 for 'never'"
)


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like "90", "5m", "1h30m", "250ms"; negative = math.inf.

    Raises ValueError with a message meant for the user.
    """
    seconds: float
    if isinstance(value, bool):
        # bool is an int subclass; `true` as a duration is a mistake, not 1 second.
        raise ValueError(f"{_json_kind(value)} is not a duration: {_DURATION_HELP}")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf if value > 0 else -math.inf
    elif isinstance(value, str):
        text = value.strip().lower()
        match = _WITH_UNITS.fullmatch(text)
        if _PLAIN_SECONDS.fullmatch(text):
            seconds = float(text)
        elif match:
            total = sum(float(n) * _UNIT_SECONDS[u] for n, u in _UNIT_PART.findall(match[2]))
            seconds = -total if match[1] else total
        else:
            raise ValueError(f"{value!r} is not a duration: {_DURATION_HELP}")
    else:
        raise ValueError(f"{_json_kind(value)} is not a duration: {_DURATION_HELP}")
    if math.isnan(seconds):
        raise ValueError(f"NaN is not a duration: {_DURATION_HELP}")
    return math.inf if seconds < 0 else seconds


def format_duration(seconds: float) -> str:
    """The short form users write ("5m", "1h30m", "250ms", "-1" for never); parses back equal."""
    if math.isnan(seconds):
        raise ValueError("NaN is not a duration")
    if seconds < 0 or math.isinf(seconds):
        return "-1"
    millis = seconds * 1000
    whole = round(millis)
    if not math.isclose(millis, whole, rel_tol=1e-12, abs_tol=1e-9):
        # Sub-millisecond precision: plain decimal seconds, never exponent notation,
        # because the duration syntax has no exponents.
        return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"
    hours, rest = divmod(whole, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    parts = [(hours, "h"), (minutes, "m"), (secs, "s"), (ms, "ms")]
    return "".join(f"{amount}{unit}" for amount, unit in parts if amount) or "0s"


# ---------------------------------------------------------------------------------------------
# llama-server arguments


def _format_number(value: float) -> str:
    # 4.0 -> "4", 0.6 -> "0.6": what a user would type on the command line.
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _arg_text(key: str, value: object) -> str:
    if isinstance(value, bool):
        raise ValueError(f"{key}: true/false cannot appear inside a list of values")
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{key}: {value!r} is not a finite number")
        return _format_number(value)
    raise TypeError(f"{key}: cannot pass {type(value).__name__} to llama-server")


def args_to_argv(args: Mapping[str, ArgValue]) -> list[str]:
    """Turn normalised args into llama-server argv tokens (without the program and -m/--port).

    One-letter keys become `-k`, longer ones `--key`; `true` is a bare flag, `false`/`None`
    leave the flag out, and a list repeats the flag once per item.
    """
    argv: list[str] = []
    for key, value in args.items():
        name = key.lstrip("-")
        if not name:
            raise ValueError(f"{key!r} is not a flag name")
        flag = f"-{name}" if len(name) == 1 else f"--{name}"
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, list):
            for item in value:
                argv += [flag, _arg_text(key, item)]
        else:
            argv += [flag, _arg_text(key, value)]
    return argv


def normalise_args(args: Mapping[str, object]) -> dict[str, ArgValue]:
    """Check and normalise a model's `args`: no leading dashes, false/null/[] dropped.

    Raises ValueError listing every problem (`port: set by the runner, remove it; ...`).
    """
    checker = _Checker()
    result = _check_args(checker, args, ())
    if checker.found:
        raise ValueError("; ".join(f"{render_path(p)}: {m}" for p, m in checker.found))
    return result


# ---------------------------------------------------------------------------------------------
# The typed config


@dataclass(frozen=True)
class ProxyConfig:
    """One API listener (Ollama or LM Studio/OpenAI)."""

    enabled: bool
    host: str
    port: int
    # Only the Ollama proxy has one: the version it reports to clients.
    version: str | None = None


@dataclass(frozen=True)
class RuntimeConfig:
    """A llama-server executable: an absolute path or a command found on PATH."""

    path: str


@dataclass(frozen=True)
class ModelConfig:
    """A model the user configured by hand; `args` are normalised (see `normalise_args`).

    An entry without a path (`path == ""`) names no file: it gives its settings to the
    model of that name found in the model folders, Ollama's or LM Studio's store.
    """

    name: str
    path: str
    runtime: str = defaults.DEFAULT_RUNTIME_NAME
    args: Mapping[str, ArgValue] = field(default_factory=dict)
    # None: inherit scheduler.default_ttl. math.inf: never unload. 0: unload after each request.
    ttl: float | None = None
    alias: tuple[str, ...] = ()
    # Only for entries without a path: flags written false/null there, which switch off
    # defaults the discovered model would otherwise get (e.g. "jinja": false).
    unset_args: tuple[str, ...] = ()
    # A llama-server built-in template name (chatml, gemma, llama3...) or a Jinja file;
    # None: the GGUF's own template, else its family's (library/chat_template.py).
    chat_template: str | None = None
    # llama.cpp RPC workers ("host:port") the model's layers are split over (`--rpc`).
    rpc: tuple[str, ...] = ()
    # Not config keys: the peer (`peers.<name>`) that serves this model, and the model's
    # own id there; both empty for a local model.
    peer: str = ""
    remote_id: str = ""
    # Not a config key: what the library found at `path`. "llm" is a GGUF for
    # llama-server, "audio" a Whisper folder for the speech worker (library/whisper.py).
    kind: str = "llm"

    @property
    def is_audio(self) -> bool:
        return self.kind == "audio"

    @property
    def serves_embeddings(self) -> bool:
        """True when llama-server is started in embeddings mode (`embedding(s): true`)."""
        return any(self.args.get(key) is True for key in defaults.EMBEDDING_ARGS)

    @property
    def takes_embedding_requests(self) -> bool:
        """Whether embeddings requests may go to it (a peer's model: the peer decides)."""
        return self.is_peer or self.serves_embeddings

    @property
    def settings_only(self) -> bool:
        """True for an entry without a path: settings for a discovered model of this name."""
        return not self.path and not self.peer

    @property
    def is_peer(self) -> bool:
        """True for a model another server (a peer) runs; nothing of it runs here."""
        return bool(self.peer)


@dataclass(frozen=True)
class SourceConfig:
    """Another app's model store read in place: on or off, and where (empty = auto-detect)."""

    enabled: bool = defaults.DEFAULT_SOURCE_ENABLED
    path: str = defaults.DEFAULT_SOURCE_PATH


def _default_sources() -> dict[str, SourceConfig]:
    return {name: SourceConfig() for name in defaults.SOURCE_NAMES}


@dataclass(frozen=True)
class SchedulerConfig:
    """How many models run at once, how long they idle, and how long loads/stops may take."""

    max_loaded_models: int = defaults.DEFAULT_MAX_LOADED_MODELS
    default_ttl: float = defaults.DEFAULT_TTL
    max_queue: int = defaults.DEFAULT_MAX_QUEUE
    load_timeout: float = defaults.DEFAULT_LOAD_TIMEOUT
    stop_grace: float = defaults.DEFAULT_STOP_GRACE
    first_token_timeout: float = defaults.DEFAULT_FIRST_TOKEN_TIMEOUT


# One origin pattern: scheme://host[:port], where host may hold `*` and port may be `*`.
ORIGIN_PATTERN = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>\[[0-9a-f:.*]*\]|[^\s:/\[\]]*)"
    r"(?::(?P<port>[0-9]{1,5}|\*))?",
    re.IGNORECASE,
)
# What an environment variable name may look like (POSIX shells' rule).
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A host name or IP address as a Host header carries it (no scheme, path or port).
_HOST_NAME = re.compile(r"\[[0-9a-f:.]+\]|[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?\.?", re.IGNORECASE)
# Model names in a key's `models`: any non-empty text (names and aliases are free-form).
_ANY_TEXT = re.compile(r".+", re.DOTALL)


@dataclass(frozen=True)
class ApiKeyConfig:
    """One named API key: who holds it, which models it sees, how much it may use."""

    name: str
    key: str = field(repr=False)
    # Empty: every model. Otherwise only these (names or aliases), in listings too.
    models: tuple[str, ...] = ()
    # None: no limit.
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None

    def allows(self, model: str, aliases: Sequence[str] = ()) -> bool:
        """Whether this key may use `model` (known also as `aliases`)."""
        return not self.models or model in self.models or any(a in self.models
                                                               for a in aliases)


@dataclass(frozen=True)
class SecurityConfig:
    """Who may call the proxies (key, Host names, browser origins) and how much they send."""

    api_key: str = defaults.DEFAULT_API_KEY
    api_key_env: str = defaults.DEFAULT_API_KEY_ENV
    allowed_hosts: tuple[str, ...] = defaults.DEFAULT_ALLOWED_HOSTS
    cors_origins: tuple[str, ...] = defaults.DEFAULT_CORS_ORIGINS
    max_body_bytes: int = defaults.DEFAULT_MAX_BODY_BYTES
    max_audio_bytes: int = defaults.DEFAULT_MAX_AUDIO_BYTES
    body_timeout: float = defaults.DEFAULT_BODY_TIMEOUT
    api_keys: tuple[ApiKeyConfig, ...] = defaults.DEFAULT_API_KEYS
    client_requests_per_minute: int = defaults.DEFAULT_CLIENT_REQUESTS_PER_MINUTE
    client_tokens_per_minute: int = defaults.DEFAULT_CLIENT_TOKENS_PER_MINUTE

    @property
    def has_limits(self) -> bool:
        """Whether any rate limit is configured (most set-ups have none: skip the counting)."""
        return bool(self.client_requests_per_minute or self.client_tokens_per_minute
                    or any(k.requests_per_minute or k.tokens_per_minute
                           for k in self.api_keys))

    @property
    def requires_key(self) -> bool:
        """Whether any key is configured, so every route but the health checks needs one."""
        return bool(self.api_key or self.api_key_env or self.api_keys)

    def resolved_api_key(self) -> str:
        """The key clients must send: `api_key`, else the variable `api_key_env` names."""
        if self.api_key:
            return self.api_key
        if self.api_key_env:
            return os.environ.get(self.api_key_env, "").strip()
        return ""


@dataclass(frozen=True)
class PeerConfig:
    """Another OpenAI-compatible server whose models join this library (`peers.<name>`)."""

    # Its OpenAI base URL, "…/v1" included: http(s)://host:port/v1.
    url: str
    # Sent as "Authorization: Bearer …" to the peer only; never logged or shown.
    api_key: str = field(default="", repr=False)
    # Empty: the models its /v1/models lists. Otherwise exactly these ids.
    models: tuple[str, ...] = ()
    refresh: float = defaults.DEFAULT_PEER_REFRESH


@dataclass(frozen=True)
class LoggingConfig:
    """How the app's own log is written: its format and the rotation of its file."""

    format: str = defaults.DEFAULT_LOG_FORMAT
    max_bytes: int = defaults.DEFAULT_LOG_MAX_BYTES
    backups: int = defaults.DEFAULT_LOG_BACKUPS


@dataclass(frozen=True)
class DesktopConfig:
    """How the desktop app starts with the user's login; headless ignores it."""

    # The OS entry that starts the installed app at login (see llamarunner.integration).
    start_at_login: bool = defaults.DEFAULT_START_AT_LOGIN


@dataclass(frozen=True)
class Config:
    """The whole validated config. Treat the mappings as read-only."""

    proxies: Mapping[str, ProxyConfig]
    runtimes: Mapping[str, RuntimeConfig]
    models: Mapping[str, ModelConfig]
    model_dirs: tuple[str, ...]
    scheduler: SchedulerConfig
    # "ollama" and "lmstudio", always both present.
    sources: Mapping[str, SourceConfig] = field(default_factory=_default_sources)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    desktop: DesktopConfig = field(default_factory=DesktopConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    peers: Mapping[str, PeerConfig] = field(default_factory=dict)
    # The decoded JSON it came from; only used to carry "_"/"$" comment keys back out.
    # Not compared: two configs that mean the same are equal whatever their comments.
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def default(cls) -> Config:
        """The config an empty `{}` file means."""
        return parse_config({})

    def resolve_model(self, name: str) -> ModelConfig | None:
        """The configured model called `name`, directly or through an alias."""
        found = self.models.get(name)
        if found is not None:
            return found
        return next((m for m in self.models.values() if name in m.alias), None)

    def ttl_for(self, model_name: str) -> float:
        """Idle seconds before unloading; models not in the config use scheduler.default_ttl."""
        model = self.resolve_model(model_name)
        if model is None or model.ttl is None:
            return self.scheduler.default_ttl
        return model.ttl

    def to_dict(self) -> dict[str, Any]:
        """The user-shaped JSON, complete, with comment keys from `raw` kept in place."""
        scheduler = self.scheduler
        shaped: dict[str, Any] = {
            "proxies": {name: _proxy_dict(p) for name, p in self.proxies.items()},
            "runtimes": {name: {"path": r.path} for name, r in self.runtimes.items()},
            "models": {name: _model_dict(m) for name, m in self.models.items()},
            "model_dirs": list(self.model_dirs),
            "scheduler": {
                "max_loaded_models": scheduler.max_loaded_models,
                "default_ttl": format_duration(scheduler.default_ttl),
                "max_queue": scheduler.max_queue,
                "load_timeout": format_duration(scheduler.load_timeout),
                "stop_grace": format_duration(scheduler.stop_grace),
            },
        }
        # Written only when changed (or already in the file), like sources below, so that
        # saving an older config does not add a key the user never asked for.
        raw_scheduler = self.raw.get("scheduler")
        if (scheduler.first_token_timeout != defaults.DEFAULT_FIRST_TOKEN_TIMEOUT
                or (isinstance(raw_scheduler, Mapping) and "first_token_timeout" in raw_scheduler)):
            shaped["scheduler"]["first_token_timeout"] = format_duration(
                scheduler.first_token_timeout)
        # Written only when set (or already in the file), so that saving a config written
        # before sources existed does not add a section the user never asked for.
        if self.sources != _default_sources() or "sources" in self.raw:
            shaped["sources"] = {
                name: {"enabled": source.enabled, "path": source.path}
                for name, source in self.sources.items()
            }
        # Same rule as sources: files written before the section existed stay as they are.
        if self.security != SecurityConfig() or "security" in self.raw:
            security = self.security
            shaped["security"] = {
                "api_key": security.api_key,
                "api_key_env": security.api_key_env,
                "allowed_hosts": list(security.allowed_hosts),
                "cors_origins": list(security.cors_origins),
                "max_body_bytes": security.max_body_bytes,
                "max_audio_bytes": security.max_audio_bytes,
                "body_timeout": format_duration(security.body_timeout),
            }
            if security.api_keys or "api_keys" in self.raw.get("security", {}):
                shaped["security"]["api_keys"] = [_api_key_dict(k) for k in security.api_keys]
            for limit in ("client_requests_per_minute", "client_tokens_per_minute"):
                if getattr(security, limit) or limit in self.raw.get("security", {}):
                    shaped["security"][limit] = getattr(security, limit)
        if self.logging != LoggingConfig() or "logging" in self.raw:
            shaped["logging"] = {"format": self.logging.format,
                                 "max_bytes": self.logging.max_bytes,
                                 "backups": self.logging.backups}
        if self.peers or "peers" in self.raw:
            shaped["peers"] = {name: _peer_dict(peer) for name, peer in self.peers.items()}
        # Same rule again: turning start at login on adds the section, never a plain save.
        if self.desktop != DesktopConfig() or "desktop" in self.raw:
            shaped["desktop"] = {"start_at_login": self.desktop.start_at_login}
        return _with_comments(shaped, self.raw)


def _model_dict(model: ModelConfig) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "path": model.path,
        "runtime": model.runtime,
        "args": {k: list(v) if isinstance(v, list) else v for k, v in model.args.items()},
    }
    if model.settings_only:
        del entry["path"]
        entry["args"].update(dict.fromkeys(model.unset_args, False))
    if model.ttl is not None:
        entry["ttl"] = format_duration(model.ttl)
    if model.alias:
        entry["alias"] = list(model.alias)
    if model.chat_template:
        entry["chat_template"] = model.chat_template
    if model.rpc:
        entry["rpc"] = list(model.rpc)
    return entry


def _peer_dict(peer: PeerConfig) -> dict[str, Any]:
    entry: dict[str, Any] = {"url": peer.url}
    if peer.api_key:
        entry["api_key"] = peer.api_key
    if peer.models:
        entry["models"] = list(peer.models)
    if peer.refresh != defaults.DEFAULT_PEER_REFRESH:
        entry["refresh"] = format_duration(peer.refresh)
    return entry


def _with_comments(shaped: dict[str, Any], raw: object) -> dict[str, Any]:
    """Put the "_"/"$" keys of `raw` back into `shaped`, in the order the user wrote them."""
    if not isinstance(raw, Mapping):
        return shaped
    out: dict[str, Any] = {}
    for key, raw_value in raw.items():
        if is_comment_key(key):
            out[key] = copy.deepcopy(raw_value)
        elif key in shaped:
            value = shaped[key]
            out[key] = _with_comments(value, raw_value) if isinstance(value, dict) else value
    for key, value in shaped.items():
        out.setdefault(key, value)
    return out


# ---------------------------------------------------------------------------------------------
# Validation

_TOP_KEYS = ("proxies", "runtimes", "models", "model_dirs", "scheduler", "sources", "security",
             "desktop", "logging", "peers")
_PROXY_KEYS = ("enabled", "host", "port")
# Only the Ollama proxy reports a version to its clients.
_OLLAMA_PROXY_KEYS = (*_PROXY_KEYS, "version")
_RUNTIME_KEYS = ("path",)
_MODEL_KEYS = ("path", "runtime", "args", "ttl", "alias", "chat_template", "rpc")
# What an entry without a path must give at least one of: otherwise it does nothing.
_SETTINGS_KEYS = ("runtime", "args", "ttl", "alias", "chat_template", "rpc")
_PEER_KEYS = ("url", "api_key", "models", "refresh")
# A peer's name prefixes its models ("NAME/model"): plain words, no slash.
_PEER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# An RPC worker: host:port, the host a name or an IPv4 address (llama.cpp's RPC client
# and server speak IPv4 only, so a bracketed IPv6 address could never work).
_RPC_WORKER = re.compile(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?:([0-9]{1,5})", re.IGNORECASE)
_SOURCE_KEYS = ("enabled", "path")
_SECURITY_KEYS = (
    "api_key", "api_key_env", "allowed_hosts", "cors_origins", "max_body_bytes",
    "max_audio_bytes", "body_timeout", "api_keys", "client_requests_per_minute",
    "client_tokens_per_minute",
)
_API_KEY_KEYS = ("name", "key", "models", "requests_per_minute", "tokens_per_minute")
_LOGGING_KEYS = ("format", "max_bytes", "backups")
# A key's name shows in logs and metrics labels: plain words only.
_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_DESKTOP_KEYS = ("start_at_login",)
_SCHEDULER_KEYS = ("max_loaded_models", "default_ttl", "max_queue", "load_timeout", "stop_grace",
                   "first_token_timeout")
# Hosts that bind every interface, so they clash with any other host on the same port.
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
_PROXY_DEFAULTS = {
    defaults.OLLAMA: ProxyConfig(
        defaults.DEFAULT_OLLAMA_ENABLED,
        defaults.DEFAULT_OLLAMA_HOST,
        defaults.DEFAULT_OLLAMA_PORT,
        defaults.DEFAULT_OLLAMA_VERSION,
    ),
    defaults.LMSTUDIO: ProxyConfig(
        defaults.DEFAULT_LMSTUDIO_ENABLED,
        defaults.DEFAULT_LMSTUDIO_HOST,
        defaults.DEFAULT_LMSTUDIO_PORT,
    ),
}


def known_key_paths() -> tuple[str, ...]:
    """Every key a config file may hold, as dotted paths in file order ("proxies.ollama.port").

    `<name>` stands for a name the user chooses (`models.<name>.args`); what `args` holds
    is llama-server's flags, not config keys. Comment keys ("_", "$") are left out.
    docs/CONFIGURATION.md documents exactly these keys, and a test holds it to that.
    """
    sections: dict[str, Mapping[str, Sequence[str]] | Sequence[str]] = {
        "proxies": {defaults.OLLAMA: _OLLAMA_PROXY_KEYS, defaults.LMSTUDIO: _PROXY_KEYS},
        "runtimes": {"<name>": _RUNTIME_KEYS},
        "models": {"<name>": _MODEL_KEYS},
        "scheduler": _SCHEDULER_KEYS,
        "sources": dict.fromkeys(defaults.SOURCE_NAMES, _SOURCE_KEYS),
        "security": _SECURITY_KEYS,
        "desktop": _DESKTOP_KEYS,
        "logging": _LOGGING_KEYS,
        "peers": {"<name>": _PEER_KEYS},
    }
    paths: list[str] = []
    for top in _TOP_KEYS:
        shape = sections.get(top, ())
        if isinstance(shape, Mapping):
            paths += [f"{top}.{entry}.{key}" for entry, keys in shape.items() for key in keys]
        elif shape:
            paths += [f"{top}.{key}" for key in shape]
        else:
            paths.append(top)  # a key holding a value, not an object of keys (model_dirs)
    return tuple(paths)


def _json_kind(value: object) -> str:
    """Name a value the way the JSON file shows it, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class _Invalid:
    """Marks a value that was reported as a problem and must be skipped."""


_INVALID = _Invalid()


class _Checker:
    """Collects every problem instead of stopping at the first, so users fix all in one go."""

    def __init__(self) -> None:
        self.found: list[tuple[KeyPath, str]] = []

    def problem(self, path: KeyPath, message: str) -> None:
        self.found.append((path, message))

    def mapping(self, value: object, path: KeyPath) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.problem(path, f"must be an object {{...}}, not {_json_kind(value)}")
        return None

    def known_keys(self, obj: Mapping[str, Any], path: KeyPath, allowed: Sequence[str]) -> None:
        for key in obj:
            if key in allowed or is_comment_key(key):
                continue
            hint = difflib.get_close_matches(key, allowed, n=1)
            if hint:
                self.problem((*path, key), f"unknown key (did you mean {hint[0]!r}?)")
            else:
                self.problem((*path, key), f"unknown key (known keys: {', '.join(allowed)})")

    def boolean(self, obj: Mapping[str, Any], key: str, path: KeyPath, default: bool) -> bool:
        if key not in obj:
            return default
        value = obj[key]
        if isinstance(value, bool):
            return value
        self.problem((*path, key), f"must be true or false, not {_json_kind(value)}")
        return default

    def string(self, obj: Mapping[str, Any], key: str, path: KeyPath, default: str) -> str:
        if key not in obj:
            return default
        value = obj[key]
        if not isinstance(value, str):
            self.problem((*path, key), f"must be a string, not {_json_kind(value)}")
            return default
        if not value.strip():
            self.problem((*path, key), "must not be empty")
            return default
        return value

    def integer(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: KeyPath,
        default: int,
        minimum: int,
        maximum: int | None = None,
    ) -> int:
        if key not in obj:
            return default
        value = obj[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem((*path, key), f"must be a whole number, not {_json_kind(value)}")
            return default
        if maximum is not None and not minimum <= value <= maximum:
            self.problem((*path, key), f"must be between {minimum} and {maximum}, not {value}")
            return default
        if value < minimum:
            self.problem((*path, key), f"must be {minimum} or more, not {value}")
            return default
        return value

    def duration(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: KeyPath,
        default: float,
        *,
        positive: bool = False,
        finite: bool = False,
    ) -> float:
        if key not in obj:
            return default
        try:
            seconds = parse_duration(obj[key])
        except ValueError as exc:
            self.problem((*path, key), str(exc))
            return default
        if positive and seconds <= 0:
            self.problem((*path, key), "must be more than 0")
            return default
        if finite and math.isinf(seconds):
            self.problem((*path, key), "must be a finite duration, -1 (never) is not allowed here")
            return default
        return seconds


def _check_arg_value(checker: _Checker, value: object, path: KeyPath) -> ArgValue | _Invalid:
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        checker.problem(path, f"{value!r} is not a finite number")
        return _INVALID
    if isinstance(value, list):
        items: list[str | int | float] = []
        ok = True
        for index, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                checker.problem(
                    (*path, index),
                    f"list items must be strings or numbers, not {_json_kind(item)}",
                )
                ok = False
            elif isinstance(item, float) and not math.isfinite(item):
                checker.problem((*path, index), f"{item!r} is not a finite number")
                ok = False
            else:
                items.append(item)
        return items if ok else _INVALID
    checker.problem(
        path,
        "must be a string, a number, true (bare flag), false/null (left out) "
        f"or a list (flag repeated), not {_json_kind(value)}",
    )
    return _INVALID


def _check_args(checker: _Checker, raw: Mapping[str, object], path: KeyPath) -> dict[str, ArgValue]:
    result: dict[str, ArgValue] = {}
    written_as: dict[str, str] = {}
    for key, value in raw.items():
        if is_comment_key(key):
            continue
        key_path = (*path, key)
        name = key.lstrip("-") if isinstance(key, str) else ""
        if not name:
            checker.problem(key_path, "not a flag name")
            continue
        if "=" in name or any(char.isspace() for char in name):
            checker.problem(
                key_path, "a flag name cannot contain spaces or '=': put the value on the right"
            )
            continue
        if name in defaults.RUNNER_OWNED_ARGS:
            checker.problem(key_path, "set by the runner, remove it")
            continue
        if name in written_as:
            checker.problem(key_path, f"same flag as {written_as[name]!r}, keep only one")
            continue
        written_as[name] = key
        checked = _check_arg_value(checker, value, key_path)
        # false/null/[] mean "leave the flag out", so they are not kept at all.
        if isinstance(checked, _Invalid) or checked is None or checked is False or checked == []:
            continue
        result[name] = checked
    return result


def _api_key_dict(key: ApiKeyConfig) -> dict[str, Any]:
    shaped: dict[str, Any] = {"name": key.name, "key": key.key}
    if key.models:
        shaped["models"] = list(key.models)
    if key.requests_per_minute is not None:
        shaped["requests_per_minute"] = key.requests_per_minute
    if key.tokens_per_minute is not None:
        shaped["tokens_per_minute"] = key.tokens_per_minute
    return shaped


def _proxy_dict(proxy: ProxyConfig) -> dict[str, Any]:
    shaped: dict[str, Any] = {"enabled": proxy.enabled, "host": proxy.host, "port": proxy.port}
    if proxy.version is not None:
        shaped["version"] = proxy.version
    return shaped


def _parse_proxies(checker: _Checker, data: Mapping[str, Any]) -> dict[str, ProxyConfig]:
    result = dict(_PROXY_DEFAULTS)
    path: KeyPath = ("proxies",)
    section = checker.mapping(data["proxies"], path) if "proxies" in data else None
    for name, raw in (section or {}).items():
        if is_comment_key(name):
            continue
        entry_path = (*path, name)
        if name not in defaults.PROXY_NAMES:
            checker.problem(entry_path, "unknown proxy (the proxies are 'ollama' and 'lmstudio')")
            continue
        entry = checker.mapping(raw, entry_path)
        if entry is None:
            continue
        is_ollama = name == defaults.OLLAMA
        checker.known_keys(entry, entry_path, _OLLAMA_PROXY_KEYS if is_ollama else _PROXY_KEYS)
        base = result[name]
        version = base.version
        if is_ollama and "version" in entry:
            raw_version = checker.string(entry, "version", entry_path, base.version or "")
            if re.fullmatch(r"\d+\.\d+\.\d+", raw_version):
                version = raw_version
            else:
                checker.problem((*entry_path, "version"),
                                f"must look like 0.13.0, not {raw_version!r}")
        result[name] = ProxyConfig(
            enabled=checker.boolean(entry, "enabled", entry_path, base.enabled),
            host=checker.string(entry, "host", entry_path, base.host),
            # 0 asks the OS for any free port (tests run listeners side by side that way).
            port=checker.integer(entry, "port", entry_path, base.port, 0, 65535),
            version=version,
        )
    ollama, lmstudio = result[defaults.OLLAMA], result[defaults.LMSTUDIO]
    same_address = ollama.host == lmstudio.host or bool(
        {ollama.host, lmstudio.host} & _WILDCARD_HOSTS
    )
    clash = ollama.port == lmstudio.port != 0 and same_address
    if ollama.enabled and lmstudio.enabled and clash:
        # Only one listener can bind an address; the second would fail at start-up.
        checker.problem(
            (*path, defaults.LMSTUDIO, "port"),
            f"port {lmstudio.port} is also used by proxies.ollama, give each proxy its own port",
        )
    return result


def _parse_runtimes(checker: _Checker, data: Mapping[str, Any]) -> dict[str, RuntimeConfig]:
    result: dict[str, RuntimeConfig] = {}
    path: KeyPath = ("runtimes",)
    section = checker.mapping(data["runtimes"], path) if "runtimes" in data else None
    for name, raw in (section or {}).items():
        if is_comment_key(name):
            continue
        entry_path = (*path, name)
        if not name.strip():
            checker.problem(entry_path, "a runtime needs a name")
            continue
        # Registered even when broken, so models using it are not also reported as dangling.
        result[name] = RuntimeConfig(defaults.DEFAULT_RUNTIME_PATH)
        entry = checker.mapping(raw, entry_path)
        if entry is None:
            continue
        checker.known_keys(entry, entry_path, _RUNTIME_KEYS)
        if "path" not in entry:
            checker.problem(
                (*entry_path, "path"), "missing: give llama-server's path or a command on PATH"
            )
            continue
        exe = checker.string(entry, "path", entry_path, defaults.DEFAULT_RUNTIME_PATH)
        result[name] = RuntimeConfig(os.path.expanduser(exe))
    if defaults.DEFAULT_RUNTIME_NAME not in result:
        # Models that name no runtime use "default", so it always exists.
        default = RuntimeConfig(defaults.DEFAULT_RUNTIME_PATH)
        result = {defaults.DEFAULT_RUNTIME_NAME: default, **result}
    return result


def _model_name_problem(name: str, *, settings_only: bool = False) -> str | None:
    if not name.strip():
        return "a model needs a name: it is what clients ask for"
    if settings_only and "\\" not in name:
        # Settings for a discovered model use the name it was found under, and Ollama's
        # store has names like "namespace/model:tag".
        return None
    if "/" in name or "\\" in name:
        # Names end up in URLs and file names; slashes belong in an alias.
        return "a model name cannot contain '/' or '\\' (put such names in alias)"
    return None


def _parse_alias(checker: _Checker, entry: Mapping[str, Any], path: KeyPath) -> dict[int, str]:
    """Aliases by their index in the file, so clashes found later can point at the item."""
    if "alias" not in entry:
        return {}
    raw = entry["alias"]
    alias_path = (*path, "alias")
    if not isinstance(raw, list):
        checker.problem(
            alias_path, f'must be a list of names like ["my-model"], not {_json_kind(raw)}'
        )
        return {}
    result: dict[int, str] = {}
    for index, item in enumerate(raw):
        if not isinstance(item, str) or not item.strip():
            checker.problem((*alias_path, index), "must be a non-empty name")
        elif item != path[-1] and item not in result.values():
            result[index] = item
    return result


def _parse_models(
    checker: _Checker, data: Mapping[str, Any], runtimes: Mapping[str, RuntimeConfig]
) -> dict[str, ModelConfig]:
    result: dict[str, ModelConfig] = {}
    aliases: dict[str, dict[int, str]] = {}
    path: KeyPath = ("models",)
    section = checker.mapping(data["models"], path) if "models" in data else None
    for name, raw in (section or {}).items():
        if is_comment_key(name):
            continue
        entry_path = (*path, name)
        settings_only = isinstance(raw, dict) and "path" not in raw
        name_problem = _model_name_problem(name, settings_only=settings_only)
        if name_problem:
            checker.problem(entry_path, name_problem)
        entry = checker.mapping(raw, entry_path)
        if entry is None:
            continue
        checker.known_keys(entry, entry_path, _MODEL_KEYS)
        if settings_only and not any(key in entry for key in _SETTINGS_KEYS):
            # Without a path an entry only gives settings to a discovered model; with no
            # settings either it does nothing, which is surely not what was meant.
            checker.problem(
                (*entry_path, "path"),
                "missing: give the path of the model's .gguf file, or settings (args, ttl, "
                "alias, runtime, chat_template) for a model found in your folders, Ollama or "
                "LM Studio",
            )
        model_path = os.path.expanduser(checker.string(entry, "path", entry_path, ""))
        runtime = checker.string(entry, "runtime", entry_path, defaults.DEFAULT_RUNTIME_NAME)
        if runtime not in runtimes:
            checker.problem(
                (*entry_path, "runtime"),
                f"runtime {runtime!r} is not defined under runtimes "
                f"(defined: {', '.join(sorted(runtimes))})",
            )
        args: dict[str, ArgValue] = {}
        unset: tuple[str, ...] = ()
        if "args" in entry:
            raw_args = checker.mapping(entry["args"], (*entry_path, "args"))
            if raw_args is not None:
                args = _check_args(checker, raw_args, (*entry_path, "args"))
                if settings_only:
                    unset = _unset_flags(raw_args)
        ttl = None
        if entry.get("ttl") is not None:  # null, like a missing key, inherits default_ttl
            ttl = checker.duration(entry, "ttl", entry_path, defaults.DEFAULT_TTL)
        aliases[name] = _parse_alias(checker, entry, entry_path)
        chat_template = None  # null, like a missing key: the file's or family's template
        if entry.get("chat_template") is not None:
            chat_template = checker.string(entry, "chat_template", entry_path, "") or None
        rpc = _parse_rpc_workers(checker, entry, entry_path)
        result[name] = ModelConfig(
            name=name,
            path=model_path,
            runtime=runtime,
            args=args,
            ttl=ttl,
            alias=tuple(aliases[name].values()),
            unset_args=unset,
            chat_template=chat_template,
            rpc=rpc,
        )
    # A name clients ask for must lead to exactly one model.
    owner: dict[str, str] = {}
    for name, by_index in aliases.items():
        for index, alias in by_index.items():
            alias_path = (*path, name, "alias", index)
            if alias in result:
                checker.problem(alias_path, f"{alias!r} is already the name of a model")
            elif alias in owner:
                checker.problem(
                    alias_path, f"{alias!r} is already an alias of model {owner[alias]!r}"
                )
            else:
                owner[alias] = name
    return result


def _parse_rpc_workers(checker: _Checker, entry: Mapping[str, Any], path: KeyPath
                       ) -> tuple[str, ...]:
    """`rpc`: llama.cpp RPC workers as "host:port" strings, each port 1-65535."""
    workers = _parse_text_list(checker, entry, "rpc", path, _RPC_WORKER,
                               '["192.168.1.20:50052", "gpu-box:50052"]')
    valid: list[str] = []
    for index, worker in enumerate(workers):
        port = int(worker.rpartition(":")[2])
        if not 1 <= port <= 65535:
            checker.problem((*path, "rpc", index), f"port {port} is not between 1 and 65535")
        else:
            valid.append(worker)
    return tuple(valid)


def _unset_flags(raw_args: Mapping[str, object]) -> tuple[str, ...]:
    """Flags written false/null/[] (already checked by `_check_args`), without dashes."""
    unset: list[str] = []
    for key, value in raw_args.items():
        name = key.lstrip("-") if isinstance(key, str) else ""
        if is_comment_key(key) or not name or name in defaults.RUNNER_OWNED_ARGS:
            continue
        if value is None or value is False or value == []:
            unset.append(name)
    # Sorted: which flags are off is what counts, and the file may spell them "--x" or "x".
    return tuple(sorted(set(unset)))


def _parse_model_dirs(checker: _Checker, data: Mapping[str, Any]) -> tuple[str, ...]:
    if "model_dirs" not in data:
        return defaults.DEFAULT_MODEL_DIRS
    raw = data["model_dirs"]
    if not isinstance(raw, list):
        checker.problem(("model_dirs",), f"must be a list of folders, not {_json_kind(raw)}")
        return defaults.DEFAULT_MODEL_DIRS
    folders: list[str] = []
    for index, item in enumerate(raw):
        if not isinstance(item, str) or not item.strip():
            checker.problem(("model_dirs", index), "must be a folder path (a non-empty string)")
        else:
            folders.append(os.path.expanduser(item))
    return tuple(folders)


def _parse_sources(checker: _Checker, data: Mapping[str, Any]) -> dict[str, SourceConfig]:
    result = _default_sources()
    path: KeyPath = ("sources",)
    section = checker.mapping(data["sources"], path) if "sources" in data else None
    for name, raw in (section or {}).items():
        if is_comment_key(name):
            continue
        entry_path = (*path, name)
        if name not in defaults.SOURCE_NAMES:
            checker.problem(entry_path, "unknown source (the sources are 'ollama' and 'lmstudio')")
            continue
        entry = checker.mapping(raw, entry_path)
        if entry is None:
            continue
        checker.known_keys(entry, entry_path, _SOURCE_KEYS)
        folder = defaults.DEFAULT_SOURCE_PATH
        if "path" in entry:
            raw_path = entry["path"]
            if isinstance(raw_path, str):
                # Empty (or blank) means auto-detect, so unlike other paths it is allowed.
                folder = os.path.expanduser(raw_path.strip()) if raw_path.strip() else ""
            else:
                checker.problem(
                    (*entry_path, "path"),
                    f"must be a folder path, or \"\" to find it, not {_json_kind(raw_path)}",
                )
        result[name] = SourceConfig(
            enabled=checker.boolean(entry, "enabled", entry_path, defaults.DEFAULT_SOURCE_ENABLED),
            path=folder,
        )
    return result


def _parse_scheduler(checker: _Checker, data: Mapping[str, Any]) -> SchedulerConfig:
    path: KeyPath = ("scheduler",)
    base = SchedulerConfig()
    section = checker.mapping(data["scheduler"], path) if "scheduler" in data else None
    if section is None:
        return base
    checker.known_keys(section, path, _SCHEDULER_KEYS)
    return SchedulerConfig(
        max_loaded_models=checker.integer(
            section, "max_loaded_models", path, base.max_loaded_models, 1
        ),
        default_ttl=checker.duration(section, "default_ttl", path, base.default_ttl),
        max_queue=checker.integer(section, "max_queue", path, base.max_queue, 0),
        load_timeout=checker.duration(
            section, "load_timeout", path, base.load_timeout, positive=True
        ),
        # A finite grace: a child that ignores the stop signal must still be killed eventually.
        stop_grace=checker.duration(section, "stop_grace", path, base.stop_grace, finite=True),
        first_token_timeout=checker.duration(
            section, "first_token_timeout", path, base.first_token_timeout, positive=True
        ),
    )


def _parse_text_list(
    checker: _Checker, section: Mapping[str, Any], key: str, path: KeyPath,
    pattern: re.Pattern[str], example: str,
) -> tuple[str, ...]:
    """A list of strings that each match `pattern` in full; duplicates dropped, order kept."""
    if key not in section:
        return ()
    raw = section[key]
    if not isinstance(raw, list):
        checker.problem((*path, key), f"must be a list like {example}, not {_json_kind(raw)}")
        return ()
    items: list[str] = []
    for index, item in enumerate(raw):
        if not isinstance(item, str) or not pattern.fullmatch(item.strip()):
            shown = repr(item) if isinstance(item, str) else _json_kind(item)
            checker.problem((*path, key, index), f"must look like {example}, not {shown}")
        elif item.strip() not in items:
            items.append(item.strip())
    return tuple(items)


_ANY_ORIGIN = re.compile(rf"\*|{ORIGIN_PATTERN.pattern}", re.IGNORECASE)


def _parse_security(checker: _Checker, data: Mapping[str, Any]) -> SecurityConfig:
    path: KeyPath = ("security",)
    base = SecurityConfig()
    section = checker.mapping(data["security"], path) if "security" in data else None
    if section is None:
        return base
    checker.known_keys(section, path, _SECURITY_KEYS)
    api_key = base.api_key
    if "api_key" in section:
        raw_key = section["api_key"]
        if not isinstance(raw_key, str):
            checker.problem((*path, "api_key"), f"must be a string, not {_json_kind(raw_key)}")
        elif raw_key and len(raw_key.strip()) < defaults.MIN_API_KEY_LENGTH:
            # Short keys fall to guessing; "" (no key) stays allowed for loopback use.
            checker.problem((*path, "api_key"),
                            f"use at least {defaults.MIN_API_KEY_LENGTH} characters "
                            "(for example the output of `openssl rand -hex 24`)")
        elif raw_key != raw_key.strip():
            checker.problem((*path, "api_key"), "remove the spaces around the key")
        else:
            api_key = raw_key
    api_key_env = base.api_key_env
    if "api_key_env" in section:
        raw_env = section["api_key_env"]
        if not isinstance(raw_env, str):
            checker.problem((*path, "api_key_env"),
                            f"must be a string, not {_json_kind(raw_env)}")
        elif raw_env and not _ENV_NAME.fullmatch(raw_env):
            checker.problem((*path, "api_key_env"),
                            f"must be an environment variable name like LLAMARUNNER_API_KEY, "
                            f"not {raw_env!r}")
        else:
            api_key_env = raw_env
    if api_key and api_key_env:
        # Two sources for one secret would leave users guessing which one is in force.
        checker.problem((*path, "api_key_env"), "set either api_key or api_key_env, not both")
    allowed_hosts = _parse_text_list(checker, section, "allowed_hosts", path, _HOST_NAME,
                                     '["my-pc.local"] (host names, no scheme or port)')
    cors_origins = _parse_text_list(
        checker, section, "cors_origins", path, _ANY_ORIGIN,
        '["https://app.example.com", "http://*.example.com:*", "chrome-extension://*"]',
    )
    return SecurityConfig(
        api_key=api_key,
        api_key_env=api_key_env,
        allowed_hosts=tuple(host.lower().rstrip(".") for host in allowed_hosts),
        cors_origins=cors_origins,
        max_body_bytes=checker.integer(section, "max_body_bytes", path, base.max_body_bytes,
                                       1024),
        max_audio_bytes=checker.integer(section, "max_audio_bytes", path,
                                        base.max_audio_bytes, 1024),
        body_timeout=checker.duration(section, "body_timeout", path, base.body_timeout,
                                      positive=True, finite=True),
        api_keys=_parse_api_keys(checker, section, path, api_key),
        client_requests_per_minute=checker.integer(
            section, "client_requests_per_minute", path, base.client_requests_per_minute, 0),
        client_tokens_per_minute=checker.integer(
            section, "client_tokens_per_minute", path, base.client_tokens_per_minute, 0),
    )


def _parse_api_keys(checker: _Checker, section: Mapping[str, Any], path: KeyPath,
                    single_key: str) -> tuple[ApiKeyConfig, ...]:
    if "api_keys" not in section:
        return ()
    raw = section["api_keys"]
    example = '[{"name": "alice", "key": "<16 or more characters>"}]'
    if not isinstance(raw, list):
        checker.problem((*path, "api_keys"), f"must be a list like {example}, not "
                        f"{_json_kind(raw)}")
        return ()
    keys: list[ApiKeyConfig] = []
    names: set[str] = set()
    secrets_seen: set[str] = {single_key} if single_key else set()
    for index, item in enumerate(raw):
        where: KeyPath = (*path, "api_keys", index)
        entry = checker.mapping(item, where)
        if entry is None:
            continue
        checker.known_keys(entry, where, _API_KEY_KEYS)
        name = entry.get("name")
        if not isinstance(name, str) or not _KEY_NAME.fullmatch(name):
            checker.problem((*where, "name"), "give each key a name of letters, digits and "
                            "._@- (it names the key in logs and metrics), for example \"alice\"")
            continue
        if name in names:
            checker.problem((*where, "name"), f"another key is already named {name!r}")
            continue
        names.add(name)
        secret = entry.get("key")
        if not isinstance(secret, str) or len(secret) < defaults.MIN_API_KEY_LENGTH:
            checker.problem((*where, "key"),
                            f"use at least {defaults.MIN_API_KEY_LENGTH} characters (for "
                            "example the output of `openssl rand -hex 24`)")
            continue
        if secret != secret.strip() or any(c.isspace() for c in secret):
            checker.problem((*where, "key"), "a key must not hold spaces")
            continue
        if secret in secrets_seen:
            checker.problem((*where, "key"), "this key is already in use; give every key "
                            "its own value")
            continue
        secrets_seen.add(secret)
        models = _parse_text_list(checker, entry, "models", where, _ANY_TEXT,
                                  '["llama3.2", "qwen2.5-coder"]')
        requests = checker.integer(entry, "requests_per_minute", where, 0, 1) or None
        tokens = checker.integer(entry, "tokens_per_minute", where, 0, 1) or None
        keys.append(ApiKeyConfig(name, secret, models, requests, tokens))
    return tuple(keys)


def _parse_logging(checker: _Checker, data: Mapping[str, Any]) -> LoggingConfig:
    path: KeyPath = ("logging",)
    base = LoggingConfig()
    section = checker.mapping(data["logging"], path) if "logging" in data else None
    if section is None:
        return base
    checker.known_keys(section, path, _LOGGING_KEYS)
    log_format = checker.string(section, "format", path, base.format)
    if log_format not in defaults.LOG_FORMATS:
        checker.problem((*path, "format"), f"must be one of {', '.join(defaults.LOG_FORMATS)}"
                        f", not {log_format!r}")
        log_format = base.format
    return LoggingConfig(
        format=log_format,
        max_bytes=checker.integer(section, "max_bytes", path, base.max_bytes, 64 * 1024),
        backups=checker.integer(section, "backups", path, base.backups, 0, 100),
    )


def _parse_peers(checker: _Checker, data: Mapping[str, Any]) -> dict[str, PeerConfig]:
    path: KeyPath = ("peers",)
    section = checker.mapping(data["peers"], path) if "peers" in data else None
    peers: dict[str, PeerConfig] = {}
    for name, raw in (section or {}).items():
        if is_comment_key(name):
            continue
        where = (*path, name)
        if not _PEER_NAME.fullmatch(name):
            checker.problem(where, "a peer's name must be letters, digits, '.', '_' or '-' "
                            "(at most 64, no '/'): its models are called NAME/model")
        entry = checker.mapping(raw, where)
        if entry is None:
            continue
        checker.known_keys(entry, where, _PEER_KEYS)
        if "url" not in entry:
            checker.problem((*where, "url"), "missing: the peer's OpenAI base URL, like "
                            "http://gpu-box:1234/v1")
        url = checker.string(entry, "url", where, "").strip().rstrip("/")
        if url and not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", url, re.IGNORECASE):
            checker.problem((*where, "url"), f"must be an http:// or https:// URL like "
                            f"http://gpu-box:1234/v1, not {url!r}")
        api_key = ""
        if entry.get("api_key"):  # "" and null mean no key, as for security.api_key
            api_key = checker.string(entry, "api_key", where, "").strip()
        models = _parse_text_list(checker, entry, "models", where, _ANY_TEXT,
                                  '["llama3.1-70b", "qwen2.5-coder"]')
        refresh = checker.duration(entry, "refresh", where, defaults.DEFAULT_PEER_REFRESH,
                                   positive=True, finite=True)
        peers[name] = PeerConfig(url=url, api_key=api_key, models=models, refresh=refresh)
    return peers


def _parse_desktop(checker: _Checker, data: Mapping[str, Any]) -> DesktopConfig:
    path: KeyPath = ("desktop",)
    base = DesktopConfig()
    section = checker.mapping(data["desktop"], path) if "desktop" in data else None
    if section is None:
        return base
    checker.known_keys(section, path, _DESKTOP_KEYS)
    return DesktopConfig(
        start_at_login=checker.boolean(section, "start_at_login", path, base.start_at_login),
    )


def parse_config(data: Any, *, text: str | None = None, file: str = "config.json") -> Config:
    """Validate a decoded config.json; `text` (the file's text) adds line numbers to problems.

    Raises ConfigValidationError listing every problem found.
    """
    checker = _Checker()
    if not isinstance(data, dict):
        checker.problem((), f"the file must hold a JSON object {{...}}, not {_json_kind(data)}")
        _raise_problems(checker, text, file)
    checker.known_keys(data, (), _TOP_KEYS)
    proxies = _parse_proxies(checker, data)
    runtimes = _parse_runtimes(checker, data)
    models = _parse_models(checker, data, runtimes)
    model_dirs = _parse_model_dirs(checker, data)
    scheduler = _parse_scheduler(checker, data)
    sources = _parse_sources(checker, data)
    security = _parse_security(checker, data)
    desktop = _parse_desktop(checker, data)
    logging_config = _parse_logging(checker, data)
    peers = _parse_peers(checker, data)
    _raise_problems(checker, text, file)
    return Config(
        proxies=proxies,
        runtimes=runtimes,
        models=models,
        model_dirs=model_dirs,
        scheduler=scheduler,
        sources=sources,
        security=security,
        desktop=desktop,
        logging=logging_config,
        peers=peers,
        raw=copy.deepcopy(data),
    )


def _raise_problems(checker: _Checker, text: str | None, file: str) -> None:
    locator = KeyLocator(text) if text is not None else None
    problems = [
        Problem(
            path=render_path(key_path),
            message=message,
            line=locator.line(key_path) if locator is not None else None,
            key=key_path,
        )
        for key_path, message in checker.found
    ]
    if locator is not None:
        for key_path, line in locator.duplicates:
            # json.loads silently keeps the last of two equal keys; the first one would be a
            # setting the user believes in but the app ignores. Comments may repeat freely.
            if not any(is_comment_key(part) for part in key_path):
                problems.append(
                    Problem(
                        path=render_path(key_path),
                        message="written twice in the same object, remove one of them",
                        line=line,
                        key=key_path,
                    )
                )
    if not problems:
        return
    # File order reads best; problems without a line keep their order at the end.
    problems.sort(key=lambda p: (p.line is None, p.line or 0))
    raise ConfigValidationError(file, problems)
