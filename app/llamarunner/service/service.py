"""The Service: config, model table, runners and listeners wired together, Qt-free."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from .. import paths
from ..audio.launch import engine_missing_reason, worker_interpreter
from ..config import (
    Config,
    ConfigError,
    ConfigStore,
    ModelConfig,
    diff_configs,
)
from ..core.errors import (
    AudioEngineMissingError,
    AudioModelCannotChatError,
    BadRequestError,
    ChatNotSupportedError,
    ModelFileMissingError,
    ModelNotFoundError,
    RuntimeMissingError,
)
from ..core.events import ConfigApplied, ConfigRejected, EventBus
from ..core.logging_setup import apply_logging_config
from ..core.tasks import BackgroundTasks
from ..library.auto_settings import auto_configure
from ..library.capabilities import capabilities
from ..library.catalog import Catalog, build_catalog, library_fingerprint, watch_roots
from ..library.chat_template import ChatTemplate
from ..library.default_system import with_default_system
from ..library.discovery import LibraryEntry, SkippedFile
from ..library.gguf import GGUFError
from ..library.metadata import GGUFMetadata
from ..library.metadata_cache import MetadataCache, default_cache_file
from ..library.whisper import AUDIO_KIND, is_whisper_folder
from ..monitor.sampler import Sampler, pids_from_manager
from ..monitor.service_monitor import ServiceMonitor
from ..peers.client import PeerCall, PeerLease, RemoteModel
from ..peers.directory import PeerDirectory, PeerStatus
from ..peers.table import peer_models
from ..proxy.metrics import Metrics
from ..proxy.ollama.app import create_ollama_app
from ..proxy.openai.app import create_openai_app
from ..proxy.relay import upstream_session
from ..proxy.servers import ListenerError, ListenerSet
from ..proxy.upstream import pool_for
from ..rpc.monitor import WorkerMonitor, WorkerStatus
from ..runner.manager import Lease, RunnerManager
from ..runner.state import OCCUPYING_STATES
from ..runtime.resolver import RuntimeNotFoundError, resolve_runtime
from ..store.model_store import ModelStore, default_store_root
from ..store.names import ModelName
from .chat import ChatEvent, stream_chat
from .transcribe import TranscriptEvent, stream_transcript

log = logging.getLogger(__name__)

# Looking for new model files at most this often when a client asks for a model or a list.
LIBRARY_RESCAN_INTERVAL = 2.0
# How often the model folders and stores are checked for changes in the background.
LIBRARY_WATCH_INTERVAL = 3.0
# What Ollama's /api/show says a peer's model can do: OpenAI servers chat and take tools.
PEER_CAPABILITIES = ("completion", "tools")


@dataclass(frozen=True)
class _Scan:
    """One look at every model source: the table, its fingerprint, each model's template."""

    catalog: Catalog  # as configured and found, before auto_configure
    fingerprint: tuple[object, ...]
    models: dict[str, ModelConfig]  # what the runners start
    templates: dict[str, ChatTemplate]


@dataclass(frozen=True)
class ModelFile:
    """Facts about a model's file that the APIs show (size, dates, a stable digest)."""

    size: int
    mtime: float
    mtime_ns: int
    digest: str | None  # the store's own sha256 when it has one (Ollama's blobs)


