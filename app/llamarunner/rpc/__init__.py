"""llama.cpp RPC workers: the `llamarunner worker` command, probing workers, their states."""

from .monitor import RPC_CHECK_INTERVAL_S, WorkerMonitor, WorkerStatus
from .probe import DEFAULT_RPC_PORT, ProbeResult, WorkerState, probe_worker

__all__ = [
    "DEFAULT_RPC_PORT",
    "RPC_CHECK_INTERVAL_S",
    "ProbeResult",
    "WorkerMonitor",
    "WorkerState",
    "WorkerStatus",
    "probe_worker",
]
