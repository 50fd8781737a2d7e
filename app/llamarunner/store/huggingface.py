"""Pulls of `hf.co/{owner}/{repo}[:{quant}]`: list the repository's GGUF files, pick one.

The hub is `$HF_ENDPOINT` when set (as huggingface_hub reads it), else
https://huggingface.co; `$HF_TOKEN` (or the older `$HUGGING_FACE_HUB_TOKEN`) is sent to
the hub for gated and private repositories. The file list comes from
`/api/models/{repo}/tree/main` (with each LFS file's sha256, which the download is
checked against), the bytes from `/{repo}/resolve/main/{path}`.

The tag picks the file the way the hub's own Ollama support does: the GGUF whose name
ends with the tag (`Q4_K_M`, `IQ3_S-imat`, any case); without a tag Q4_K_M when the
repository has it, else the nearest common quantization, else the first GGUF by name.
Projector files (`mmproj`) are never the model; one of them comes along as the
projector. Split GGUFs (`-00001-of-00003`) cannot be stored as one blob and are refused.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from yarl import URL

from ..library.discovery import MMPROJ_NAME, gguf_stem, is_gguf_name, quant_token, split_part
from .errors import PullError, RemoteNotFoundError
from .names import ModelName
from .registry import unreachable

__all__ = [
    "DEFAULT_ENDPOINT",
    "QUANT_PREFERENCE",
    "HubClient",
    "HubFile",
    "hub_endpoint",
    "hub_token",
    "list_gguf_files",
    "parse_tree",
    "pick_model_file",
    "pick_projector",
    "quant_choices",
]

DEFAULT_ENDPOINT: Final = "https://huggingface.co"
# Without a tag: Q4_K_M when there is one (the hub's default), else the nearest in size
# and quality, then larger, then smaller ones.
QUANT_PREFERENCE: Final = (
    "Q4_K_M", "Q4_K_S", "Q4_0", "IQ4_XS", "IQ4_NL", "Q4_1", "Q5_K_M", "Q5_K_S", "Q5_0",
    "Q6_K", "Q8_0", "Q3_K_M", "Q3_K_L", "Q3_K_S", "IQ3_M", "IQ3_XS", "Q2_K", "BF16", "F16",
    "F32",
)
_PROJECTOR_PREFERENCE: Final = ("f16", "bf16", "q8_0", "f32")
_SHA256: Final = re.compile(r"[0-9a-f]{64}")
_MAX_LISTING_PAGES: Final = 50


@dataclass(frozen=True)
class HubFile:
    path: str
    size: int
    sha256: str | None  # the LFS object id; None for a file kept in git itself

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def hub_endpoint(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return (env.get("HF_ENDPOINT", "").strip() or DEFAULT_ENDPOINT).rstrip("/")


def hub_token(env: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        value = env.get(key, "").strip()
        if value:
            return value
    return None


def parse_tree(entries: object) -> list[HubFile]:
    """The files of a `/tree` answer (folders and malformed entries left out)."""
    files: list[HubFile] = []
    if not isinstance(entries, list):
        return files
    for item in entries:
        if not isinstance(item, dict) or item.get("type") != "file":
            continue
        path, size, lfs = item.get("path"), item.get("size"), item.get("lfs")
        if not isinstance(path, str) or isinstance(size, bool) or not isinstance(size, int):
            continue
        sha = lfs.get("oid") if isinstance(lfs, dict) else None
        if isinstance(lfs, dict) and isinstance(lfs.get("size"), int):
            size = lfs["size"]
        files.append(HubFile(path, size, sha if isinstance(sha, str) and _SHA256.fullmatch(
            sha) else None))
    return files


def _models(files: Sequence[HubFile]) -> list[HubFile]:
    return sorted((f for f in files if is_gguf_name(f.name) and not MMPROJ_NAME.search(f.name)),
                  key=lambda f: f.path)


def _ends_with_tag(file: HubFile, tag: str) -> bool:
    stem = gguf_stem(file.name)
    split = split_part(file.name)
    if split is not None:
        stem = split[0]
    stem, tag = stem.lower(), tag.lower()
    return stem == tag or (stem.endswith(tag) and stem[-len(tag) - 1] in "-_.")


def pick_model_file(files: Sequence[HubFile], tag: str, repo: str) -> HubFile:
    """The GGUF file `tag` means ("latest": the default pick). Raises RemoteNotFoundError
    naming the quantizations there are, or PullError for a split model."""
    models = _models(files)
    if not models:
        raise RemoteNotFoundError(f"the Hugging Face repository {repo} has no GGUF model file")
    if tag.lower() == "latest":
        for quant in QUANT_PREFERENCE:
            matches = [f for f in models if _ends_with_tag(f, quant)]
            if matches:
                return _single(matches, repo, quant)
        return _single([models[0]], repo, models[0].name)
    matches = [f for f in models if _ends_with_tag(f, tag)]
    if not matches:
        available = sorted({_quant_label(f) for f in models})
        raise RemoteNotFoundError(
            f"the Hugging Face repository {repo} has no GGUF file for the tag {tag!r}; "
            f"its files end with: {', '.join(available)}")
    return _single(matches, repo, tag)


def _quant_label(file: HubFile) -> str:
    """"Q4_K_M" for "model-Q4_K_M.gguf" (the name's own case), else the whole stem."""
    split = split_part(file.name)
    stem = split[0] if split else gguf_stem(file.name)
    token = quant_token(stem)
    return stem[-len(token):] if token else stem


def _single(matches: list[HubFile], repo: str, tag: str) -> HubFile:
    whole = [f for f in matches if split_part(f.name) is None]
    if whole:
        # "model-Q4_K_M" before "model-UD-Q4_K_M": the shortest name is the plain one.
        return min(whole, key=lambda f: (len(f.name), f.path))
    raise PullError(
        f"the {tag} GGUF of {repo} is split across {len(matches)} files, which cannot be "
        "stored as one blob; pick another tag, or download the parts into a model folder",
        status=400)


def pick_projector(files: Sequence[HubFile]) -> HubFile | None:
    """The vision projector to pull along, if the repository has one (F16 first)."""
    projectors = sorted((f for f in files if is_gguf_name(f.name) and MMPROJ_NAME.search(f.name)
                         and split_part(f.name) is None), key=lambda f: f.path)
    for kind in _PROJECTOR_PREFERENCE:
        for file in projectors:
            if re.search(rf"(^|[-_.]){kind}([-_.]|$)", gguf_stem(file.name), re.IGNORECASE):
                return file
    return projectors[0] if projectors else None


class HubClient:
    """The hub's file listing and downloads for one pull engine."""

    def __init__(self, session: aiohttp.ClientSession, endpoint: str,
                 token: str | None = None) -> None:
        self._session = session
        self.endpoint = URL(endpoint)
        self._token = token

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self._token:
            # aiohttp drops it when the hub redirects a download to its CDN's host.
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    @staticmethod
    def repo(name: ModelName) -> str:
        return f"{name.namespace}/{name.model}"

    def file_url(self, name: ModelName, path: str) -> URL:
        return self.endpoint.joinpath(self.repo(name), "resolve", "main", *path.split("/"))

    async def list_files(self, name: ModelName) -> list[HubFile]:
        repo = self.repo(name)
        url: URL | None = self.endpoint.joinpath("api", "models", name.namespace, name.model,
                                                 "tree", "main").with_query(recursive="true")
        files: list[HubFile] = []
        for _ in range(_MAX_LISTING_PAGES):
            if url is None:
                break
            async with self.get(name, url) as resp:
                if resp.status in (401, 403, 404):
                    raise RemoteNotFoundError(
                        f"the Hugging Face repository {repo} was not found on "
                        f"{self.endpoint.host} ({resp.status}); check the name, and for a "
                        "gated or private repository accept its terms and set HF_TOKEN")
                if resp.status >= 400:
                    raise PullError(f"{self.endpoint.host} answered {resp.status} when "
                                    f"listing {repo}", status=502, resumable=True)
                try:
                    body: Any = await resp.json(content_type=None)
                except (ValueError, aiohttp.ClientError, TimeoutError) as exc:
                    raise PullError(f"{self.endpoint.host} sent a file list of {repo} that "
                                    f"cannot be read: {exc}", status=502) from exc
                files += parse_tree(body)
                following = resp.links.get("next")
                url = URL(str(following["url"])) if following and "url" in following else None
        return files

    @contextlib.asynccontextmanager
    async def get(self, name: ModelName, url: URL, headers: Mapping[str, str] | None = None
                  ) -> AsyncIterator[aiohttp.ClientResponse]:
        try:
            resp = await self._session.get(url, headers=self._headers(headers))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise unreachable(self.endpoint.host or name.host, exc) from exc
        try:
            yield resp
        finally:
            resp.release()


def quant_choices(files: Sequence[HubFile], repo: str) -> list[tuple[str, int, str]]:
    """The model files a pull can pick, as (path, size, quant tag), the default pick first.

    Split files and projectors are left out (neither can be the model of a pull); the tag
    is what `hf.co/{repo}:{tag}` takes to get that file.
    """
    models = [f for f in _models(files) if split_part(f.name) is None]
    if not models:
        return []
    try:
        default: HubFile | None = pick_model_file(files, "latest", repo)
    except PullError:
        default = None
    ordered = sorted(models, key=lambda f: (f != default, f.path))
    return [(f.path, f.size, _quant_label(f)) for f in ordered]


async def list_gguf_files(repo: str, *, session: aiohttp.ClientSession | None = None,
                          env: Mapping[str, str] | None = None) -> list[tuple[str, int, str]]:
    """The GGUF model files of the hub repository `owner/repo` (see `quant_choices`).

    For a download dialog's quant picker. Raises RemoteNotFoundError for a repository
    that is not there (or is gated), RemoteUnreachableError when the hub cannot be reached.
    """
    owner, _, name = repo.partition("/")
    model = ModelName("hf.co", owner, name, "latest")
    own = session is None
    if session is None:
        session = aiohttp.ClientSession(
            trust_env=True, headers={"User-Agent": "llamarunner"},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60))
    try:
        hub = HubClient(session, hub_endpoint(env), hub_token(env))
        return quant_choices(await hub.list_files(model), repo)
    finally:
        if own:
            await session.close()
