"""Event types the core publishes and the bus that delivers them to observers (GUI, logs)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunnerStateChanged:
    model: str
    state: str
    reason: str | None = None


@dataclass(frozen=True)
class RunnerLogLine:
    model: str
    line: str


@dataclass(frozen=True)
class ListenerStateChanged:
    name: str
    address: str
    listening: bool
    error: str | None = None


@dataclass(frozen=True)
class ConfigApplied:
    path: str


@dataclass(frozen=True)
class ConfigRejected:
    path: str
    error: str


@dataclass(frozen=True)
class PeerStateChanged:
    """A peer (`peers.<name>`) became reachable or not, or its list of models changed."""

    name: str
    available: bool
    reason: str | None = None


@dataclass(frozen=True)
class RpcWorkerStateChanged:
    """An RPC worker (a model's `rpc`) answered differently: up, busy, down, not-rpc."""

    address: str  # host:port as the config names it
    state: str
    reason: str | None = None


Event = (RunnerStateChanged | RunnerLogLine | ListenerStateChanged | ConfigApplied
         | ConfigRejected | PeerStateChanged | RpcWorkerStateChanged)
Subscriber = Callable[[Event], None]


class EventBus:
    """Synchronous fan-out: publish calls every subscriber in order on the caller's thread.

    Subscribers must be cheap (the GUI bridge re-emits as a Qt signal); one that raises is
    logged and does not stop delivery to the others.
    """

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, event: Event) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:
                log.exception("event subscriber failed on %r", event)
