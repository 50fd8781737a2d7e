#!/usr/bin/env python3
"""Container start-up: write the container's config unless one is mounted, then check it.

The container's config makes both APIs listen on 0.0.0.0 with the key clients must send
taken from LLAMARUNNER_API_KEY (security.api_key_env), and reads models from /models.
A config that is already there (a mounted file, or the one written on a first start) is
never changed: it is only checked, the way the app checks it when it starts, so that the
container stops with a message that says how to give it a key.

Exit status: 0 ready; 2 the config is not usable; 3 a listener would refuse to start
(no key, or one too short): the app's own `--headless` exit statuses.

usage: prepare_config.py [--create-only] CONFIG
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from llamarunner.config import ConfigError, parse_config
from llamarunner.config.defaults import MIN_API_KEY_LENGTH, PROXY_NAMES
from llamarunner.config.store import dump_config_text, parse_config_bytes
from llamarunner.core.files import atomic_write
from llamarunner.headless import EXIT_CONFIG, EXIT_LISTEN, EXIT_OK
from llamarunner.proxy.security import is_loopback_bind, refusal
from llamarunner.proxy.servers import API_TITLES

KEY_ENV = "LLAMARUNNER_API_KEY"
ALLOWED_HOSTS_ENV = "LLAMARUNNER_ALLOWED_HOSTS"
MODELS_DIR = "/models"
# Every interface of the container: the published ports reach it only that way.
LISTEN_HOST = "0.0.0.0"

NO_KEY = (
    "no API key. In the container both APIs listen on all interfaces, and the app serves "
    "them there only with a key clients must send (16 or more characters, e.g. the output "
    "of `openssl rand -hex 24`). Give it one of:\n"
    f"  -e {KEY_ENV}=<key>\n"
    "  a secret named llamarunner_api_key (mounted at /run/secrets/llamarunner_api_key)\n"
    "  -e LLAMARUNNER_API_KEY_FILE=<path of a file in the container holding the key>"
)


def container_config(allowed_hosts: list[str]) -> dict[str, Any]:
    """The config a container starts with when none is mounted."""
    security: dict[str, Any] = {"api_key_env": KEY_ENV}
    if allowed_hosts:
        security["allowed_hosts"] = allowed_hosts
    return {
        "model_dirs": [MODELS_DIR],
        "proxies": {name: {"host": LISTEN_HOST} for name in PROXY_NAMES},
        "security": security,
    }


def allowed_hosts_from_env() -> list[str]:
    """LLAMARUNNER_ALLOWED_HOSTS, split at commas and spaces."""
    return [name for name in re.split(r"[,\s]+", os.environ.get(ALLOWED_HOSTS_ENV, "")) if name]


def create_config(path: Path) -> int:
    """Write the container's config at `path` when there is no file there."""
    if path.exists():
        return EXIT_OK
    data = container_config(allowed_hosts_from_env())
    try:
        parse_config(data, file=str(path))
    except ConfigError as exc:
        print(f"llamarunner: {ALLOWED_HOSTS_ENV} is not usable:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, dump_config_text(data).encode(), mode=0o600)
    except OSError as exc:
        print(f"llamarunner: cannot write the config {path} ({exc.strerror or exc}); mount "
              f"a folder the container's user (uid {os.getuid()}) may write at {path.parent}, "
              f"or mount your own {path.name} there", file=sys.stderr)
        return EXIT_CONFIG
    print(f"llamarunner: wrote {path}: both APIs on {LISTEN_HOST}, models from {MODELS_DIR}, "
          f"the API key from {KEY_ENV}", file=sys.stderr)
    return EXIT_OK


def check_config(path: Path) -> int:
    """Whether the app can start with `path` as it is now; say why not."""
    try:
        config = parse_config_bytes(path.read_bytes(), str(path))
    except OSError as exc:
        print(f"llamarunner: cannot read the config {path}: {exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_CONFIG
    except ConfigError as exc:
        print(f"llamarunner: cannot start, the configuration is not usable:\n{exc}",
              file=sys.stderr)
        return EXIT_CONFIG
    security = config.security
    enabled = {name: proxy for name, proxy in config.proxies.items() if proxy.enabled}
    refusals = [reason for name, proxy in enabled.items()
                if (reason := refusal(name, API_TITLES.get(name, name), proxy, security,
                                      str(path)))]
    if refusals:
        if os.environ.get(KEY_ENV, "").strip() and security.api_key_env != KEY_ENV:
            # A mounted config that names no key, or another variable: say what to add.
            advice = (f"{KEY_ENV} is set, but {path} does not read it: add "
                      f'"security": {{"api_key_env": "{KEY_ENV}"}} to it')
        else:
            advice = NO_KEY
        print(f"llamarunner: {advice}\n" + "\n".join(f"llamarunner: {r}" for r in refusals),
              file=sys.stderr)
        return EXIT_LISTEN
    key = security.resolved_api_key()
    if security.api_key_env and len(key) < MIN_API_KEY_LENGTH:
        print(f"llamarunner: the API key in {security.api_key_env} has {len(key)} characters; "
              f"use at least {MIN_API_KEY_LENGTH} (e.g. the output of `openssl rand -hex 24`)",
              file=sys.stderr)
        return EXIT_LISTEN
    if enabled and all(is_loopback_bind(proxy.host) for proxy in enabled.values()):
        print(f"llamarunner: warning: {path} has every API listen on a loopback address, "
              "which nothing outside the container can reach; set proxies.ollama.host and "
              f"proxies.lmstudio.host to {LISTEN_HOST} to publish them", file=sys.stderr)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--create-only", action="store_true",
                        help="write the config when absent, check nothing")
    parser.add_argument("config", type=Path)
    args = parser.parse_args(argv)
    status = create_config(args.config)
    if status != EXIT_OK or args.create_only:
        return status
    return check_config(args.config)


if __name__ == "__main__":
    sys.exit(main())
