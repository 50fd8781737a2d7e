"""LM Studio's download API: `POST /api/v1/models/download` and its job status.

A download is a pull of `hf.co/{owner}/{repo}[:{quant}]` by the store's pull engine, the
same job the Ollama API, the desktop app and `llamarunner pull` see. LM Studio's clients
start one and poll it, so the job runs on with nobody watching (an Ollama pull stops when
its client hangs up). Speed and time left come from the byte counts each poll sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web
from yarl import URL

from ...core.errors import BadRequestError, LlamaRunnerError
from ...library.discovery import gguf_stem, is_gguf_name, quant_token, split_part
from ...store.download import JobState, PullJob
from ...store.errors import PullError
from ...store.huggingface import hub_endpoint
from ...store.meter import TransferMeter, eta_seconds, iso_millis
from ...store.names import HF_HOSTS, parse_name
from ..body import read_json_object
from ..redact import is_local_client, redact_paths
from .backend import LMSTUDIO_BACKEND, LMStudioBackend

__all__ = ["JOB_PREFIX", "JobNotFoundError", "add_download_routes", "download_name", "job_body"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# LM Studio's job ids look like "job_493c7c9ded"; ours are the pull job's id after it.
JOB_PREFIX: Final = "job_"
# How long the POST waits for the file list (so it can answer with the size, or with the
# error of a repository that is not there); the download itself runs on.
FIRST_NEWS_WAIT: Final = 15.0
_STATUS: Final = {JobState.RUNNING: "downloading", JobState.SUCCEEDED: "completed",
                  JobState.FAILED: "failed", JobState.CANCELLED: "paused"}
_HOW: Final = ("give a Hugging Face link (https://huggingface.co/owner/repo) or an "
               "owner/repo id")
_METERS: web.AppKey[dict[str, TransferMeter]] = web.AppKey("download_meters",
                                                           dict[str, TransferMeter])


# --- pure -------------------------------------------------------------------------------


def _tag_of_file(path: str) -> str:
    """The tag that picks this file: its quantization ("Q4_K_M"), else its whole stem."""
    name = path.rsplit("/", 1)[-1]
    split = split_part(name)
    stem = split[0] if split else gguf_stem(name)
    token = quant_token(stem)
    return stem[-len(token):] if token else stem


def _repo_link(text: str, hub_hosts: frozenset[str]) -> tuple[str, str | None] | None:
    """(owner/repo, tag of a linked file) for a link to the hub; None if `text` is none."""
    url = URL(text if "://" in text else f"https://{text}")
    if not url.host or url.host.lower().removeprefix("www.") not in hub_hosts:
        return None
    parts = [part for part in url.path.split("/") if part]
    if len(parts) < 2:
        raise BadRequestError(f"{text!r} names no repository: {_HOW}", param="model")
    owner, repo, rest = parts[0], parts[1], parts[2:]
    if not rest:
        return f"{owner}/{repo}", None
    if rest[0] in ("blob", "resolve") and len(rest) >= 3 and is_gguf_name(rest[-1]):
        return f"{owner}/{repo}", _tag_of_file("/".join(rest[2:]))
    if rest[0] == "tree" and len(rest) == 2:
        return f"{owner}/{repo}", None
    raise BadRequestError(f"{text!r} is not a link to a repository or to one of its .gguf "
                          f"files: {_HOW}", param="model")


def download_name(model: object, quantization: object = None, *,
                  hub_host: str | None = None) -> str:
    """The pull name (`hf.co/owner/repo[:QUANT]`) an LM Studio download request means.

    `model` is a hub link (the repository, or `/blob/main/<file>.gguf`, which picks that
    file's quantization), `hf.co/owner/repo`, or `owner/repo[:QUANT]`; `quantization`
    wins over a quantization the link names. `hub_host` is the host of $HF_ENDPOINT, whose
    links are accepted too. Raises BadRequestError (400) naming the field.
    """
    if not isinstance(model, str) or not model.strip():
        raise BadRequestError(f"'model' is required: {_HOW}", param="model")
    if quantization is not None and (not isinstance(quantization, str)
                                     or not quantization.strip()):
        raise BadRequestError("'quantization' must be a quantization name such as Q4_K_M",
                              param="quantization")
    text = model.strip()
    hosts = frozenset(HF_HOSTS | ({hub_host.lower()} if hub_host else set()))
    first = text.split("://", 1)[-1].split("/", 1)[0].lower().removeprefix("www.")
    if "://" in text or first in hosts:
        linked = _repo_link(text, hosts)
        if linked is None:
            raise BadRequestError(f"{text!r} is not a Hugging Face link: {_HOW}",
                                  param="model")
        repo, tag = linked
    else:
        repo, _, own_tag = text.partition(":")
        tag = own_tag or None
        if repo.count("/") != 1:
            raise BadRequestError(f"{text!r} is not a model this app can download: {_HOW} "
                                  "(LM Studio's own catalog names are not known here)",
                                  param="model")
    if isinstance(quantization, str):
        tag = quantization.strip()
    return f"hf.co/{repo}:{tag}" if tag else f"hf.co/{repo}"


def job_body(*, job_id: str, status: str, total: int, done: int, started: float,
             finished: float | None, now: float, speed: float | None,
             model_key: str | None = None, error: str | None = None) -> dict[str, Any]:
    """A download job in LM Studio's shape; speed and ETA only while downloading."""
    body: dict[str, Any] = {"job_id": job_id, "status": status, "total_size_bytes": total,
                            "downloaded_bytes": done, "started_at": iso_millis(started)}
    if status == "downloading":
        body["bytes_per_second"] = speed or 0.0
        left = eta_seconds(total, done, speed)
        if left is not None:
            body["estimated_completion"] = iso_millis(now + left)
    if status == "completed":
        if finished is not None:
            body["completed_at"] = iso_millis(finished)
        if model_key is not None:
            body["model_key"] = model_key
    if status == "failed" and error is not None:
        body["error"] = error
    return body


# --- handlers ---------------------------------------------------------------------------


def _model_key(backend: LMStudioBackend, job: PullJob) -> str:
    """The library's name of a pulled model (what /api/v1/models lists and loads)."""
    manifest = os.path.realpath(backend.model_store.layout.manifest_path(job.name))
    for key, entry in backend.library_entries().items():
        if entry.source == "pulled" and entry.manifest and os.path.realpath(
                entry.manifest) == manifest:
            return key
    return job.display


def _speed(meters: dict[str, TransferMeter], job: PullJob, now: float) -> float | None:
    meter = meters.setdefault(job.id, TransferMeter())
    meter.add(time.monotonic(), job.completed)
    speed = meter.speed(time.monotonic())
    if speed is None and now > job.started and job.completed:
        speed = job.completed / (now - job.started)  # the first look: the average so far
    return speed


def _error_text(request: web.Request, error: LlamaRunnerError) -> str:
    # Paths of this machine (the store folder in a disk-space error) stay on it.
    return error.message if is_local_client(request) else redact_paths(error.message)


def _status(request: web.Request, job: PullJob) -> dict[str, Any]:
    backend = request.app[LMSTUDIO_BACKEND]
    meters = request.app[_METERS]
    now = time.time()
    status = _STATUS[job.state]
    speed = _speed(meters, job, now) if status == "downloading" else None
    if job.done:
        meters.pop(job.id, None)
    return job_body(
        job_id=JOB_PREFIX + job.id, status=status, total=job.total, done=job.completed,
        started=job.started, finished=job.finished, now=now, speed=speed,
        model_key=_model_key(backend, job) if status == "completed" else None,
        error=_error_text(request, job.error) if job.error is not None else None)


async def _first_news(job: PullJob) -> None:
    """Until the job knows its size (its file list is read) or ends, at most a while."""
    async def watch() -> None:
        events = job.events()
        async with contextlib.aclosing(events):
            async for event in events:
                if event.total:
                    return

    with contextlib.suppress(TimeoutError, PullError):
        async with asyncio.timeout(FIRST_NEWS_WAIT):
            await watch()


async def download(request: web.Request) -> web.Response:
    backend = request.app[LMSTUDIO_BACKEND]
    _, data = await read_json_object(request)
    name = parse_name(download_name(data.get("model"), data.get("quantization"),
                                    hub_host=URL(hub_endpoint()).host))
    store = backend.model_store
    running = any(not job.done and job.name.same(name) for job in store.jobs())
    if not running and await store.find(name.full) is not None:
        return web.json_response({"status": "already_downloaded"})
    job = store.pull(name.full)
    job.cancel_when_unwatched = False  # polled, not watched: it runs on alone
    await _first_news(job)
    if job.state is JobState.FAILED and job.error is not None and not job.total:
        # Refused before any byte (no such repository or quantization): an error answer.
        raise job.error
    return web.json_response(_status(request, job))


async def download_status(request: web.Request) -> web.Response:
    backend = request.app[LMSTUDIO_BACKEND]
    wanted = request.match_info["job_id"]
    job = backend.model_store.job(wanted.removeprefix(JOB_PREFIX))
    if job is None:
        raise JobNotFoundError(wanted)
    return web.json_response(_status(request, job))


class JobNotFoundError(LlamaRunnerError):
    status = 404
    code = "job_not_found"
    error_type = "invalid_request_error"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no download job {job_id!r}: job ids come from POST "
                         "/api/v1/models/download and are kept until the app restarts")


def add_download_routes(app: web.Application, errors: Callable[[Handler], Handler]) -> None:
    """Register the two routes; `errors` renders failures in LM Studio's v1 error shape."""
    app[_METERS] = {}
    app.router.add_post("/api/v1/models/download", errors(download))
    app.router.add_get("/api/v1/models/download/status/{job_id}", errors(download_status))
