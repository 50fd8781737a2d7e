"""One child process: spawn it in its own group, drain its output, stop the whole tree."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import subprocess
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
        self._transport: asyncio.SubprocessTransport | None = None
        self._output: _ChildOutput | None = None
        self._splitter = _LineSplitter(_LINE_LIMIT)
        self._log_file: IO[str] | None = None
        # 0: every piece of output is handled as it arrives. Above 0, reading pauses this
        # long after each read (see coalesce_output).
        self._coalesce = 0.0
        self._paused = False
        self.last_output_at = time.monotonic()
        self.started_at: float | None = None
        # Set whenever the child prints; whoever waits on it clears it first (readiness
        # checks ask again at once instead of on their next timer tick).
        self.output_arrived = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self._transport.get_pid() if self._transport else None

    @property
    def returncode(self) -> int | None:
        return self._transport.get_returncode() if self._transport else None

    def tail(self, lines: int = 20) -> list[str]:
        return list(self._ring)[-lines:]

    async def spawn(self) -> None:
        if self._log_path is not None:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            # Keep the previous run's log next to this one: it usually explains a crash.
            if self._log_path.exists():
                with contextlib.suppress(OSError):
                    os.replace(self._log_path, self._log_path.with_suffix(".prev.log"))
            # Flushed after every read of output (see _record_lines); opening is instant.
            self._log_file = open(  # noqa: SIM115, ASYNC230
                self._log_path, "a", encoding="utf-8"
            )
        loop = asyncio.get_running_loop()
        # The protocol API rather than create_subprocess_exec: output is handled in the
        # read callback itself (no reader task to wake per line), and the pipe's own
        # transport can pause reading, which coalesce_output needs.
        transport, output = await loop.subprocess_exec(
            lambda: _ChildOutput(loop, self._on_output),
            *self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self._env,
            **platform_impl.spawn_options(),
        )
        self._transport, self._output = transport, output
        pid = transport.get_pid()
        if sys.platform == "win32":
            platform_impl.after_spawn(pid)
        if self._registry is not None:
            self._registry.record(pid)
        self.started_at = time.monotonic()
        self.last_output_at = self.started_at

    def coalesce_output(self, seconds: float) -> None:
        """From now on read the child's output at most once every `seconds`.

        A ready llama-server prints about eight lines per request, each a separate write:
        handled one by one, they cost the app more CPU than relaying the request itself.
        Paused, they wait in the pipe (64 KiB, far more than a pause's worth of lines;
        llama-server writes them from its own logging thread, so a full pipe never holds
        up a request) and arrive in one read. Readiness checks want every line at once,
        so runners call this only once their child is up.
        """
        self._coalesce = seconds

    def _on_output(self, data: bytes) -> None:
        if data:
            self.output_arrived.set()
            self._record_lines(self._splitter.feed(data))
            if self._coalesce > 0 and not self._paused:
                self._pause_reading()
        else:  # the end of the output: the child and everything it forked closed the pipe
            self._record_lines(self._splitter.finish())
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    def _pause_reading(self) -> None:
        pipe = self._transport.get_pipe_transport(1) if self._transport else None
        if not isinstance(pipe, asyncio.ReadTransport) or pipe.is_closing():
            return
        pipe.pause_reading()
        self._paused = True
        asyncio.get_running_loop().call_later(self._coalesce, self._resume_reading, pipe)

    def _resume_reading(self, pipe: asyncio.ReadTransport) -> None:
        self._paused = False
        if not pipe.is_closing():
            pipe.resume_reading()

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
        assert self._transport is not None and self._output is not None
        await asyncio.shield(self._output.finished)
        code = self._transport.get_returncode()
        assert code is not None  # the transport ends only after the process has exited
        if self._registry is not None:
            self._registry.forget(self._transport.get_pid())
        return code

    async def stop(self, grace: float) -> int | None:
        """Polite signal, bounded wait, then kill the whole tree and reap. Idempotent."""
        transport = self._transport
        if transport is None:
            return None
        descendants = _descendants(transport.get_pid())
        if transport.get_returncode() is None:
            self._terminate(transport)
            try:
                await asyncio.wait_for(self._exited(), timeout=grace)
            except TimeoutError:
                log.warning("%s ignored the stop request for %.1fs; killing it", self.name, grace)
        # Kill the group even after a clean exit: a forked grandchild may still hold the
        # GPU or a port, and it is part of the tree we started.
        self._kill_tree(transport, descendants)
        code = await self.wait()
        if descendants:
            await asyncio.to_thread(_reap, descendants)
        return code

    async def _exited(self) -> None:
        """Until the child itself has exited (its output may still be open)."""
        assert self._output is not None
        await asyncio.shield(self._output.exited)

    def _terminate(self, transport: asyncio.SubprocessTransport) -> None:
        if sys.platform == "win32":
            with contextlib.suppress(OSError, ValueError):
                platform_impl.terminate(transport)
        else:
            platform_impl.terminate_group(transport.get_pid())

    def _kill_tree(
        self, transport: asyncio.SubprocessTransport, descendants: list[psutil.Process]
    ) -> None:
        if sys.platform != "win32":
            platform_impl.kill_group(transport.get_pid())
        elif transport.get_returncode() is None:
            with contextlib.suppress(ProcessLookupError, OSError):
                transport.kill()
        for child in descendants:
            with contextlib.suppress(psutil.Error):
                child.kill()


class _ChildOutput(asyncio.SubprocessProtocol):
    """Hands the child's output to `on_output` as it is read (b"" at its end) and says
    when the child has exited and when everything has ended."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 on_output: Callable[[bytes], None]) -> None:
        self._on_output = on_output
        self.exited: asyncio.Future[None] = loop.create_future()
        # The process has exited and its output is closed: nothing more will come.
        self.finished: asyncio.Future[None] = loop.create_future()
        self._output_closed = False

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self._on_output(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1 and not self._output_closed:
            self._output_closed = True
            self._on_output(b"")

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._output_closed:  # closed without its pipe ever reporting the end
            self._output_closed = True
            self._on_output(b"")
        for future in (self.exited, self.finished):
            if not future.done():
                future.set_result(None)


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
