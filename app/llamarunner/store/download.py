"""The pull engine: jobs that download a model's layers into the store, with progress events.

A `PullJob` is one pull. Any number of watchers read its progress (`events()`, which
replays what happened so far), anyone may `cancel()` it, and `wait()` gives the outcome.
Two pulls of one name share a job; two jobs needing one blob download it once. API pulls
are cancelled when their last watcher goes away (a client that hangs up, as in Ollama);
the partial files stay, and the next pull of the name resumes them, also after a restart
(`interrupted()` lists such pulls). Progress events are Ollama's own lines: "pulling
manifest", "pulling <digest>" with `total`/`completed`, "verifying sha256 digest",
"writing manifest", "success".

Every layer is checked against its sha256 before it becomes a blob; a mismatch deletes
the download and fails the pull. Before any download the free disk space is checked, and
at start partial files nobody touched for a day are removed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import hashlib
import json
import logging
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp

from ..core.files import atomic_write, move_into_place
from ..core.tasks import BackgroundTasks
from .errors import (
    DigestMismatchError,
    NotEnoughSpaceError,
    PullCancelledError,
    PullError,
)
from .huggingface import HubClient, hub_endpoint, hub_token, pick_model_file, pick_projector
from .layout import (
    MEDIA_CONFIG,
    MEDIA_MODEL,
    MEDIA_PROJECTOR,
    MEDIA_TENSOR,
    STALE_AFTER,
    Layer,
    Manifest,
    ManifestError,
    StoreLayout,
    config_blob,
    digest_hex,
)
from .names import ModelName, parse_name
from .registry import RegistryClient
from .transfer import Opener, fetch_to_partial, human_bytes

__all__ = [
    "JobState",
    "PullEngine",
    "PullJob",
    "PullProgress",
    "PullRecord",
    "internet_session",
]

log = logging.getLogger(__name__)

# At most this often a layer's progress becomes an event (Ollama ticks every 60 ms).
PROGRESS_INTERVAL: Final = 0.1
_RECORDS: Final = ".pulls"


def internet_session() -> aiohttp.ClientSession:
    """The session for registries and the hub: the user's proxy settings apply (unlike the
    loopback session to llama-server), no total timeout (a model takes as long as it
    takes), but a stalled connection fails after a minute and is retried."""
    return aiohttp.ClientSession(
        trust_env=True,
        timeout=aiohttp.ClientTimeout(total=None, connect=30, sock_connect=30, sock_read=60),
        headers={"User-Agent": "llamarunner"},
    )


class JobState(enum.Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class PullProgress:
    """One progress line, as Ollama's ProgressResponse (zero and empty fields left out)."""

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status}
        if self.digest:
            body["digest"] = self.digest
        if self.total:
            body["total"] = self.total
        if self.completed:
            body["completed"] = self.completed
        return body


@dataclass(frozen=True)
class PullRecord:
    """A pull that did not finish (cancelled, cut off, or the app stopped): resumable."""

    name: str
    insecure: bool
    started: float


@dataclass
class _LayerProgress:
    status: str
    digest: str
    total: int
    completed: int = 0
    last_event: float = 0.0


