"""The Service: config, model table, runners and listeners wired together, Qt-free."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from .. import paths
from ..config import (
    Config,
    ConfigError,
    ConfigStore,
    ModelConfig,
    diff_configs,
)
from ..library.capabilities import capabilities
from ..library.folders import merge_discovered, scan_folders
from ..library.gguf import GGUFError
from ..library.metadata import GGUFMetadata
from ..library.metadata_cache import MetadataCache, default_cache_file
from ..proxy.ollama.app import create_ollama_app
from ..proxy.openai.app import create_openai_app
from ..proxy.relay import upstream_session
from ..proxy.servers import ListenerError, ListenerSet
from ..runner.manager import RunnerManager
from ..runtime.resolver import RuntimeNotFoundError, resolve_runtime
from .errors import ModelFileMissingError, ModelNotFoundError, RuntimeMissingError
from .events import ConfigApplied, ConfigRejected, EventBus
from .tasks import BackgroundTasks

log = logging.getLogger(__name__)

# Looking for new model files at most this often when a client asks for a model or a list.
LIBRARY_RESCAN_INTERVAL = 2.0


@dataclass(frozen=True)
class ModelFile:
    """Facts about a model's file that the APIs show (size, dates, a stable digest)."""

    size: int
    mtime: float
    mtime_ns: int


