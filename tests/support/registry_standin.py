"""A loopback stand-in for an Ollama registry and the Hugging Face hub, with fault switches.

It speaks the real protocols, so the pull engine is tested against what it meets online:

* registry (Ollama's server/images.go, server/download.go): ``GET /v2/<ns>/<model>/
  manifests/<tag>`` (the manifest as Go writes it), ``GET|HEAD /v2/<ns>/<model>/blobs/
  <digest>`` with ``Range: bytes=N-`` answered 206 + ``Content-Range``; with
  ``require_token`` every request needs ``Authorization: Bearer <token>``, else 401 and
  ``WWW-Authenticate: Bearer realm="<base>/token",service=...,scope=...``, and
  ``GET /token`` hands the token out.
* hub: ``GET /api/models/<owner>/<repo>/tree/main`` (files with size and ``lfs.oid``, the
  sha256), ``GET /api/models/<owner>/<repo>`` (``siblings``), and ``GET /<owner>/<repo>/
  resolve/main/<path>`` with the same Range support.

Switches (`Faults`): a corrupt blob (other bytes, same length), a transfer cut after N
bytes for the next K requests of a file (an early end, or a connection reset), 404s, a
slow transfer, a server that ignores Range. Every request is logged (`requests`), and
the bytes sent per file are counted (`sent`), so a test can see that a resumed download
fetched nothing twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MEDIA_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_PROJECTOR = "application/vnd.ollama.image.projector"
MEDIA_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_SYSTEM = "application/vnd.ollama.image.system"
MEDIA_PARAMS = "application/vnd.ollama.image.params"
MEDIA_LICENSE = "application/vnd.ollama.image.license"
MEDIA_TENSOR = "application/vnd.ollama.image.tensor"

TOKEN = "stand-in-token"
_CHUNK = 64 * 1024


def sha256_digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


@dataclass
class Faults:
    """What goes wrong, keyed by blob digest or hub file path."""

    corrupt: set[str] = field(default_factory=set)
    # key -> (bytes sent before the cut, how many more requests are cut)
    cut: dict[str, tuple[int, int]] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)  # digests, "<repo>:<tag>", hub paths
    delay: float = 0.0  # seconds between chunks
    ignore_range: bool = False
    # How a cut ends: a (chunked) body that stops early, so the client has every byte sent
    # and the counts are exact; or, with `abort`, a connection reset that loses bytes in
    # flight, as a real network does.
    abort: bool = False
    require_token: bool = False


@dataclass(frozen=True)
class Logged:
    method: str
    path: str
    range: str | None
    authorization: str | None


@dataclass
class StandIn:
    """The running servers; `host` is `127.0.0.1:<port>`, for model names."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[tuple[str, str], bytes] = field(default_factory=dict)
    hub: dict[str, dict[str, bytes]] = field(default_factory=dict)  # repo -> path -> bytes
    hub_plain: set[tuple[str, str]] = field(default_factory=set)  # files kept in git, no LFS
    faults: Faults = field(default_factory=Faults)
    requests: list[Logged] = field(default_factory=list)
    sent: Counter[str] = field(default_factory=Counter)
    host: str = ""
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}"

    # ---- content -------------------------------------------------------------------

    def add_blob(self, data: bytes) -> dict[str, Any]:
        digest = sha256_digest(data)
        self.blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    def add_model(self, repository: str, tag: str, gguf: bytes, *,
                  system: str | None = None, params: dict[str, Any] | None = None,
                  template: str | None = None, license: str | None = None,
                  media_type: str = MEDIA_MODEL, extra: list[tuple[str, bytes]] | None = None,
                  ) -> dict[str, Any]:
        """Publish a model as Ollama's registry serves one; returns its manifest."""
        layers = [{"mediaType": media_type, **self.add_blob(gguf)}]
        texts = [(MEDIA_TEMPLATE, template), (MEDIA_SYSTEM, system), (MEDIA_LICENSE, license)]
        for media, text in texts:
            if text is not None:
                layers.append({"mediaType": media, **self.add_blob(text.encode())})
        if params is not None:
            layers.append({"mediaType": MEDIA_PARAMS,
                           **self.add_blob(json.dumps(params).encode())})
        for media, data in extra or []:
            layers.append({"mediaType": media, **self.add_blob(data)})
        config = self.add_blob(json.dumps({"model_format": "gguf", "rootfs": {
            "type": "layers", "diff_ids": [layer["digest"] for layer in layers]}}).encode())
        manifest = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
                    "config": {"mediaType": MEDIA_CONFIG, **config}, "layers": layers}
        self.manifests[(repository, tag)] = json.dumps(manifest, separators=(",", ":")).encode()
        return manifest

    def add_hub_repo(self, repo: str, files: dict[str, bytes]) -> None:
        self.hub[repo] = dict(files)

    def ranges(self, path_part: str) -> list[str | None]:
        """The Range headers of every request whose path contains `path_part`."""
        return [r.range for r in self.requests if path_part in r.path]

    # ---- serving -------------------------------------------------------------------

    async def start(self) -> StandIn:
        app = web.Application()
        app.middlewares.append(self._log)
        app.router.add_get("/token", self._token)
        app.router.add_get("/v2/{ns}/{model}/manifests/{tag}", self._manifest)
        app.router.add_get("/v2/{ns}/{model}/blobs/{digest}", self._blob)
        app.router.add_get("/api/models/{owner}/{repo}/tree/main", self._tree)
        app.router.add_get("/api/models/{owner}/{repo}", self._model_info)
        app.router.add_get("/{owner}/{repo}/resolve/main/{path:.+}", self._resolve)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.host = f"127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _log(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(Logged(request.method, request.path,
                                    request.headers.get("Range"),
                                    request.headers.get("Authorization")))
        if (self.faults.require_token and request.path.startswith("/v2/")
                and request.headers.get("Authorization") != f"Bearer {TOKEN}"):
            ns, model = request.match_info.get("ns"), request.match_info.get("model")
            challenge = (f'Bearer realm="{self.base_url}/token",service="stand-in",'
                         f'scope="repository:{ns}/{model}:pull"')
            return web.json_response({"errors": [{"code": "UNAUTHORIZED"}]}, status=401,
                                     headers={"WWW-Authenticate": challenge})
        return await handler(request)

    async def _token(self, request: web.Request) -> web.Response:
        assert request.query.get("service") == "stand-in"
        return web.json_response({"token": TOKEN})

    async def _manifest(self, request: web.Request) -> web.Response:
        repository = f"{request.match_info['ns']}/{request.match_info['model']}"
        key = (repository, request.match_info["tag"])
        if key not in self.manifests or f"{repository}:{key[1]}" in self.faults.missing:
            return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN"}]}, status=404)
        return web.Response(body=self.manifests[key], content_type=MEDIA_MANIFEST)

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        if digest not in self.blobs or digest in self.faults.missing:
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404)
        return await self._send(request, digest, self.blobs[digest])

    async def _tree(self, request: web.Request) -> web.Response:
        repo = f"{request.match_info['owner']}/{request.match_info['repo']}"
        if repo not in self.hub or repo in self.faults.missing:
            return web.json_response({"error": "Repository not found"}, status=401)
        entries = []
        for path, data in sorted(self.hub[repo].items()):
            entry: dict[str, Any] = {"type": "file", "oid": hashlib.sha1(data).hexdigest(),
                                     "size": len(data), "path": path}
            if (repo, path) not in self.hub_plain:
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                                "pointerSize": 134}
            entries.append(entry)
        return web.json_response(entries)

    async def _model_info(self, request: web.Request) -> web.Response:
        repo = f"{request.match_info['owner']}/{request.match_info['repo']}"
        if repo not in self.hub:
            return web.json_response({"error": "Repository not found"}, status=401)
        return web.json_response({"id": repo, "siblings": [
            {"rfilename": path} for path in sorted(self.hub[repo])]})

    async def _resolve(self, request: web.Request) -> web.StreamResponse:
        repo = f"{request.match_info['owner']}/{request.match_info['repo']}"
        path = request.match_info["path"]
        if repo not in self.hub or path not in self.hub[repo] or path in self.faults.missing:
            return web.json_response({"error": "Entry not found"}, status=404)
        return await self._send(request, path, self.hub[repo][path])

    async def _send(self, request: web.Request, key: str, data: bytes) -> web.StreamResponse:
        if key in self.faults.corrupt:
            data = bytes(b ^ 0xFF for b in data[:16]) + data[16:]
        start = 0
        header = request.headers.get("Range")
        if header and not self.faults.ignore_range:
            start = int(header.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
        body = data[start:]
        status = 206 if start else 200
        cut_at, times = self.faults.cut.get(key, (0, 0))
        limit = len(body)
        if times > 0:
            self.faults.cut[key] = (cut_at, times - 1)
            limit = max(0, min(len(body), cut_at - start))
        headers = {"Content-Type": "application/octet-stream"}
        if limit == len(body) or self.faults.abort:
            headers["Content-Length"] = str(len(body))
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        offset = 0
        while offset < limit:
            piece = body[offset:min(offset + _CHUNK, limit)]
            await response.write(piece)
            self.sent[key] += len(piece)
            offset += len(piece)
            if self.faults.delay:
                await asyncio.sleep(self.faults.delay)
        if limit < len(body) and self.faults.abort:
            assert request.transport is not None
            request.transport.abort()  # the connection dies; bytes in flight are lost
            return response
        await response.write_eof()
        return response

