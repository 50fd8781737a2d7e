"""Requests for a peer's model: the lease the routes hold and the POST that reaches the peer.

A peer lease looks to the relay like a local one (the same streaming, cancellation and
first-byte watchdog); what differs is where the POST goes: the peer's OpenAI base URL,
with the peer's key, and the body's `model` replaced by the peer's own id for it. Peers
speak only the OpenAI API, so llama-server's own endpoints (/tokenize, /props…) are not
available for their models.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Final

import aiohttp

from ..config.defaults import PEER_CONNECT_TIMEOUT
from ..config.schema import ArgValue, PeerConfig
from ..core.errors import PeerUnavailableError, PeerUnsupportedError, UpstreamError
from ..runner.manager import Lease
from .directory import auth_headers, describe_failure

_OPENAI_PREFIX: Final = "/v1/"
_JSON: Final = "application/json"
# Connecting is bounded; the answer is not (a long generation), the first-byte watchdog
# of the relay bounds the wait for its first bytes.
_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=PEER_CONNECT_TIMEOUT,
                                 connect=PEER_CONNECT_TIMEOUT)


class RemoteModel:
    """What a route may ask of the runner behind a lease, for a model a peer runs."""

    def __init__(self, name: str, peer: str, remote_id: str) -> None:
        self.name = name
        self.peer = peer
        self.remote_id = remote_id

    def effective_args(self) -> dict[str, ArgValue]:
        return {}  # the peer's own settings, unknown here

    def describe_argv(self) -> list[str]:
        return []


class PeerCall:
    """Sends one request for `model` to its peer and reports what it found to `on_result`."""

    def __init__(self, model: RemoteModel, config: PeerConfig,
                 on_result: Callable[[bool, str | None], None]) -> None:
        self.model = model
        self.config = config
        self._on_result = on_result

    def url_for(self, path: str) -> str:
        """The peer's URL for one of our OpenAI paths ("/v1/chat/completions")."""
        if not path.startswith(_OPENAI_PREFIX):
            raise PeerUnsupportedError(self.model.peer, self.model.name,
                                       f"llama-server's {path.split('?')[0]}")
        return self.config.url + path[len(_OPENAI_PREFIX) - 1:]

    def body_for(self, body: bytes, content_type: str) -> bytes:
        """The request body with `model` set to the peer's own id for the model."""
        if content_type != _JSON:
            return body
        try:
            data = json.loads(body)
        except ValueError:
            return body  # the peer answers it in its own words
        if isinstance(data, dict):
            data["model"] = self.model.remote_id
        return json.dumps(data).encode()

    async def post(self, http: aiohttp.ClientSession, path: str, body: bytes,
                   content_type: str = _JSON) -> aiohttp.ClientResponse:
        """POST to the peer; raise PeerUnavailableError naming it when it cannot be reached."""
        url = self.url_for(path)
        headers = {**auth_headers(self.config), "Content-Type": content_type}
        try:
            response = await http.post(url, data=self.body_for(body, content_type),
                                       headers=headers, timeout=_TIMEOUT)
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            reason = _unreachable(exc)
            self._on_result(False, reason)
            raise PeerUnavailableError(self.model.peer, self.model.name, reason) from exc
        except aiohttp.ClientError as exc:
            self._on_result(False, str(exc))
            raise UpstreamError(f"peer '{self.model.peer}' broke off the request for model "
                                f"'{self.model.name}': {exc}") from exc
        if response.status in (401, 403):
            # Our key for the peer is wrong: not the client's fault, so not the client's 401.
            response.close()
            reason = f"it refused this server's key (HTTP {response.status}); check " \
                     f"peers.{self.model.peer}.api_key"
            self._on_result(False, reason)
            raise PeerUnavailableError(self.model.peer, self.model.name, reason, status=502)
        self._on_result(True, None)
        return response


class PeerLease(Lease):
    """A lease on a peer's model: nothing to wait for or give back here."""

    def __init__(self, call: PeerCall, first_token_timeout: float) -> None:
        self.runner = call.model
        self.remote = self._call = call
        self.load_wait = 0.0
        self._first_token_timeout = first_token_timeout

    @property
    def base_url(self) -> str:
        return self.remote_call.config.url

    @property
    def headers(self) -> Mapping[str, str]:
        return auth_headers(self.remote_call.config)

    @property
    def first_token_timeout(self) -> float:
        return self._first_token_timeout

    @property
    def remote_call(self) -> PeerCall:
        return self._call

    def release(self, keep_alive: float | None = None) -> None:
        del keep_alive  # the peer keeps its models loaded as it sees fit


def _unreachable(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return f"no connection within {PEER_CONNECT_TIMEOUT:g} s"
    return describe_failure(exc)
