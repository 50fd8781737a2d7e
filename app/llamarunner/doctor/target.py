"""Where the running app answers and which key to send: worked out from its config."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from ..config import Config, ProxyConfig
from ..config.defaults import LMSTUDIO, OLLAMA

# Titles used in steps and messages, in the order the report lists the ports.
API_NAMES: Final = {OLLAMA: "Ollama API", LMSTUDIO: "LM Studio / OpenAI API"}
# How long a request may wait for its answer when the config says nothing better: a model
# that loads first can take minutes on a slow disk.
DEFAULT_READ_TIMEOUT: Final = 300.0
# Margin on top of scheduler.load_timeout: the first answer also needs a prompt processed.
_READ_MARGIN: Final = 60.0


@dataclass(frozen=True)
class Endpoint:
    """One API of the running app: its base URL, or why the doctor has none."""

    api: str  # "ollama" or "lmstudio"
    url: str | None
    # Why there is no URL ("off in the config"); empty when there is one.
    problem: str = ""
    fix: str = ""

    @property
    def title(self) -> str:
        return API_NAMES.get(self.api, self.api)

    @property
    def host_port(self) -> str:
        """`127.0.0.1:11434` (what messages show), or "" without a URL."""
        return self.url.split("://", 1)[1] if self.url else ""


@dataclass(frozen=True)
class Target:
    """The running app as the doctor reaches it, and the key it sends."""

    ollama: Endpoint
    lmstudio: Endpoint
    api_key: str = ""
    # Where the key came from ("security.api_key", "$NAME"), for messages.
    key_source: str = ""
    # security.api_key_env names a variable this process does not have.
    key_missing: str = ""
    config_path: str = ""
    read_timeout: float = DEFAULT_READ_TIMEOUT

    def endpoints(self) -> tuple[Endpoint, Endpoint]:
        return (self.ollama, self.lmstudio)

    @property
    def key_required(self) -> bool:
        """A key is configured (the app refuses requests without it)."""
        return bool(self.api_key or self.key_missing)


def connect_host(bind_host: str) -> str:
    """The address a local client uses to reach a listener bound to `bind_host`.

    A wildcard bind ("", 0.0.0.0, ::) is reached on loopback; IPv6 literals get brackets.
    """
    host = bind_host.strip().strip("[]")
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # a name, such as localhost
    if address.version == 6:
        return "[::1]" if address.is_unspecified else f"[{address.compressed}]"
    return address.compressed


def base_url(bind_host: str, port: int) -> str:
    return f"http://{connect_host(bind_host)}:{port}"


def endpoint(api: str, proxy: ProxyConfig | None, config_path: str,
             bound_port: int | None = None) -> Endpoint:
    """The endpoint of one API from its `proxies` entry (and, in the app, its real port)."""
    key = f"proxies.{api}"
    if proxy is None or not proxy.enabled:
        return Endpoint(api, None, f"the {API_NAMES.get(api, api)} is off",
                        f"set {key}.enabled to true in {config_path}")
    port = bound_port if bound_port is not None else proxy.port
    if port == 0:
        return Endpoint(api, None, f"{key}.port is 0 (any free port), so its port is "
                                   "unknown here", f"set a fixed {key}.port in {config_path}")
    return Endpoint(api, base_url(proxy.host, port))


def target_from_config(config: Config, config_path: str, *,
                       bound_ports: Mapping[str, int | None] | None = None,
                       environ: Mapping[str, str] | None = None) -> Target:
    """Where the app described by `config` answers, and the key it wants.

    `bound_ports` gives the ports a running app really listens on (the desktop app knows
    them; a command in another process only has the config). `environ` stands in for the
    process environment (tests).
    """
    env = os.environ if environ is None else environ
    ports = bound_ports or {}
    security = config.security
    key, source, missing = "", "", ""
    if security.api_key:
        key, source = security.api_key, "security.api_key"
    elif security.api_key_env:
        value = env.get(security.api_key_env, "").strip()
        if value:
            key, source = value, f"${security.api_key_env}"
        else:
            missing = security.api_key_env
    load_timeout = config.scheduler.load_timeout
    read_timeout = (load_timeout + _READ_MARGIN if load_timeout < float("inf")
                    else DEFAULT_READ_TIMEOUT)
    return Target(
        ollama=endpoint(OLLAMA, config.proxies.get(OLLAMA), config_path, ports.get(OLLAMA)),
        lmstudio=endpoint(LMSTUDIO, config.proxies.get(LMSTUDIO), config_path,
                          ports.get(LMSTUDIO)),
        api_key=key, key_source=source, key_missing=missing, config_path=config_path,
        read_timeout=read_timeout,
    )


def not_running_message(target: Target) -> str:
    """`LlamaRunner Pro is not running on 127.0.0.1:11434 / 1234: start it with ...`."""
    places = [e.host_port for e in target.endpoints() if e.url]
    hosts = {p.rsplit(":", 1)[0] for p in places}
    if len(hosts) == 1 and len(places) > 1:
        where = " / ".join([places[0], *(p.rsplit(":", 1)[1] for p in places[1:])])
    else:
        where = " / ".join(places)
    return (f"LlamaRunner Pro is not running on {where}: start it with `llamarunner` "
            "(or `llamarunner --headless`); if it runs with another config file, name that "
            "file: `llamarunner doctor --config PATH`")