class Service:
    """Owns everything that does work. Headless runs it under asyncio.run; the desktop app
    runs the same object on the Qt thread and only watches its events and calls methods.
    """

    def __init__(
        self,
        store: ConfigStore,
        *,
        runner_log_dir: Path | None = None,
        metadata_cache_file: Path | None = None,
    ) -> None:
        self.store = store
        self.events = EventBus()
        # Before anything publishes: runner starts and crashes are counted from events.
        self._metrics = Metrics(lambda: self._manager)
        self.events.subscribe(self._metrics.on_event)
        self.config: Config = Config.default()
        self._runner_log_dir = runner_log_dir
        self._http: aiohttp.ClientSession | None = None
        self._manager: RunnerManager | None = None
        self._models: dict[str, ModelConfig] = {}  # local and peers' models together
        self._local_models: dict[str, ModelConfig] = {}
        self._aliases: dict[str, str] = {}
        self._templates: dict[str, ChatTemplate] = {}
        self._catalog: Catalog | None = None
        self.monitor: ServiceMonitor | None = None
        self._fingerprint: tuple[object, ...] = ()
        self._last_check = 0.0
        self._tasks = BackgroundTasks("service")
        self._metadata = MetadataCache(metadata_cache_file or default_cache_file())
        # Pulled and created models; a change is listed before the API says "success".
        self.model_store = ModelStore(default_store_root(), on_change=self.rescan)
        self._peers = PeerDirectory(self.events, on_change=self._peers_changed)
        self._rpc_monitor: WorkerMonitor | None = None  # made by start()
        self.listeners = ListenerSet(
            {
                "lmstudio": lambda: create_openai_app(self),
                "ollama": lambda: create_ollama_app(self),
            },
            self.events,
            config_path=str(store.path),
        )

    # ---- the ProxyBackend interface ------------------------------------------------

    @property
    def manager(self) -> RunnerManager:
        assert self._manager is not None, "Service.start() has not run"
        return self._manager

    @property
    def metrics(self) -> Metrics:
        return self._metrics

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self._http is not None, "Service.start() has not run"
        return self._http

    def models(self) -> Mapping[str, ModelConfig]:
        self._refresh_library()
        return self._models

    def resolve_model(self, requested: str) -> str:
        """The configured name a client means, accepting aliases, `:latest` and any case."""
        name = self._lookup(requested)
        if name is None and self._refresh_library():
            name = self._lookup(requested)
        if name is None:
            raise ModelNotFoundError(requested)
        return name

    def model_created(self, name: str) -> int:
        facts = self.model_file(name)
        return int(facts.mtime) if facts else 0

    def model_file(self, name: str) -> ModelFile | None:
        try:
            stat = os.stat(self._models[name].path)
        except (KeyError, OSError):
            return None
        entry = self.library_entries().get(name)
        # Split models and Ollama blobs: the library knows the whole size and the digest.
        size = entry.size if entry and entry.size else stat.st_size
        return ModelFile(size, stat.st_mtime, stat.st_mtime_ns, entry.digest if entry else None)

    def metadata_for(self, name: str) -> GGUFMetadata | None:
        """The model file's GGUF metadata (cached on disk), or None when it is unreadable."""
        model = self._models.get(name)
        if model is None or model.is_audio or model.is_peer:
            return None
        try:
            return self._metadata.get(model.path)
        except (GGUFError, OSError) as exc:
            log.warning("cannot read metadata of model %s: %s", name, exc)
            return None

    def capabilities_for(self, name: str) -> list[str]:
        """Ollama's capabilities, with tools and thinking read from the template in use."""
        model = self._models.get(name)
        if model is not None and model.is_audio:
            return [AUDIO_KIND]
        if model is not None and model.is_peer:
            return list(PEER_CAPABILITIES)
        meta = self.metadata_for(name)
        has_projector = bool(model and ("mmproj" in model.args or "mm" in model.args))
        if meta is None:
            return ["completion"]
        template = self.chat_template_for(name)
        meta = dataclasses.replace(meta, chat_template=template.text if template.can_chat
                                   else None)
        caps = capabilities(meta, has_projector=has_projector)
        if model is not None and model.serves_embeddings and "embedding" not in caps:
            caps.append("embedding")
        return caps

    def chat_template_for(self, name: str) -> ChatTemplate:
        """The chat template the model's llama-server uses, and where it comes from."""
        template = self._templates.get(name)
        if template is not None:
            return template
        model = self._models.get(name)
        return ChatTemplate("peer" if model is not None and model.is_peer else "file")

    def default_messages_for(self, name: str) -> Sequence[Mapping[str, Any]]:
        """A created model's MESSAGE conversation, which Ollama puts before each chat's."""
        entry = self.library_entries().get(name)
        return entry.messages if entry is not None else ()

    def require_chat(self, name: str, requested: str | None = None) -> None:
        """Refuse a chat request for a model without a chat template (400, each API's shape)."""
        model = self._models.get(name)
        if model is not None and model.is_audio:
            raise AudioModelCannotChatError(requested or name)
        template = self.chat_template_for(name)
        if not template.can_chat:
            raise ChatNotSupportedError(requested or name, template.problem or
                                        "it has no chat template")

    def chat_stream(
        self, model: str, messages: Sequence[Mapping[str, Any]], *, system: str | None = None,
        temperature: float | None = None, max_tokens: int | None = None,
    ) -> AsyncGenerator[ChatEvent, None]:
        """Chat with a model as an API request would, streamed as events (core.chat)."""
        return stream_chat(self, model, messages, system=system, temperature=temperature,
                           max_tokens=max_tokens)

    def transcribe_stream(
        self, model: str, audio: Path, *, language: str | None = None,
    ) -> AsyncGenerator[TranscriptEvent, None]:
        """Transcribe an audio file as an API request would, streamed as events."""
        return stream_transcript(self, model, audio, language=language)

    def ttl_of(self, name: str) -> float:
        if name in self.config.models:
            return self.config.ttl_for(name)
        return self.config.scheduler.default_ttl

    async def copy_model(self, source: str, destination: str) -> None:
        """Ollama's copy: a new config entry under another name for the same file; a
        pulled model gets a new manifest in the store instead (its blobs are shared)."""
        stored = self._stored_name(source)
        if stored is not None:
            await self.model_store.copy(stored, destination)
            return
        if self._models[source].is_peer:
            raise BadRequestError(f"model '{source}' runs on peer "
                                  f"'{self._models[source].peer}'; copy it there")
        # As configured or found: the flags auto_configure adds are worked out again.
        model = self._catalog.models[source] if self._catalog else self._models[source]

        def add(data: dict[str, Any]) -> None:
            entry: dict[str, Any] = {"path": model.path, "runtime": model.runtime,
                                     "args": dict(model.args)}
            if model.ttl is not None:
                entry["ttl"] = model.ttl if model.ttl != float("inf") else -1
            if model.chat_template:
                entry["chat_template"] = model.chat_template
            data.setdefault("models", {})[destination] = entry

        await self.update_config(add)

    async def delete_model(self, name: str) -> None:
        """Forget a model; its file is deleted only when it lives in the app's own folder.

        Raises PermissionError, saying why, for a model the app does not own: a file in
        the user's own folders, or in Ollama's or LM Studio's store.
        """
        model = self._models[name]
        if model.is_peer:
            raise PermissionError(f"it runs on peer '{model.peer}'; delete it there, or "
                                  f"remove the peer from `peers`")
        if name in self.config.models and self.config.models[name].path:
            def remove(data: dict[str, Any]) -> None:
                data.get("models", {}).pop(name, None)

            await self.update_config(remove)
            return
        entry = self.library_entries().get(name)
        source = entry.source if entry else "folder"
        stored = self._stored_name(name)
        if stored is not None:
            await self.delete_stored(stored)
            return
        if source == "ollama":
            raise PermissionError("it is in Ollama's model store, which LlamaRunner only "
                                  "reads; remove it with `ollama rm`")
        if source == "lmstudio":
            raise PermissionError("it is in LM Studio's models folder, which LlamaRunner "
                                  "only reads; remove it in LM Studio")
        if not _inside(Path(model.path), paths.models_dir()):
            raise PermissionError("it is a file in one of your own model folders; delete the "
                                  "file or remove its folder from model_dirs")
        if self._manager is not None:  # `llamarunner rm` works without runners
            await self._manager.unload(name)
        parts = entry.parts if entry and entry.parts else (model.path,)
        for part in parts:
            await asyncio.to_thread(Path(part).unlink, missing_ok=True)
        await self.rescan()

    async def delete_stored(self, name: ModelName) -> None:
        """Delete a pulled model: its manifest, and the blobs no other model uses (their
        runners are stopped first)."""

        def serving(files: set[str]) -> list[str]:
            real = {os.path.realpath(path) for path in files}
            return [model_name for model_name, model in list(self._models.items())
                    if os.path.realpath(model.path) in real]

        async def release(files: set[str]) -> None:
            if self._manager is None:  # not started: nothing runs
                return
            for model_name in await asyncio.to_thread(serving, files):
                await self._manager.unload(model_name)

        await self.model_store.delete(name, release)

    def _stored_name(self, name: str) -> ModelName | None:
        entry = self.library_entries().get(name)
        if entry is None or entry.source != "pulled" or not entry.manifest:
            return None
        return self.model_store.name_of_manifest(entry.manifest)

    async def update_config(self, mutate: Callable[[dict[str, Any]], None]) -> Config:
        """Change the config file (validated, atomic, with backup) and apply it at once.

        Only what `mutate` changed is written, into the file as it is now: hand edits the
        watcher has not picked up yet stay. Raises ConfigNotSavedError (a 409 for API
        callers) when the file does not parse or was changed at the same keys.
        """
        base, data = self.config.to_dict(), self.config.to_dict()
        mutate(data)
        new = self.store.save(data, base=base)
        await self.apply_config(new)
        return new

    # ---- lifecycle -----------------------------------------------------------------

    async def start(self) -> list[ListenerError]:
        """Load the config, start the listeners and the config watcher.

        Raises ConfigError when the config cannot be used; returns listener errors (a port
        in use) so each front end can decide whether they are fatal.
        """
        self.config = self.store.load()
        apply_logging_config(self.config.logging)
        await self.model_store.start()
        self._http = upstream_session()
        self._rpc_monitor = WorkerMonitor(self.events, running=self._models_running)
        self._manager = RunnerManager(
            events=self.events,
            http=self._http,
            scheduler=self.config.scheduler,
            resolve_binary=self._binary_for,
            ttl_for=self.ttl_of,
            log_dir=self._runner_log_dir,
            remote_lease=self._peer_lease,
            preflight=self._check_rpc_workers,
        )
        await self.rescan()
        self._peers.configure(self.config.peers)
        errors = await self.listeners.reconcile(self.config.proxies)
        self._tasks.spawn(
            self.store.watch(self._apply_watched_config, self._config_rejected), "config-watch"
        )
        self._tasks.spawn(self._watch_library(), "library-watch")
        # CPU/RAM/GPU meters live in the core so headless and the GUI share them.
        self.monitor = ServiceMonitor(Sampler(pids_from_manager(self._manager)))
        self._tasks.spawn(self.monitor.run(), "monitor")
        self._rpc_monitor.start()
        return errors

    async def stop(self) -> None:
        """Stop listening, stop every runner (no child survives), release resources."""
        await self._tasks.cancel_all()
        await self._stop_rpc_monitor()
        await self._peers.close()
        await self.listeners.close()
        await self.model_store.close()
        with contextlib.suppress(OSError):
            await asyncio.to_thread(self._metadata.save)
        if self._manager is not None:
            await self._manager.shutdown()
        if self._http is not None:
            pool_for(self._http).close()  # the lean client's keep-alive connections
            await self._http.close()
            self._http = None

    async def _apply_watched_config(self, new: Config) -> None:
        await self.apply_config(new)

    async def apply_config(self, new: Config) -> list[ListenerError]:
        """Apply a validated config without a restart, touching only what changed."""
        changes = diff_configs(self.config, new)
        if new.logging != self.config.logging:
            apply_logging_config(new.logging)
        self.config = new
        errors: list[ListenerError] = []
        if changes.listeners_changed:
            errors = await self.listeners.reconcile(new.proxies)
            for error in errors:
                log.error("%s", error)
        if changes.scheduler_changed:
            self.manager.set_scheduler(new.scheduler)
        await self.rescan(restart=changes.models_restart)
        self._peers.configure(new.peers)
        log.info("configuration reloaded from %s", self.store.path)
        self.events.publish(ConfigApplied(str(self.store.path)))
        return errors

    def _config_rejected(self, error: ConfigError) -> None:
        log.error("ignoring the edited configuration, keeping the running one:\n%s", error)
        self.events.publish(ConfigRejected(str(self.store.path), str(error)))

    # ---- model library -------------------------------------------------------------

    def library_entries(self) -> Mapping[str, LibraryEntry]:
        """Where each model comes from (config, folder, Ollama, LM Studio) and its files."""
        return self._catalog.entries if self._catalog else {}

    def library_problems(self) -> tuple[list[SkippedFile], list[str]]:
        """Files not listed (with the reason) and config entries that matched nothing."""
        if self._catalog is None:
            return [], []
        return list(self._catalog.skipped), list(self._catalog.problems)

    async def rescan(self, *, restart: frozenset[str] = frozenset()) -> bool:
        """Scan every model source now (off the event loop); True when the table changed."""
        scan = await asyncio.to_thread(self._scan)
        return self._adopt(scan, restart)

    def _scan(self) -> _Scan:
        """Build the catalog and warm the metadata cache; blocking, so run in a thread.

        Each model also gets what its metadata calls for (chat template, embedding mode).
        """
        app_models = paths.models_dir()
        fingerprint = library_fingerprint(self._watch_roots())
        catalog = build_catalog(self.config, app_models_dir=app_models, metadata=self._metadata,
                                pulled_dir=self.model_store.root)
        models: dict[str, ModelConfig] = {}
        templates: dict[str, ChatTemplate] = {}
        # Reading headers here, not in the first /api/tags request, keeps listings instant.
        for name, model in catalog.models.items():
            if model.is_audio:  # a Whisper folder: no GGUF header, no chat template
                models[name] = model
                continue
            meta = None
            with contextlib.suppress(GGUFError, OSError):
                meta = self._metadata.get(model.path)
            entry = catalog.entries.get(name)
            models[name], templates[name] = auto_configure(
                model, meta, entry.ollama_template if entry is not None else None)
            if entry is not None and entry.system:
                models[name], templates[name] = with_default_system(
                    models[name], templates[name], entry.system,
                    paths.cache_dir() / "chat-templates")
        with contextlib.suppress(OSError):
            self._metadata.save()
        return _Scan(catalog, fingerprint, models, templates)

    def _adopt(self, scan: _Scan, restart: frozenset[str] = frozenset()) -> bool:
        catalog = scan.catalog
        self._fingerprint = scan.fingerprint
        self._last_check = time.monotonic()
        previous = self._catalog
        self._catalog = catalog
        self._templates = scan.templates
        for problem in catalog.problems:
            if previous is None or problem not in previous.problems:
                log.warning("model library: %s", problem)
        self._local_models = dict(scan.models)
        return self._publish_models(restart)

    def _publish_models(self, restart: frozenset[str] = frozenset()) -> bool:
        """Put the local models and the peers' together into the table clients see."""
        local = self._local_models
        taken = [*local, *(alias for model in local.values() for alias in model.alias)]
        models = {**local, **peer_models(self._peers.statuses(), taken)}
        changed = models != self._models or bool(restart)
        if changed:
            self._models = models
            self._aliases = {
                alias: name for name, model in models.items() for alias in model.alias
            }
            if self._manager is not None:
                self._manager.set_models(local, restart=restart)
            self._rpc_models_changed(local)
        return changed

    # ---- peers ---------------------------------------------------------------------

    def peers(self) -> list[PeerStatus]:
        """Every configured peer: its URL, models, and whether it answered last time."""
        return self._peers.statuses()

    def peer_status(self, name: str) -> PeerStatus | None:
        """The state of the peer that serves model `name`; None for a local model."""
        model = self._models.get(name)
        return self._peers.status(model.peer) if model is not None and model.is_peer else None

    async def refresh_peers(self) -> None:
        """Ask every peer for its models now (the library window's Refresh)."""
        await asyncio.gather(*(self._peers.refresh(p.name) for p in self._peers.statuses()))

    def _peers_changed(self) -> None:
        self._publish_models()

    def _peer_lease(self, name: str, first_token_timeout: float) -> Lease | None:
        model = self._models.get(name)
        if model is None or not model.is_peer:
            return None
        config = self._peers.config(model.peer)
        if config is None:
            return None
        peer = model.peer

        def on_result(available: bool, reason: str | None) -> None:
            self._peers.mark(peer, available=available, reason=reason)

        call = PeerCall(RemoteModel(name, peer, model.remote_id), config, on_result)
        return PeerLease(call, first_token_timeout)

    # ---- RPC workers ---------------------------------------------------------------

    def rpc_workers(self) -> list[WorkerStatus]:
        """Every RPC worker a model names (`rpc`): its last state, why, when, and who uses it."""
        return self._rpc_monitor.statuses() if self._rpc_monitor is not None else []

    async def refresh_rpc_workers(self) -> list[WorkerStatus]:
        """Probe every RPC worker now (the library window's Refresh)."""
        if self._rpc_monitor is None:
            return []
        return await self._rpc_monitor.refresh()

    async def _check_rpc_workers(self, model: ModelConfig) -> None:
        """Before a model's llama-server starts: every one of its workers must answer."""
        if self._rpc_monitor is not None:
            await self._rpc_monitor.check(model)

    def _rpc_models_changed(self, local: Mapping[str, ModelConfig]) -> None:
        if self._rpc_monitor is not None:
            self._rpc_monitor.set_models(local)

    def _models_running(self) -> set[str]:
        """Models whose llama-server exists (a worker serves one of them at a time)."""
        if self._manager is None:
            return set()
        holding = {state.value for state in OCCUPYING_STATES}
        return {info.name for info in self._manager.snapshot() if info.state in holding}

    async def _stop_rpc_monitor(self) -> None:
        if self._rpc_monitor is not None:
            await self._rpc_monitor.close()

    def _refresh_library(self) -> bool:
        """Rescan now if a watched folder changed since the last look (rate-limited).

        Used when a client asks for a name we do not know or for a listing, so a file
        copied in a moment ago is found at once.
        """
        if time.monotonic() - self._last_check < LIBRARY_RESCAN_INTERVAL:
            return False
        self._last_check = time.monotonic()
        fingerprint = library_fingerprint(self._watch_roots())
        if fingerprint == self._fingerprint:
            return False
        return self._adopt(self._scan())

    async def _watch_library(self) -> None:
        """Pick up models added or removed on disk without any request asking."""
        while True:
            await asyncio.sleep(LIBRARY_WATCH_INTERVAL)
            roots = self._watch_roots()
            fingerprint = await asyncio.to_thread(library_fingerprint, roots)
            if fingerprint != self._fingerprint:
                await self.rescan()

    def _watch_roots(self) -> list[Path]:
        return watch_roots(self.config, paths.models_dir(), self.model_store.root)

    def _lookup(self, requested: str) -> str | None:
        candidates = [requested]
        if requested.endswith(":latest"):
            candidates.append(requested[: -len(":latest")])
        for candidate in candidates:
            if candidate in self._models:
                return candidate
            if candidate in self._aliases:
                return self._aliases[candidate]
        lowered = {name.lower(): name for name in self._models}
        for candidate in candidates:
            if candidate.lower() in lowered:
                return lowered[candidate.lower()]
        return None

    def _binary_for(self, model: ModelConfig) -> Path:
        if model.is_audio:
            return self._audio_worker_for(model)
        runtime = self.config.runtimes.get(model.runtime)
        if runtime is None:
            raise RuntimeMissingError(model.name, model.runtime, "no such runtime in the config")
        if not Path(model.path).is_file():
            raise ModelFileMissingError(model.name)
        try:
            return resolve_runtime(runtime.path)
        except RuntimeNotFoundError as exc:
            # The full text (with the paths searched) is for the local log; the client,
            # possibly remote, gets the reason without file system paths.
            log.error("model %s: %s", model.name, exc)
            raise RuntimeMissingError(model.name, model.runtime, exc.reason) from exc

    def _audio_worker_for(self, model: ModelConfig) -> Path:
        """The Python that runs the speech worker for an audio model (its `binary`)."""
        if not is_whisper_folder(model.path):
            raise ModelFileMissingError(model.name)
        missing = engine_missing_reason()
        if missing is not None:
            raise AudioEngineMissingError(f"model '{model.name}' cannot run: {missing}")
        return worker_interpreter()


def _inside(path: Path, folder: Path) -> bool:
    """Whether `path` really lives under `folder` (symlinks and `..` resolved)."""
    return folder.resolve() in path.resolve().parents


async def run_until_stopped(service: Service, stop: asyncio.Event) -> None:
    """Run a started service until `stop` is set, then stop it cleanly."""
    try:
        await stop.wait()
    finally:
        await service.stop()
