#!/usr/bin/env python3
"""Container health check: exit 0 when the Ollama API answers GET /api/version, else 1.

The port comes from the config (LLAMARUNNER_CONFIG, default /etc/llamarunner/config.json),
so a mounted config with other ports is checked where it listens. /api/version answers
without the API key. With the Ollama API switched off, GET / of the LM Studio / OpenAI
API (also open without a key) is checked instead.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from llamarunner.config import Config, ConfigError, ProxyConfig
from llamarunner.config.store import parse_config_bytes

DEFAULT_CONFIG = "/etc/llamarunner/config.json"
TIMEOUT_S = 4.0


def connect_host(proxy: ProxyConfig) -> str:
    """Where to reach a listener from inside the container (URL form)."""
    host = proxy.host.strip().strip("[]")
    if host in ("", "0.0.0.0", "localhost"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def health_url(config: Config) -> str | None:
    """The URL whose answer tells that the app is up; None when no API is switched on."""
    ollama, lmstudio = config.proxies["ollama"], config.proxies["lmstudio"]
    if ollama.enabled:
        return f"http://{connect_host(ollama)}:{ollama.port}/api/version"
    if lmstudio.enabled:
        return f"http://{connect_host(lmstudio)}:{lmstudio.port}/"
    return None


def load_config(path: Path) -> Config:
    """The config the app runs with; the defaults before a first start has written it."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raw = b"{}"
    return parse_config_bytes(raw, str(path))


def main() -> int:
    path = Path(os.environ.get("LLAMARUNNER_CONFIG") or DEFAULT_CONFIG)
    try:
        url = health_url(load_config(path))
    except (OSError, ConfigError) as exc:
        print(f"unhealthy: cannot read {path}: {exc}")
        return 1
    if url is None:
        print(f"unhealthy: {path} switches both APIs off")
        return 1
    # No proxy: an HTTP(S)_PROXY set for the container must not carry a loopback request.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=TIMEOUT_S) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {url}: {exc}")
        return 1
    if status != 200:
        print(f"unhealthy: {url} answered {status}")
        return 1
    print(f"healthy: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
