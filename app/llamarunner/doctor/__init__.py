"""The client doctor: replays what each client does against the running app and says why not."""

from .checks import CLIENTS
from .diagnose import diagnose
from .report import (
    EXIT_CLIENT_FAILS,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    ClientResult,
    Report,
    format_report,
)
from .target import Endpoint, Target, target_from_config

__all__ = [
    "CLIENTS",
    "EXIT_CLIENT_FAILS",
    "EXIT_NOT_RUNNING",
    "EXIT_OK",
    "ClientResult",
    "Endpoint",
    "Report",
    "Target",
    "diagnose",
    "format_report",
    "target_from_config",
]
