"""The user's config file: typed model, validation, storage, migration and change diffing."""

from .diff import ConfigChanges, diff_configs
from .locate import KeyLocator, KeyPath, render_path
from .migration import is_legacy, legacy_config_path, migrate_legacy
from .schema import (
    ApiKeyConfig,
    ArgValue,
    Config,
    ConfigError,
    ConfigReadError,
    ConfigSyntaxError,
    ConfigValidationError,
    DesktopConfig,
    LoggingConfig,
    ModelConfig,
    Problem,
    ProxyConfig,
    RuntimeConfig,
    SchedulerConfig,
    args_to_argv,
    format_duration,
    normalise_args,
    parse_config,
    parse_duration,
)
from .store import ConfigStore, default_config_path

__all__ = [
    "ApiKeyConfig",
    "ArgValue",
    "Config",
    "ConfigChanges",
    "ConfigError",
    "ConfigReadError",
    "ConfigStore",
    "ConfigSyntaxError",
    "ConfigValidationError",
    "DesktopConfig",
    "KeyLocator",
    "KeyPath",
    "LoggingConfig",
    "ModelConfig",
    "Problem",
    "ProxyConfig",
    "RuntimeConfig",
    "SchedulerConfig",
    "args_to_argv",
    "default_config_path",
    "diff_configs",
    "format_duration",
    "is_legacy",
    "legacy_config_path",
    "migrate_legacy",
    "normalise_args",
    "parse_config",
    "parse_duration",
    "render_path",
]
