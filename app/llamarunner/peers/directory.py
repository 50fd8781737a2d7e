"""Which models each peer offers and whether it answers: read from its /v1/models.

A peer is any OpenAI-compatible server (another LlamaRunner, llama-server, vLLM, LM
Studio) named under `peers` in the config. Its list is read at start and every `refresh`;
a peer that stops answering keeps its last list, marked unavailable, so a client's chosen
model does not vanish from its settings while the other machine reboots.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import aiohttp

from ..config.defaults import PEER_CONNECT_TIMEOUT
from ..config.schema import PeerConfig
from ..core.events import EventBus, PeerStateChanged

log = logging.getLogger(__name__)

# A peer's model listing is small; one that takes longer than this is treated as down.
LIST_TIMEOUT_S = 15.0
# What our own /v1/models says of a model a peer serves ("peer NAME"): such entries in a
# peer's list are its peers' models, which are not taken over, so two machines that are
# each other's peer do not list each other's lists back and forth.
PEER_OWNER_PREFIX = "peer "
_MAX_LIST_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class PeerStatus:
    """What is known of one peer; `available` None until it was first asked."""

    name: str
    url: str
    models: tuple[str, ...] = ()
    available: bool | None = None
    reason: str | None = None
    checked_at: float | None = None  # wall-clock time of the last answer or failure


def auth_headers(peer: PeerConfig) -> dict[str, str]:
    """The headers every request to the peer carries (its key, when it has one)."""
    headers = {"Accept-Encoding": "identity"}
    if peer.api_key:
        headers["Authorization"] = f"Bearer {peer.api_key}"
    return headers


def models_of_listing(body: bytes) -> tuple[str, ...]:
    """The model ids of an OpenAI `/v1/models` answer, without the peer's own peers' models.

    Raises ValueError for anything that is not such an answer.
    """
    data = json.loads(body)
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError('the answer has no "data" list of models')
    ids: list[str] = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        owner = item.get("owned_by")
        if isinstance(owner, str) and owner.startswith(PEER_OWNER_PREFIX):
            continue
        model_id = item["id"].strip()
        if model_id and model_id not in ids:
            ids.append(model_id)
    return tuple(ids)


@dataclass
class _Peer:
    config: PeerConfig
    status: PeerStatus
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class PeerDirectory:
    """The peers' model lists and states; `on_change` runs whenever either changes."""

    def __init__(self, events: EventBus, on_change: Callable[[], None]) -> None:
        self._events = events
        self._on_change = on_change
        self._peers: dict[str, _Peer] = {}
        self._session: aiohttp.ClientSession | None = None

    # ---- configuration -------------------------------------------------------------

    def configure(self, peers: Mapping[str, PeerConfig]) -> None:
        """Adopt the config's peers: new ones are read at once, removed ones forgotten."""
        changed = False
        for name in list(self._peers):
            if name not in peers or peers[name] != self._peers[name].config:
                self._forget(name)
                changed = True
        for name, config in peers.items():
            if name in self._peers:
                continue
            status = PeerStatus(name, config.url, models=config.models)
            peer = self._peers[name] = _Peer(config, status)
            peer.task = asyncio.get_running_loop().create_task(
                self._keep_fresh(name), name=f"peer:{name}")
            changed = True
        if changed:
            self._on_change()

    def _forget(self, name: str) -> None:
        peer = self._peers.pop(name)
        if peer.task is not None:
            peer.task.cancel()

    async def close(self) -> None:
        tasks = [p.task for p in self._peers.values() if p.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._peers.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ---- what the rest of the app reads ---------------------------------------------

    def statuses(self) -> list[PeerStatus]:
        return [self._peers[name].status for name in sorted(self._peers)]

    def status(self, name: str) -> PeerStatus | None:
        peer = self._peers.get(name)
        return peer.status if peer is not None else None

    def config(self, name: str) -> PeerConfig | None:
        peer = self._peers.get(name)
        return peer.config if peer is not None else None

    def mark(self, name: str, *, available: bool, reason: str | None = None) -> None:
        """Record what a request to the peer found (it answered, or could not be reached)."""
        peer = self._peers.get(name)
        if peer is None:
            return
        self._set(peer, replace(peer.status, available=available, reason=reason,
                                checked_at=time.time()))

    # ---- reading the peers' lists ------------------------------------------------

    async def refresh(self, name: str) -> PeerStatus | None:
        """Ask the peer for its models now; return what is known afterwards."""
        peer = self._peers.get(name)
        if peer is None:
            return None
        try:
            listed = await self._fetch_models(peer.config)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            reason = describe_failure(exc)
            if peer.status.available is not False:
                log.warning("peer %s (%s) is unavailable: %s", name, peer.config.url, reason)
            self._set(peer, replace(peer.status, available=False, reason=reason,
                                    checked_at=time.time()))
            return peer.status
        if peer.status.available is False:
            log.info("peer %s (%s) is available again", name, peer.config.url)
        models = peer.config.models or listed
        self._set(peer, replace(peer.status, models=models, available=True, reason=None,
                                checked_at=time.time()))
        return peer.status

    async def _keep_fresh(self, name: str) -> None:
        while name in self._peers:
            await self.refresh(name)
            peer = self._peers.get(name)
            if peer is None or math.isinf(peer.config.refresh):
                return
            await asyncio.sleep(peer.config.refresh)

    async def _fetch_models(self, peer: PeerConfig) -> tuple[str, ...]:
        session = self._http()
        timeout = aiohttp.ClientTimeout(total=LIST_TIMEOUT_S, sock_connect=PEER_CONNECT_TIMEOUT)
        async with session.get(f"{peer.url}/models", headers=auth_headers(peer),
                               timeout=timeout) as resp:
            body = await resp.content.read(_MAX_LIST_BYTES)
            if resp.status in (401, 403):
                raise ValueError(f"it refused our key (HTTP {resp.status}); check its api_key")
            if resp.status != 200:
                if peer.models:
                    return peer.models  # it answers: a server without /models is still up
                raise ValueError(f"GET /models answered HTTP {resp.status}")
        if peer.models:
            return peer.models
        return models_of_listing(body)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # trust_env=False: like the runners' traffic, a peer on the LAN is reached
            # directly, not through a proxy meant for the internet.
            self._session = aiohttp.ClientSession(trust_env=False)
        return self._session

    def _set(self, peer: _Peer, status: PeerStatus) -> None:
        before = peer.status
        peer.status = status
        if (before.available, before.models, before.reason) != (
                status.available, status.models, status.reason):
            self._events.publish(PeerStateChanged(status.name, bool(status.available),
                                                  status.reason))
            self._on_change()


def describe_failure(exc: BaseException) -> str:
    """A short reason for a failed request, without URLs' credentials or headers."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port} ({exc.os_error.strerror or exc})"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status}"
    return str(exc) or type(exc).__name__