class Service:
    """Owns everything that does work. Headless runs it under asyncio.run; the desktop app
    runs the same object on the Qt thread and only watches its events and calls methods.
    """

    def __init__(self, store: ConfigStore, *, runner_log_dir: Path | None = None) -> None:
        self.store = store
        self.events = EventBus()
        self.config: Config = Config.default()
        self._runner_log_dir = runner_log_dir
        self._http: aiohttp.ClientSession | None = None
        self._manager: RunnerManager | None = None
        self._models: dict[str, ModelConfig] = {}
        self._aliases: dict[str, str] = {}
        self._last_scan = 0.0
        self._tasks = BackgroundTasks("service")
        self._metadata: MetadataCache | None = None
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
        return ModelFile(stat.st_size, stat.st_mtime, stat.st_mtime_ns)

    def metadata_for(self, name: str) -> GGUFMetadata | None:
        """The model file's GGUF metadata (cached on disk), or None when it is unreadable."""
        model = self._models.get(name)
        if model is None:
            return None
        if self._metadata is None:
            self._metadata = MetadataCache(default_cache_file())
        try:
            return self._metadata.get(model.path)
        except (GGUFError, OSError) as exc:
            log.warning("cannot read metadata of model %s: %s", name, exc)
            return None

    def capabilities_for(self, name: str) -> list[str]:
        meta = self.metadata_for(name)
        model = self._models.get(name)
        has_projector = bool(model and ("mmproj" in model.args or "mm" in model.args))
        if meta is None:
            return ["completion"]
        caps = capabilities(meta, has_projector=has_projector)
        if model is not None and model.serves_embeddings and "embedding" not in caps:
            caps.append("embedding")
        return caps

    def ttl_of(self, name: str) -> float:
        if name in self.config.models:
            return self.config.ttl_for(name)
        return self.config.scheduler.default_ttl

    async def copy_model(self, source: str, destination: str) -> None:
        """Ollama's copy: a new config entry under another name for the same file."""
        model = self._models[source]

        def add(data: dict[str, Any]) -> None:
            entry: dict[str, Any] = {"path": model.path, "runtime": model.runtime,
                                     "args": dict(model.args)}
            if model.ttl is not None:
                entry["ttl"] = model.ttl if model.ttl != float("inf") else -1
            data.setdefault("models", {})[destination] = entry

        await self.update_config(add)

    async def delete_model(self, name: str) -> None:
        """Forget a model; its file is deleted only when it lives in the app's own folder.

        Raises PermissionError for a file found in one of the user's own folders: that file
        is the user's, and removing it from the list would need removing its folder.
        """
        model = self._models[name]
        if name in self.config.models:
            def remove(data: dict[str, Any]) -> None:
                data.get("models", {}).pop(name, None)

            await self.update_config(remove)
            return
        if not _inside(Path(model.path), paths.models_dir()):
            raise PermissionError(name)
        await self.manager.unload(name)
        await asyncio.to_thread(Path(model.path).unlink, missing_ok=True)
        self._rebuild_models(force_scan=True)

    async def update_config(self, mutate: Callable[[dict[str, Any]], None]) -> Config:
        """Change the config file (validated, atomic, with backup) and apply it at once."""
        data = self.config.to_dict()
        mutate(data)
        new = self.store.save(data)
        await self.apply_config(new)
        return new

    # ---- lifecycle -----------------------------------------------------------------

    async def start(self) -> list[ListenerError]:
        """Load the config, start the listeners and the config watcher.

        Raises ConfigError when the config cannot be used; returns listener errors (a port
        in use) so each front end can decide whether they are fatal.
        """
        self.config = self.store.load()
        self._http = upstream_session()
        self._manager = RunnerManager(
            events=self.events,
            http=self._http,
            scheduler=self.config.scheduler,
            resolve_binary=self._binary_for,
            ttl_for=self.ttl_of,
            log_dir=self._runner_log_dir,
        )
        self._rebuild_models(force_scan=True)
        errors = await self.listeners.reconcile(self.config.proxies)
        self._tasks.spawn(
            self.store.watch(self._apply_watched_config, self._config_rejected), "config-watch"
        )
        return errors

    async def stop(self) -> None:
        """Stop listening, stop every runner (no child survives), release resources."""
        await self._tasks.cancel_all()
        await self.listeners.close()
        if self._metadata is not None:
            self._metadata.save()
        if self._manager is not None:
            await self._manager.shutdown()
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _apply_watched_config(self, new: Config) -> None:
        await self.apply_config(new)

    async def apply_config(self, new: Config) -> list[ListenerError]:
        """Apply a validated config without a restart, touching only what changed."""
        changes = diff_configs(self.config, new)
        self.config = new
        errors: list[ListenerError] = []
        if changes.listeners_changed:
            errors = await self.listeners.reconcile(new.proxies)
            for error in errors:
                log.error("%s", error)
        if changes.scheduler_changed:
            self.manager.set_scheduler(new.scheduler)
        self._rebuild_models(force_scan=True, restart=changes.models_restart)
        log.info("configuration reloaded from %s", self.store.path)
        self.events.publish(ConfigApplied(str(self.store.path)))
        return errors

    def _config_rejected(self, error: ConfigError) -> None:
        log.error("ignoring the edited configuration, keeping the running one:\n%s", error)
        self.events.publish(ConfigRejected(str(self.store.path), str(error)))

    # ---- model table ---------------------------------------------------------------

    def model_folders(self) -> list[Path]:
        if self.config.model_dirs:
            return [Path(d).expanduser() for d in self.config.model_dirs]
        return [paths.models_dir()]

    def _refresh_library(self) -> bool:
        """Rescan model folders if the last scan is old; True when the table changed."""
        if time.monotonic() - self._last_scan < LIBRARY_RESCAN_INTERVAL:
            return False
        return self._rebuild_models(force_scan=True)

    def _rebuild_models(self, *, force_scan: bool, restart: frozenset[str] = frozenset()
                        ) -> bool:
        found = scan_folders(self.model_folders()) if force_scan else []
        self._last_scan = time.monotonic()
        models = merge_discovered(self.config.models, found)
        changed = models != self._models or bool(restart)
        if changed:
            self._models = models
            self._aliases = {
                alias: name for name, model in models.items() for alias in model.alias
            }
            if self._manager is not None:
                self._manager.set_models(models, restart=restart)
        return changed

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
        runtime = self.config.runtimes.get(model.runtime)
        if runtime is None:
            raise RuntimeMissingError(model.name, model.runtime, "no such runtime in the config")
        if not Path(model.path).is_file():
            raise ModelFileMissingError(model.name)
        try:
            return resolve_runtime(runtime.path)
        except RuntimeNotFoundError as exc:
            raise RuntimeMissingError(model.name, model.runtime, str(exc)) from exc


def _inside(path: Path, folder: Path) -> bool:
    """Whether `path` really lives under `folder` (symlinks and `..` resolved)."""
    return folder.resolve() in path.resolve().parents


async def run_until_stopped(service: Service, stop: asyncio.Event) -> None:
    """Run a started service until `stop` is set, then stop it cleanly."""
    try:
        await stop.wait()
    finally:
        await service.stop()