class PullJob:
    """One pull of one model name; see the module docstring."""

    def __init__(self, name: ModelName, *, insecure: bool, cancel_when_unwatched: bool) -> None:
        # Names the job for status polling (LM Studio's download jobs, a GUI list).
        self.id = secrets.token_hex(8)
        self.name = name
        self.insecure = insecure
        self.cancel_when_unwatched = cancel_when_unwatched
        self.state = JobState.RUNNING
        self.error: PullError | None = None
        self.started = time.time()
        self.finished: float | None = None  # when it ended (status APIs)
        self._history: list[PullProgress] = []
        self._queues: set[asyncio.Queue[PullProgress | None]] = set()
        self._done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._layers: dict[str, _LayerProgress] = {}
        self.new_blobs: set[str] = set()

    @property
    def display(self) -> str:
        return self.name.display

    @property
    def done(self) -> bool:
        return self.state is not JobState.RUNNING

    @property
    def total(self) -> int:
        """Bytes of every layer known so far."""
        return sum(layer.total for layer in self._layers.values())

    @property
    def completed(self) -> int:
        return sum(layer.completed for layer in self._layers.values())

    def cancel(self) -> None:
        """Stop the pull; its partial files stay for the next pull to resume."""
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def wait(self) -> None:
        """Until the pull ends; raises its PullError when it failed or was cancelled."""
        await self._done.wait()
        if self.error is not None:
            raise self.error

    async def events(self) -> AsyncGenerator[PullProgress, None]:
        """Every progress event so far, then live ones until the end; raises the PullError
        of a failed pull after its last event."""
        queue: asyncio.Queue[PullProgress | None] = asyncio.Queue()
        history, finished = list(self._history), self.done
        self._queues.add(queue)
        try:
            for progress in history:
                yield progress
            while not finished:
                item = await queue.get()
                if item is None:
                    break
                yield item
            if self.error is not None:
                raise self.error
        finally:
            self._queues.discard(queue)
            if self.cancel_when_unwatched and not self._queues and not self.done:
                self.cancel()

    # ---- for the engine ------------------------------------------------------------

    def emit(self, progress: PullProgress) -> None:
        last = self._history[-1] if self._history else None
        if (last is not None and progress.digest is not None and last.digest == progress.digest
                and last.status == progress.status):
            self._history[-1] = progress  # the history keeps each layer's latest count
        else:
            self._history.append(progress)
        for queue in self._queues:
            queue.put_nowait(progress)

    def start_layer(self, digest: str, total: int) -> None:
        """A layer starts: `digest` is its sha256, or for a file whose digest is not known
        yet a stable hex key (shown the same way)."""
        shown = digest.removeprefix("sha256:")
        layer = _LayerProgress(f"pulling {shown[:12]}", digest, total)
        self._layers[digest] = layer
        self._layer_event(layer, force=True)

    def add_bytes(self, digest: str, count: int) -> None:
        layer = self._layers[digest]
        layer.completed = max(0, layer.completed + count)
        self._layer_event(layer, force=layer.completed >= layer.total)

    def _layer_event(self, layer: _LayerProgress, *, force: bool) -> None:
        now = time.monotonic()
        if force or now - layer.last_event >= PROGRESS_INTERVAL:
            layer.last_event = now
            self.emit(PullProgress(layer.status, layer.digest, layer.total, layer.completed))

    def finish(self, state: JobState, error: PullError | None = None) -> None:
        self.state, self.error = state, error
        self.finished = time.time()
        self._done.set()
        for queue in self._queues:
            queue.put_nowait(None)


@dataclass
class _Wanted:
    """A file a pull needs: its expected digest (None when unknown), size and source."""

    media_type: str
    digest: str | None
    size: int
    opener: Opener
    key: str  # names the partial file: the digest's hex, or a stable hex of the source
    what: str
    got: str | None = field(default=None)


