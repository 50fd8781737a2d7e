"""POSIX process-tree plumbing: own session, parent-death signal, group signals."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

# From <linux/prctl.h>: ask the kernel to signal the child when its parent dies, so a
# SIGKILLed app cannot leave llama-server running with a model in memory.
_PR_SET_PDEATHSIG = 1


@functools.cache
def _parent_death_hook() -> Callable[[], None]:
    """The pre-exec hook, with prctl looked up here, in the parent, once.

    Between fork and exec only async-signal-safe work is sound: finding and loading libc
    there (find_library even runs a subprocess) can deadlock on a lock another thread of
    the parent held at fork time. Calling an already resolved function is just a call.
    """
    libc_name = ctypes.util.find_library("c") or "libc.so.6"
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl
    sigkill = int(signal.SIGKILL)

    def set_parent_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, sigkill, 0, 0, 0)

    return set_parent_death_signal


def preexec_function() -> Callable[[], None] | None:
    """What runs in the child between fork and exec (Linux only; macOS has no prctl)."""
    return _parent_death_hook() if sys.platform.startswith("linux") else None


def spawn_options() -> dict[str, Any]:
    # A new session makes the child the leader of its own process group, so one
    # killpg reaches llama-server and anything it forks, and a Ctrl+C in the app's
    # terminal is not delivered to the children behind the app's back.
    options: dict[str, Any] = {"start_new_session": True}
    preexec = preexec_function()
    if preexec is not None:
        options["preexec_fn"] = preexec
    return options


def terminate_group(pid: int) -> None:
    """Polite stop: SIGTERM to the child's whole process group."""
    _signal_group(pid, signal.SIGTERM)


def kill_group(pid: int) -> None:
    """Forced stop: SIGKILL to the child's whole process group."""
    _signal_group(pid, signal.SIGKILL)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # The group id equals the leader's pid (start_new_session); it stays valid while any
    # member lives, even after the leader itself has exited.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
