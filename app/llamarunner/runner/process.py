"""One child process: spawn it in its own group, drain its output, stop the whole tree."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import psutil

from .registry import ChildRegistry

if sys.platform == "win32":
    from . import _windows as platform_impl
else:
    from . import _posix as platform_impl

log = logging.getLogger(__name__)

# A llama-server line can be long (a dumped chat template); past this it is cut, not fatal.
_LINE_LIMIT = 1 << 20
# How much output one read takes from the child's pipe.
_READ_CHUNK = 1 << 16


class ManagedProcess:
    """Owns one child process from spawn to reap.

    Output (stdout and stderr merged, so nothing can block on a full pipe) is always
    drained into a bounded ring buffer, an optional log file and a callback that gets the
    whole lines of each read.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path | None = None,
        on_lines: Callable[[list[str]], None] | None = None,
        ring_size: int = 500,
        env: dict[str, str] | None = None,
        registry: ChildRegistry | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self._log_path = log_path
        self._on_lines = on_lines
        self._ring: collections.deque[str] = collections.deque(maxlen=ring_size)
        self._env = env
        self._registry = registry
        self._proc: asyncio.subprocess.Process | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._log_file: IO[str] | None = None
        self.last_output_at = time.monotonic()
        self.started_at: float | None = None
        # Set whenever the child prints; whoever waits on it clears it first (readiness
        # checks ask again at once instead of on their next timer tick).
        self.output_arrived = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    def tail(self, lines: int = 20) -> list[str]:
        return list(self._ring)[-lines:]

    async def spawn(self) -> None:
        if self._log_path is not None:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            # Keep the previous run's log next to this one: it usually explains a crash.
            if self._log_path.exists():
                with contextlib.suppress(OSError):
                    os.replace(self._log_path, self._log_path.with_suffix(".prev.log"))
            # Flushed after every chunk of output (see _record_lines); opening is instant.
            self._log_file = open(  # noqa: SIM115, ASYNC230
                self._log_path, "a", encoding="utf-8"
            )
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            limit=_LINE_LIMIT,
            env=self._env,
            **platform_impl.spawn_options(),
        )
        if sys.platform == "win32":
            platform_impl.after_spawn(self._proc.pid)
        if self._registry is not None:
            self._registry.record(self._proc.pid)
        self.started_at = time.monotonic()
        self.last_output_at = self.started_at
        self._drain_task = asyncio.get_running_loop().create_task(
            self._drain(), name=f"drain:{self.name}"
        )

    async def _drain(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stream = self._proc.stdout
        splitter = _LineSplitter(_LINE_LIMIT)
        try:
            while True:
                # Whole chunks, not readline(): a burst of lines (a model load prints
                # hundreds) costs one read, one file write and one flush.
                chunk = await stream.read(_READ_CHUNK)
                if chunk:
                    self.output_arrived.set()
                lines = splitter.feed(chunk) if chunk else splitter.finish()
                self._record_lines(lines)
                if not chunk:
                    break
        finally:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    def _record_lines(self, lines: list[str]) -> None:
        if not lines:
            return
        self.last_output_at = time.monotonic()
        self._ring.extend(lines)
        if self._log_file is not None:
            try:
                self._log_file.write("\n".join(lines) + "\n")
                self._log_file.flush()  # nothing waits in our buffer if the app dies
            except OSError:
                log.warning("cannot write runner log %s; continuing without it", self._log_path)
                self._log_file = None
        if self._on_lines is not None:
            self._on_lines(lines)

    async def wait(self) -> int:
        """Wait for the child to exit and for its output to be fully drained."""
        assert self._proc is not None
        code = await self._proc.wait()
        if self._registry is not None:
            self._registry.forget(self._proc.pid)
        if self._drain_task is not None:
            await asyncio.shield(self._drain_task)
        return code

    async def stop(self, grace: float) -> int | None:
        """Polite signal, bounded wait, then kill the whole tree and reap. Idempotent."""
        proc = self._proc
        if proc is None:
            return None
        descendants = _descendants(proc.pid)
        if proc.returncode is None:
            self._terminate(proc)
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), timeout=grace)
            except TimeoutError:
                log.warning("%s ignored the stop request for %.1fs; killing it", self.name, grace)
        # Kill the group even after a clean exit: a forked grandchild may still hold the
        # GPU or a port, and it is part of the tree we started.
        self._kill_tree(proc, descendants)
        code = await self.wait()
        if descendants:
            await asyncio.to_thread(_reap, descendants)
        return code

    def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        if sys.platform == "win32":
            with contextlib.suppress(OSError, ValueError):
                platform_impl.terminate(proc)
        else:
            platform_impl.terminate_group(proc.pid)

    def _kill_tree(
        self, proc: asyncio.subprocess.Process, descendants: list[psutil.Process]
    ) -> None:
        if sys.platform != "win32":
            platform_impl.kill_group(proc.pid)
        elif proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, OSError):
                proc.kill()
        for child in descendants:
            with contextlib.suppress(psutil.Error):
                child.kill()


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        children: list[psutil.Process] = psutil.Process(pid).children(recursive=True)
        return children
    except psutil.Error:
        return []


def _reap(processes: list[psutil.Process]) -> None:
    # Grandchildren are not ours to wait() on (their parent is), but waiting briefly makes
    # sure they are really gone before we report the runner as stopped.
    if processes:
        psutil.wait_procs(processes, timeout=2)


class _LineSplitter:
    """Cuts a byte stream into decoded lines; a line longer than `limit` is dropped."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._partial = b""
        self._dropping = False  # inside an over-long line: skip up to its newline

    def feed(self, chunk: bytes) -> list[str]:
        data = self._partial + chunk
        end = data.rfind(b"\n")
        if 0 <= end <= self._limit and not self._dropping:
            # The usual case (a few log lines per read): no line can be over-long, so the
            # lines are decoded in one go. A newline byte never occurs inside a UTF-8
            # sequence, so this decodes exactly as line by line would.
            text = data[:end].decode("utf-8", "replace")
            self._partial = data[end + 1:]
            decoded = text.split("\n")
            if "\r" in text:
                decoded = [line.rstrip("\r") for line in decoded]
            return decoded + self._check_partial()
        *complete, self._partial = data.split(b"\n")
        lines: list[str] = []
        for raw in complete:
            if self._dropping:
                self._dropping = False  # this piece is the over-long line's tail
                continue
            if len(raw) > self._limit:
                lines.append(_TOO_LONG)
                continue
            lines.append(_decode(raw))
        return lines + self._check_partial()

    def _check_partial(self) -> list[str]:
        """The note for an unfinished line that is already over-long (its rest is skipped)."""
        if len(self._partial) <= self._limit:
            return []
        noted = [] if self._dropping else [_TOO_LONG]
        self._dropping = True
        self._partial = b""
        return noted

    def finish(self) -> list[str]:
        """The last line when the stream ended without a newline."""
        partial, dropping = self._partial, self._dropping
        self._partial, self._dropping = b"", False
        return [_decode(partial)] if partial and not dropping else []


_TOO_LONG = "[line too long, dropped]"


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").rstrip("\r")
