"""Work out which parts of the running app a config change affects (a pure function)."""

from __future__ import annotations

from dataclasses import dataclass

from .schema import Config, ModelConfig


@dataclass(frozen=True)
class ConfigChanges:
    """What differs between two configs, in the terms the Service acts on."""

    # Proxy names ("ollama", "lmstudio") whose enabled/host/port changed: restart listeners.
    listeners_changed: frozenset[str] = frozenset()
    models_added: frozenset[str] = frozenset()
    models_removed: frozenset[str] = frozenset()
    # Models whose llama-server command line changed (path, runtime, args, or the runtime's
    # executable): a loaded one must be restarted to take effect.
    models_restart: frozenset[str] = frozenset()
    scheduler_changed: bool = False
    # Models whose ttl or aliases changed: routing/timers update, no restart needed.
    models_updated: frozenset[str] = frozenset()
    # The folders scanned for *.gguf changed: the library must rescan.
    model_dirs_changed: bool = False
    # The Ollama / LM Studio stores read in place were switched on/off or moved.
    sources_changed: bool = False
    # The security section changed. Nothing to restart: the listeners' middlewares read
    # the Service's current config on every request, so the new rules apply at once.
    security_changed: bool = False
    # desktop.start_at_login changed: the desktop app updates the OS login entry.
    desktop_changed: bool = False

    @property
    def library_changed(self) -> bool:
        """True when the set of places models are discovered in changed: rescan them all."""
        return self.model_dirs_changed or self.sources_changed

    @property
    def empty(self) -> bool:
        """True when nothing the Service acts on changed (comments may still differ)."""
        return self == ConfigChanges()


def _command_changed(old: Config, new: Config, before: ModelConfig, after: ModelConfig) -> bool:
    if (before.path, before.runtime, dict(before.args), before.unset_args) != (
        after.path,
        after.runtime,
        dict(after.args),
        after.unset_args,
    ):
        return True
    return old.runtimes.get(before.runtime) != new.runtimes.get(after.runtime)


def diff_configs(old: Config, new: Config) -> ConfigChanges:
    """Compare two validated configs; no I/O, so the Service's reaction is table-testable."""
    listeners = frozenset(
        name
        for name in set(old.proxies) | set(new.proxies)
        if old.proxies.get(name) != new.proxies.get(name)
    )
    kept = set(old.models) & set(new.models)
    restart = frozenset(
        name for name in kept if _command_changed(old, new, old.models[name], new.models[name])
    )
    updated = frozenset(
        name
        for name in kept - restart
        if (old.models[name].ttl, old.models[name].alias)
        != (new.models[name].ttl, new.models[name].alias)
    )
    return ConfigChanges(
        listeners_changed=listeners,
        models_added=frozenset(set(new.models) - set(old.models)),
        models_removed=frozenset(set(old.models) - set(new.models)),
        models_restart=restart,
        scheduler_changed=old.scheduler != new.scheduler,
        models_updated=updated,
        model_dirs_changed=old.model_dirs != new.model_dirs,
        sources_changed=dict(old.sources) != dict(new.sources),
        security_changed=old.security != new.security,
        desktop_changed=old.desktop != new.desktop,
    )
