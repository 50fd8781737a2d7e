"""A file of the llama-server children we spawned, so a crashed app's leftovers can be killed."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from ..core.files import atomic_write

log = logging.getLogger(__name__)

# create_time comes from /proc (or sysctl) with clock-tick resolution and is a float that
# may round differently between reads; a real match is well inside this.
_CREATE_TIME_SLACK = 0.05


@dataclass(frozen=True)
class ChildRecord:
    """One spawned child and the app process that owns it, identified beyond the pid."""

    pid: int
    create_time: float
    cmdline: list[str]
    owner_pid: int
    owner_create_time: float


def _create_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _same_process(pid: int, create_time: float, cmdline: list[str]) -> bool:
    """True only when `pid` is still the very process recorded: start time and argv match.

    A recycled pid belongs to an unrelated process; it must never be signalled.
    """
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > _CREATE_TIME_SLACK:
            return False
        return bool(proc.cmdline() == cmdline)
    except psutil.Error:
        return False


class ChildRegistry:
    """`runners.json`: {pid, create_time, cmdline} of every live child, rewritten atomically.

    The Linux parent-death signal already kills children of a SIGKILLed app; macOS and
    Windows have none, so this file is how the next start finds and stops them.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._owner_pid = os.getpid()
        self._owner_create_time = _create_time(self._owner_pid) or 0.0

    def _load(self) -> list[ChildRecord]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable runner registry %s: %s", self.path, exc)
            return []
        records = []
        for item in data if isinstance(data, list) else []:
            with contextlib.suppress(TypeError, ValueError, KeyError):
                records.append(self._parse(item))
        return records

    @staticmethod
    def _parse(item: Any) -> ChildRecord:
        return ChildRecord(
            pid=int(item["pid"]),
            create_time=float(item["create_time"]),
            cmdline=[str(part) for part in item["cmdline"]],
            owner_pid=int(item["owner_pid"]),
            owner_create_time=float(item["owner_create_time"]),
        )

    def _save(self, records: list[ChildRecord]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Atomic: a crash mid-write leaves the old file, never half a file.
            atomic_write(self.path, json.dumps([asdict(r) for r in records]).encode())
        except OSError as exc:
            # Losing the record only weakens crash cleanup; the runner itself still works.
            log.warning("cannot write runner registry %s: %s", self.path, exc)

    def record(self, pid: int) -> None:
        """Note a child we just spawned."""
        try:
            proc = psutil.Process(pid)
            create_time, cmdline = float(proc.create_time()), list(proc.cmdline())
        except psutil.Error:
            return  # already gone: nothing to clean up later
        records = [r for r in self._load() if r.pid != pid]
        records.append(ChildRecord(pid, create_time, cmdline, self._owner_pid,
                                   self._owner_create_time))
        self._save(records)

    def forget(self, pid: int) -> None:
        """Drop a child we reaped."""
        records = self._load()
        kept = [r for r in records if r.pid != pid]
        if len(kept) != len(records):
            self._save(kept)

    @staticmethod
    def _owner_alive(record: ChildRecord) -> bool:
        started = _create_time(record.owner_pid)
        return started is not None and abs(started - record.owner_create_time) <= _CREATE_TIME_SLACK

    def clean_stale(self) -> list[int]:
        """Kill children left by an app that is gone; drop records that match nothing.

        Returns the pids killed. Children of a still-running app (another Service in this
        process, say) are left alone.
        """
        killed = []
        kept = []
        for record in self._load():
            if self._owner_alive(record):
                kept.append(record)
                continue
            if _same_process(record.pid, record.create_time, record.cmdline):
                log.warning("stopping llama-server pid %d left by an earlier run", record.pid)
                _kill_tree(record.pid)
                killed.append(record.pid)
        self._save(kept)
        return killed


def _kill_tree(pid: int) -> None:
    try:
        proc = psutil.Process(pid)
        tree = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return
    if sys.platform != "win32":
        # The child leads its own process group (start_new_session); a grandchild that
        # was reparented is still in it.
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    for member in tree:
        with contextlib.suppress(psutil.Error):
            member.kill()
    psutil.wait_procs(tree, timeout=2)
