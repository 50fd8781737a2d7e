"""Keep the OS login entry and `desktop.start_at_login` in agreement when the user flips it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ...config import ConfigError
from .facade import Autostart, AutostartOutcome, AutostartResult

log = logging.getLogger(__name__)

# Saves `desktop.start_at_login = value` (the CLI through ConfigStore, the tray through
# the Service); raises ConfigError or OSError when it cannot.
SaveSetting = Callable[[bool], None]


def set_start_at_login(data: dict[str, Any], enabled: bool) -> None:
    """Set the key in a user-shaped config dict (Config.to_dict()), keeping its comments."""
    section = data.get("desktop")
    if not isinstance(section, dict):
        section = data["desktop"] = {}
    section["start_at_login"] = enabled


def change_start_at_login(autostart: Autostart, enabled: bool,
                          save: SaveSetting) -> AutostartOutcome:
    """Turn start at login on or off: the OS entry first, then the config key.

    The entry goes first because it is what can be refused (a development run, a folder
    that cannot be written); the key is saved only once the entry is right. Should the
    save fail, the entry is put back, so the two never disagree.
    """
    outcome = autostart.set_enabled(enabled)
    if not outcome.ok:
        return outcome
    try:
        save(enabled)
    except (ConfigError, OSError) as exc:
        undone = ""
        if outcome.result.changed:
            back = autostart.set_enabled(not enabled)
            undone = (" The login entry was put back as it was." if back.ok
                      else f" Putting the login entry back failed too: {back.message}")
        return AutostartOutcome(AutostartResult.FAILED, (
            f"could not save desktop.start_at_login in the config file: {exc}.{undone}"))
    log.info("start at login %s: %s", "on" if enabled else "off", outcome.message)
    return outcome
