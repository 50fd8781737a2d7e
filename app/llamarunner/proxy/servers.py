"""Start, stop and reconcile the HTTP listeners (one per enabled API) from the config."""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NoReturn

from aiohttp import web

from ..config.schema import ProxyConfig
from ..core.events import EventBus, ListenerStateChanged
from .security import BIND_HOST, app_settings, refusal

log = logging.getLogger(__name__)

AppFactory = Callable[[], web.Application]

API_TITLES = {"ollama": "Ollama API", "lmstudio": "LM Studio / OpenAI API"}


class ListenerError(Exception):
    """A listener could not start; the message names the address and the key to change."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


@dataclass
class _Listener:
    name: str
    host: str
    port: int
    runner: web.AppRunner
    site: web.TCPSite

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class ListenerSet:
    """The running listeners, kept in line with `proxies` in the config."""

    def __init__(self, factories: Mapping[str, AppFactory], events: EventBus,
                 config_path: str = "config.json") -> None:
        self._factories = factories
        self._events = events
        self._listeners: dict[str, _Listener] = {}
        self.config_path = config_path
        self.last_errors: dict[str, str] = {}

    def addresses(self) -> dict[str, str]:
        return {name: lst.address for name, lst in self._listeners.items()}

    def bound_port(self, name: str) -> int | None:
        listener = self._listeners.get(name)
        return listener.port if listener else None

    @property
    def apis(self) -> tuple[str, ...]:
        """Every API this set can serve, whether it listens now or not."""
        return tuple(self._factories)

    def build_app(self, name: str) -> web.Application:
        """A new, unstarted application for one API, built as its listener builds it."""
        return self._factories[name]()

    async def reconcile(self, proxies: Mapping[str, ProxyConfig]) -> list[ListenerError]:
        """Stop listeners that are gone or moved first (freeing their ports), then start."""
        wanted = {
            name: cfg for name, cfg in proxies.items() if cfg.enabled and name in self._factories
        }
        for name, listener in list(self._listeners.items()):
            cfg = wanted.get(name)
            if cfg is None or (cfg.host, cfg.port) != (listener.host, listener.port):
                await self._stop(name)
        errors = []
        for name, cfg in wanted.items():
            if name in self._listeners:
                continue
            try:
                await self._start(name, cfg)
            except ListenerError as exc:
                errors.append(exc)
        return errors

    async def _start(self, name: str, cfg: ProxyConfig) -> None:
        app = self.build_app(name)
        # The Host check and the "key required" rule depend on where the app listens.
        app[BIND_HOST] = cfg.host
        refused = refusal(name, API_TITLES.get(name, name), cfg, app_settings(app),
                          self.config_path)
        if refused is not None:
            self._fail(name, cfg, refused)
        # handler_cancellation: when a client disconnects, its handler is cancelled so
        # the upstream request to llama-server is closed and the slot freed at once.
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, handler_cancellation=True,
            shutdown_timeout=1.0,
        )
        await runner.setup()
        site = web.TCPSite(runner, cfg.host, cfg.port, backlog=1024)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            self._fail(name, cfg, self._describe_bind_error(name, cfg, exc), exc)
        port = cfg.port
        if port == 0:  # an ephemeral port (tests): report the one the OS chose
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            if sockets:
                port = sockets[0].getsockname()[1]
        listener = _Listener(name, cfg.host, port, runner, site)
        self._listeners[name] = listener
        self.last_errors.pop(name, None)
        log.info("%s listening on %s", API_TITLES.get(name, name), listener.address)
        self._events.publish(ListenerStateChanged(name, listener.address, True))

    def _fail(self, name: str, cfg: ProxyConfig, message: str,
              cause: BaseException | None = None) -> NoReturn:
        self.last_errors[name] = message
        self._events.publish(ListenerStateChanged(name, f"{cfg.host}:{cfg.port}", False,
                                                  message))
        raise ListenerError(name, message) from cause

    def _describe_bind_error(self, name: str, cfg: ProxyConfig, exc: OSError) -> str:
        where = f"{cfg.host}:{cfg.port}"
        key = f"proxies.{name}.port"
        if exc.errno == errno.EADDRINUSE or "address already in use" in str(exc).lower():
            return (f"cannot listen on {where} for the {API_TITLES.get(name, name)}: port "
                    f"{cfg.port} is already in use by another program; stop it or change "
                    f"{key} in {self.config_path}")
        if exc.errno in (errno.EACCES, errno.EPERM):
            return (f"cannot listen on {where} for the {API_TITLES.get(name, name)}: "
                    f"permission denied; choose a port above 1023 in {key}")
        return (f"cannot listen on {where} for the {API_TITLES.get(name, name)}: {exc}; "
                f"check proxies.{name}.host and {key} in {self.config_path}")

    async def _stop(self, name: str) -> None:
        listener = self._listeners.pop(name, None)
        if listener is None:
            return
        await listener.runner.cleanup()
        log.info("%s stopped listening on %s", API_TITLES.get(name, name), listener.address)
        self._events.publish(ListenerStateChanged(name, listener.address, False))

    async def close(self) -> None:
        for name in list(self._listeners):
            await self._stop(name)
