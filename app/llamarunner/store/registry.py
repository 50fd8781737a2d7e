"""The client side of an Ollama registry: v2 manifests and blobs, with its token challenge.

`registry.ollama.ai` by default, any `host[:port]` a name gives. HTTPS unless the pull
asks for `insecure` (then plain HTTP, as Ollama does). A 401 carrying
`WWW-Authenticate: Bearer realm=...,service=...,scope=...` is answered once by fetching
a token from the realm, which must be on the registry's own host (so a registry cannot
send our requests elsewhere), as in Ollama's server/auth.go.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from typing import Final

import aiohttp
from yarl import URL

from .errors import PullError, RemoteNotFoundError, RemoteUnreachableError
from .layout import MEDIA_MANIFEST
from .names import ModelName

__all__ = ["RegistryClient", "parse_challenge", "unreachable"]

_CHALLENGE_PARAM: Final = re.compile(r'(\w+)="([^"]*)"')
# A manifest is a few KB; a registry that sends more is not one.
_MAX_MANIFEST_BYTES: Final = 8 * 1024 * 1024
_TRANSIENT_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})


def parse_challenge(header: str) -> dict[str, str]:
    """`Bearer realm="...",service="...",scope="..."` as a dict (empty when not Bearer)."""
    scheme, _, params = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return {}
    return {key.lower(): value for key, value in _CHALLENGE_PARAM.findall(params)}


def unreachable(host: str, exc: BaseException) -> RemoteUnreachableError:
    reason = str(exc) or type(exc).__name__
    return RemoteUnreachableError(
        f"cannot reach {host}: {reason}; check the network connection (and HTTPS_PROXY "
        "if you need a proxy), then pull again")


class RegistryClient:
    """Talks to registries for one pull engine; remembers tokens per repository."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self._tokens: dict[tuple[str, str], str] = {}

    def base_url(self, name: ModelName, *, insecure: bool) -> URL:
        if name.scheme == "http" and not insecure:
            raise PullError(f"insecure protocol http for {name.host}: pass \"insecure\": true "
                            "to pull over plain HTTP", status=400)
        return URL(f"{'http' if insecure else 'https'}://{name.host}")

    def manifest_url(self, name: ModelName, *, insecure: bool) -> URL:
        return self.base_url(name, insecure=insecure) / "v2" / name.namespace / name.model / (
            "manifests") / name.tag

    def blob_url(self, name: ModelName, digest: str, *, insecure: bool) -> URL:
        return self.base_url(name, insecure=insecure) / "v2" / name.namespace / name.model / (
            "blobs") / digest

    async def manifest(self, name: ModelName, *, insecure: bool) -> bytes:
        """The manifest's bytes, exactly as served (they are written to the store as is)."""
        url = self.manifest_url(name, insecure=insecure)
        async with self.request(name, url, {"Accept": MEDIA_MANIFEST}) as resp:
            if resp.status == 404:
                raise RemoteNotFoundError(
                    f"pull model manifest: model '{name.display}' was not found on "
                    f"{name.host}; check the name and tag")
            if resp.status >= 400:
                raise await self._status_error(name, resp, "pull model manifest")
            if resp.content_length is not None and resp.content_length > _MAX_MANIFEST_BYTES:
                raise PullError(f"pull model manifest: {name.host} sent "
                                f"{resp.content_length} bytes, too many for a manifest")
            try:
                data = await resp.content.read(_MAX_MANIFEST_BYTES + 1)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise unreachable(name.host, exc) from exc
            if len(data) > _MAX_MANIFEST_BYTES:
                raise PullError(f"pull model manifest: {name.host} sent too many bytes for "
                                "a manifest")
            return data

    @contextlib.asynccontextmanager
    async def request(self, name: ModelName, url: URL, headers: Mapping[str, str]
                      ) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET `url` with the repository's token, answering one token challenge."""
        key = (name.host.lower(), name.repository)
        for attempt in range(2):
            sent = dict(headers)
            if key in self._tokens:
                sent["Authorization"] = f"Bearer {self._tokens[key]}"
            try:
                resp = await self._session.get(url, headers=sent)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise unreachable(name.host, exc) from exc
            if resp.status == 401 and attempt == 0:
                challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
                resp.release()
                self._tokens[key] = await self._token(name, url, challenge)
                continue
            try:
                if resp.status == 401:
                    raise PullError(f"{name.host} refused access to {name.repository} "
                                    "(401 unauthorized)", status=403)
                yield resp
            finally:
                resp.release()
            return

    async def _token(self, name: ModelName, url: URL, challenge: Mapping[str, str]) -> str:
        realm = challenge.get("realm")
        if not realm:
            raise PullError(f"{name.host} asked for credentials (401) without saying where "
                            "to get a token", status=403)
        realm_url = URL(realm)
        # Ollama's guard: a token request never goes to another host than the registry's.
        if realm_url.host != url.host or realm_url.port != url.port:
            raise PullError(f"{name.host} sent its token request to another host "
                            f"({realm_url.host}); refusing it", status=403)
        query: list[tuple[str, str]] = [("service", challenge.get("service", ""))]
        query += [("scope", scope) for scope in challenge.get("scope", "").split()]
        query += [("ts", str(int(time.time()))), ("nonce", secrets.token_urlsafe(16))]
        try:
            async with self._session.get(realm_url.update_query(query)) as resp:
                if resp.status >= 400:
                    raise PullError(f"{name.host} refused a token for {name.repository} "
                                    f"({resp.status})", status=403)
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise unreachable(name.host, exc) from exc
        except ValueError:
            raise PullError(f"{name.host} answered the token request with something that "
                            "is not JSON", status=502) from None
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise PullError(f"{name.host} sent no token for {name.repository}", status=502)
        return token

    @staticmethod
    async def _status_error(name: ModelName, resp: aiohttp.ClientResponse, what: str
                            ) -> PullError:
        text = ""
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, UnicodeDecodeError):
            text = (await resp.content.read(2000)).decode("utf-8", "replace").strip()
        detail = f"{resp.status}: {text}" if text else str(resp.status)
        transient = resp.status in _TRANSIENT_STATUSES
        return PullError(f"{what}: {name.host} answered {detail}", status=502,
                         resumable=transient)