class PullEngine:
    """Runs pulls into one store; see the module docstring."""

    def __init__(
        self,
        layout: StoreLayout,
        *,
        on_pulled: Callable[[], Awaitable[object]] | None = None,
        session_factory: Callable[[], aiohttp.ClientSession] = internet_session,
        env: Mapping[str, str] | None = None,
        retries: int = 2,
        retry_delay: float = 0.5,
    ) -> None:
        self.layout = layout
        self._on_pulled = on_pulled
        self._session_factory = session_factory
        self._env = env
        self.retries = retries
        self.retry_delay = retry_delay
        self._session: aiohttp.ClientSession | None = None
        self._registry: RegistryClient | None = None
        self._jobs: dict[str, PullJob] = {}
        self._tasks = BackgroundTasks("pull")
        self._locks: dict[str, asyncio.Lock] = {}
        self._in_use: collections.Counter[str] = collections.Counter()

    # ---- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Remove what pulls nobody resumed left behind (older than a day)."""
        removed = await asyncio.to_thread(self._cleanup)
        for path in removed:
            log.info("removed a stale partial download: %s", path)

    def _cleanup(self) -> list[Path]:
        removed = self.layout.cleanup_stale()
        folder = self.layout.root / _RECORDS
        if folder.is_dir():
            now = time.time()
            for path in folder.glob("*.json"):
                with contextlib.suppress(OSError):
                    if now - path.stat().st_mtime >= STALE_AFTER:
                        path.unlink()
        return removed

    async def close(self) -> None:
        """Cancel every running pull (resumable later) and close the connections."""
        await self._tasks.cancel_all()
        if self._session is not None:
            await self._session.close()
            self._session = None
            self._registry = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = self._session_factory()
            self._registry = None
        return self._session

    @property
    def registry(self) -> RegistryClient:
        session = self.session
        if self._registry is None:
            self._registry = RegistryClient(session)
        return self._registry

    # ---- jobs ----------------------------------------------------------------------

    def pull(self, name: str, *, insecure: bool = False,
             cancel_when_unwatched: bool = True) -> PullJob:
        """Start pulling `name` (or join the pull of it already running).

        Raises InvalidNameError (400) for a bad name, before any network or file access.
        """
        parsed = parse_name(name)
        key = parsed.full.casefold()
        running = self._jobs.get(key)
        if running is not None and not running.done:
            return running
        job = PullJob(parsed, insecure=insecure, cancel_when_unwatched=cancel_when_unwatched)
        self._jobs[key] = job
        job._task = self._tasks.spawn(self._run(job), f"pull {parsed.display}")
        return job

    def jobs(self) -> list[PullJob]:
        """The latest pull of each name in this run, running or finished, oldest first."""
        return sorted(self._jobs.values(), key=lambda job: job.started)

    def job(self, job_id: str) -> PullJob | None:
        return next((job for job in self._jobs.values() if job.id == job_id), None)

    def in_use(self) -> set[str]:
        """Digests running pulls are fetching or have fetched (not to be deleted)."""
        return {digest for digest, count in self._in_use.items() if count > 0}

    async def interrupted(self) -> list[PullRecord]:
        """Pulls that were cut short (here or in an earlier run); pull them to resume."""
        running = {key for key, job in self._jobs.items() if not job.done}
        records = await asyncio.to_thread(self._read_records)
        return [r for r in records if r.name.casefold() not in running]

    def _read_records(self) -> list[PullRecord]:
        found: list[PullRecord] = []
        folder = self.layout.root / _RECORDS
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                data = json.loads(path.read_bytes())
                found.append(PullRecord(str(data["name"]), bool(data["insecure"]),
                                        float(data["started"])))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return sorted(found, key=lambda r: r.started)

    def _record_path(self, name: ModelName) -> Path:
        digest = hashlib.sha256(name.full.casefold().encode()).hexdigest()[:16]
        return self.layout.root / _RECORDS / f"{digest}.json"

    def _write_record(self, job: PullJob) -> None:
        path = self._record_path(job.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"name": job.name.full, "insecure": job.insecure, "started": job.started}
        atomic_write(path, json.dumps(body).encode(), keep_mode=False)

    # ---- one pull ------------------------------------------------------------------

    async def _run(self, job: PullJob) -> None:
        resumable = True
        try:
            await asyncio.to_thread(self._write_record, job)
            if job.name.is_huggingface:
                await self._pull_huggingface(job)
            else:
                await self._pull_registry(job)
        except asyncio.CancelledError:
            job.finish(JobState.CANCELLED, PullCancelledError())
            raise
        except PullError as exc:
            resumable = exc.resumable
            await self._forget_new_blobs(job, resumable)
            job.finish(JobState.FAILED, exc)
        except Exception as exc:
            log.exception("pull of %s failed", job.display)
            resumable = False
            await self._forget_new_blobs(job, resumable)
            job.finish(JobState.FAILED, PullError(f"the pull of {job.display} failed: {exc}"))
        else:
            resumable = False
            job.finish(JobState.SUCCEEDED)
        finally:
            if not resumable:
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(self._record_path(job.name).unlink, True)

    async def _forget_new_blobs(self, job: PullJob, resumable: bool) -> None:
        """After a failure that a retry cannot fix, the blobs this pull added and nothing
        uses go too: nothing of a failed pull stays behind."""
        if resumable or not job.new_blobs:
            return
        keep = self.in_use() - job.new_blobs
        with contextlib.suppress(OSError):
            await asyncio.to_thread(self.layout.remove_unreferenced, job.new_blobs, keep)

    async def _pull_registry(self, job: PullJob) -> None:
        name = job.name
        job.emit(PullProgress("pulling manifest"))
        data = await self.registry.manifest(name, insecure=job.insecure)
        try:
            manifest = Manifest.parse(data)
        except ManifestError as exc:
            raise PullError(f"pull model manifest: {name.host} sent a manifest that cannot be "
                            f"used: {exc}", status=502) from None
        _check_runnable(manifest, name)
        layers = list(manifest.layers) + ([manifest.config] if manifest.config else [])
        wanted: dict[str, _Wanted] = {}
        for layer in layers:
            if layer.digest in wanted:
                continue

            def opener(offset: int, digest: str = layer.digest
                       ) -> contextlib.AbstractAsyncContextManager[aiohttp.ClientResponse]:
                url = self.registry.blob_url(name, digest, insecure=job.insecure)
                headers = {"Range": f"bytes={offset}-"} if offset else {}
                return self.registry.request(name, url, headers)

            wanted[layer.digest] = _Wanted(layer.media_type, layer.digest, layer.size, opener,
                                           digest_hex(layer.digest),
                                           f"layer {digest_hex(layer.digest)[:12]}")
        await self._download(job, list(wanted.values()))
        await self._finish(job, data)

    async def _pull_huggingface(self, job: PullJob) -> None:
        name = job.name
        hub = HubClient(self.session, hub_endpoint(self._env), hub_token(self._env))
        repo = hub.repo(name)
        job.emit(PullProgress("pulling manifest"))
        files = await hub.list_files(name)
        model = pick_model_file(files, name.tag, repo)
        picked = [(MEDIA_MODEL, model)]
        projector = pick_projector(files)
        if projector is not None:
            picked.append((MEDIA_PROJECTOR, projector))
        wanted: list[_Wanted] = []
        for media_type, file in picked:
            url = hub.file_url(name, file.path)

            def opener(offset: int, url: Any = url
                       ) -> contextlib.AbstractAsyncContextManager[aiohttp.ClientResponse]:
                return hub.get(name, url, {"Range": f"bytes={offset}-"} if offset else None)

            digest = f"sha256:{file.sha256}" if file.sha256 else None
            # A file without a published sha256 is named by its address until it is hashed.
            key = file.sha256 or hashlib.sha256(str(url).encode()).hexdigest()[:32]
            wanted.append(_Wanted(media_type, digest, file.size, opener, key, file.name))
        await self._download(job, wanted)
        layers = [Layer(w.media_type, w.got or "", w.size) for w in wanted]
        config = config_blob(file_type=name.tag if name.tag != "latest" else "",
                             diff_ids=[layer.digest for layer in layers],
                             extra={"source": f"{hub.endpoint}/{repo}", "file": model.path})
        config_layer = await asyncio.to_thread(self._store_bytes, config, job)
        manifest = Manifest(config_layer, tuple(layers))
        await self._finish(job, manifest.to_bytes())

    def _store_bytes(self, data: bytes, job: PullJob) -> Layer:
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        path = self.layout.blob_path(digest)
        if not path.is_file():
            self.layout.ensure_folders()
            atomic_write(path, data, keep_mode=False)
            job.new_blobs.add(digest)
        return Layer(MEDIA_CONFIG, digest, len(data))

    async def _download(self, job: PullJob, wanted: list[_Wanted]) -> None:
        keys = [w.digest or w.key for w in wanted]
        self._in_use.update(keys)
        try:
            await self._check_space(job, wanted)
            for item in wanted:
                await self._fetch(job, item)
        finally:
            self._in_use.subtract(keys)
            for key in keys:
                if self._in_use[key] <= 0:
                    del self._in_use[key]

    async def _check_space(self, job: PullJob, wanted: Iterable[_Wanted]) -> None:
        def measure() -> tuple[int, int]:
            need = 0
            for item in wanted:
                if item.digest is not None and self.layout.has_blob(item.digest):
                    continue
                need += max(0, item.size - self.layout.partial_size(item.key))
            return need, self.layout.free_bytes()

        need, free = await asyncio.to_thread(measure)
        if need > free:
            raise NotEnoughSpaceError(
                f"not enough disk space to pull {job.display}: it needs {human_bytes(need)} "
                f"({need} bytes) more and {human_bytes(free)} ({free} bytes) are free in "
                f"{self.layout.root}; free some space, then pull again", needed=need, free=free)

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def _fetch(self, job: PullJob, item: _Wanted) -> None:
        shown = item.digest or item.key
        async with self._lock(shown):
            if item.digest is not None and await asyncio.to_thread(
                    self.layout.has_blob, item.digest):
                job.start_layer(shown, item.size)
                job.add_bytes(shown, item.size)
                item.got = item.digest
                return
            job.start_layer(shown, item.size)
            partial = self.layout.partial_path(item.key)
            await asyncio.to_thread(self.layout.ensure_folders)
            try:
                fetched = await fetch_to_partial(
                    partial, item.opener, expected_size=item.size,
                    on_bytes=lambda count: job.add_bytes(shown, count), what=item.what,
                    retries=self.retries, retry_delay=self.retry_delay)
            except PullError as exc:
                if not exc.resumable:
                    await asyncio.to_thread(partial.unlink, True)
                raise
            if item.digest is not None and fetched.digest != item.digest:
                await asyncio.to_thread(partial.unlink, True)
                raise DigestMismatchError(
                    f"digest mismatch for {item.what}: expected {item.digest}, the download "
                    f"has {fetched.digest}; the file was deleted, pull again (if it happens "
                    "again, the server holds a corrupt copy)", status=502)
            item.got = fetched.digest
            blob = self.layout.blob_path(fetched.digest)
            if await asyncio.to_thread(blob.is_file):
                await asyncio.to_thread(partial.unlink, True)
            else:
                await asyncio.to_thread(move_into_place, partial, blob)
                job.new_blobs.add(fetched.digest)

    async def _finish(self, job: PullJob, manifest_bytes: bytes) -> None:
        name = job.name
        job.emit(PullProgress("verifying sha256 digest"))  # each layer was, on arrival
        job.emit(PullProgress("writing manifest"))
        new = Manifest.parse(manifest_bytes).digests()

        def write() -> set[str]:
            old: set[str] = set()
            with contextlib.suppress(PullError, ManifestError, OSError):
                stored = self.layout.find(name)
                if stored is not None:
                    old = self.layout.read_manifest(stored).digests()
                    if stored != name:
                        # Another spelling of the same name: one manifest, the new one.
                        self.layout.manifest_path(stored).unlink()
            self.layout.write_manifest(name, manifest_bytes)
            return old - new

        unused = await asyncio.to_thread(write)
        job.new_blobs.clear()  # now the manifest's: never removed as leftovers
        if unused:
            job.emit(PullProgress("removing unused layers"))
            await asyncio.to_thread(self.layout.remove_unreferenced, unused, self.in_use())
        if self._on_pulled is not None:
            await self._on_pulled()
        job.emit(PullProgress("success"))


def _check_runnable(manifest: Manifest, name: ModelName) -> None:
    """Refuse, before any download, a model llama-server could not run."""
    models = manifest.layers_of(MEDIA_MODEL)
    if not models:
        if manifest.layers_of(MEDIA_TENSOR):
            raise PullError(f"{name.display} is a safetensors model for Ollama's own engine; "
                            "LlamaRunner runs GGUF models: pull a GGUF build of it (for "
                            "example from hf.co)", status=400)
        raise PullError(f"{name.display} has no GGUF model layer (a cloud model?); nothing "
                        "LlamaRunner could run", status=400)
    if len(models) > 1:
        raise PullError(f"{name.display} is split across {len(models)} GGUF layers, which "
                        "llama-server cannot load from blob names", status=400)
