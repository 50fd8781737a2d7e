"""Start at login: one facade over a small class per OS (XDG file, LaunchAgent, Run key).

The names below are the fixed interface: the installers and their tests check the
Windows value, the LaunchAgent label and the .desktop file against these constants.
"""

from .entry import APP_TITLE, AutostartStatus, EntryState, FoundEntry, LoginEntry
from .facade import Autostart, AutostartOutcome, AutostartResult, entry_for_platform
from .installed_app import InstalledApp, bundle_executable, find_installed_app
from .launch_agent import (
    LAUNCH_AGENT_FILE_NAME,
    LAUNCH_AGENT_LABEL,
    MACOS_APP_NAME,
    MACOS_BUNDLE_ID,
    MACOS_EXECUTABLE,
    LaunchAgent,
    launch_agent_plist,
    launch_agents_dir,
)
from .run_key import (
    REG_BINARY,
    REG_EXPAND_SZ,
    REG_SZ,
    RUN_KEY,
    RUN_VALUE_NAME,
    STARTUP_APPROVED_KEY,
    WINDOWS_EXECUTABLE,
    Registry,
    RunKey,
    command_program,
    run_value_data,
    windows_registry,
)
from .setting import change_start_at_login, set_start_at_login
from .xdg import (
    DESKTOP_ENTRY_NAME,
    DESKTOP_FILE_NAME,
    DESKTOP_ICON,
    XdgAutostart,
    autostart_dir,
    desktop_entry_text,
    parse_desktop_entry,
    quote_exec_argument,
    split_exec,
)

__all__ = [
    "APP_TITLE",
    "DESKTOP_ENTRY_NAME",
    "DESKTOP_FILE_NAME",
    "DESKTOP_ICON",
    "LAUNCH_AGENT_FILE_NAME",
    "LAUNCH_AGENT_LABEL",
    "MACOS_APP_NAME",
    "MACOS_BUNDLE_ID",
    "MACOS_EXECUTABLE",
    "REG_BINARY",
    "REG_EXPAND_SZ",
    "REG_SZ",
    "RUN_KEY",
    "RUN_VALUE_NAME",
    "STARTUP_APPROVED_KEY",
    "WINDOWS_EXECUTABLE",
    "Autostart",
    "AutostartOutcome",
    "AutostartResult",
    "AutostartStatus",
    "EntryState",
    "FoundEntry",
    "InstalledApp",
    "LaunchAgent",
    "LoginEntry",
    "Registry",
    "RunKey",
    "XdgAutostart",
    "autostart_dir",
    "bundle_executable",
    "change_start_at_login",
    "command_program",
    "desktop_entry_text",
    "entry_for_platform",
    "find_installed_app",
    "launch_agent_plist",
    "launch_agents_dir",
    "parse_desktop_entry",
    "quote_exec_argument",
    "run_value_data",
    "set_start_at_login",
    "split_exec",
    "windows_registry",
]
