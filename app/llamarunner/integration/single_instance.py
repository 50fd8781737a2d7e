"""One app per user: an OS file lock plus a loopback control endpoint for the second launch."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

if sys.platform == "win32":
    import msvcrt
else:
    import fcntl

from ..core.files import atomic_write

log = logging.getLogger(__name__)

# A command line is tiny ({"token": ..., "command": "show"}); anything longer is not ours.
_MAX_REQUEST = 4096
# How long the running instance waits for a connected client to send its one line.
_READ_TIMEOUT = 2.0

CommandHandler = Callable[[str], None]


class SingleInstance:
    """Make sure only one app instance runs for a user, and let a second launch talk to it.

    `acquire()` takes an exclusive OS lock on `<runtime_dir>/<name>.lock`. The kernel
    releases that lock when the holder dies, however it dies, so a lock file left behind
    by a crash never blocks the next start: only a live holder does.

    The holder then calls `serve()`, which listens on a loopback TCP port (portable: Unix
    socket paths have length limits and Windows support is recent) and writes
    `<runtime_dir>/<name>.endpoint` (JSON: pid, port, a random token). A second launch
    fails `acquire()` and calls `notify_running("show")`, which connects, presents the token
    and sends the command. The token keeps other local users' programs, which can reach
    loopback ports but not our private data folder, from sending commands.
    """

    def __init__(self, name: str, runtime_dir: Path) -> None:
        self.name = name
        self.runtime_dir = runtime_dir
        self.lock_path = runtime_dir / f"{name}.lock"
        self.endpoint_path = runtime_dir / f"{name}.endpoint"
        self._lock_file: IO[bytes] | None = None
        self._server: asyncio.Server | None = None
        self._token = ""

    @property
    def acquired(self) -> bool:
        return self._lock_file is not None

    def acquire(self) -> bool:
        """Take the instance lock without waiting; False when another live instance holds it."""
        if self._lock_file is not None:
            return True
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        # Python opens files non-inheritable (PEP 446), so llama-server children never hold
        # the lock past the app's death.
        lock_file = open(self.lock_path, "a+b")  # noqa: SIM115 - held open while we run
        try:
            _lock(lock_file)
        except OSError:
            lock_file.close()
            return False
        self._lock_file = lock_file
        return True

    async def serve(self, on_command: CommandHandler) -> None:
        """Accept commands from later launches on the running loop (asyncio or qasync)."""
        if self._lock_file is None:
            raise RuntimeError("serve() needs the instance lock; call acquire() first")
        if self._server is not None:
            return
        self._token = secrets.token_hex(16)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                command = await self._read_command(reader)
                if command is None:
                    writer.write(b"denied\n")
                else:
                    try:
                        on_command(command)
                    except Exception:
                        log.exception("single instance: handling %r failed", command)
                    writer.write(b"ok\n")
                await writer.drain()
            except (OSError, TimeoutError, ValueError):
                pass  # a client that goes away or misbehaves is simply dropped
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

        self._server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        # Owner-only, whatever the old file's mode: it holds the command token.
        atomic_write(self.endpoint_path, json.dumps(
            {"pid": os.getpid(), "port": port, "token": self._token}).encode(),
            keep_mode=False, mode=0o600)
        log.debug("single instance: listening for commands on 127.0.0.1:%d", port)

    async def _read_command(self, reader: asyncio.StreamReader) -> str | None:
        line = await asyncio.wait_for(reader.readline(), _READ_TIMEOUT)
        if len(line) > _MAX_REQUEST:
            return None
        try:
            request: Any = json.loads(line)
        except ValueError:
            return None
        if not isinstance(request, dict):
            return None
        token, command = request.get("token"), request.get("command")
        if not isinstance(token, str) or not isinstance(command, str):
            return None
        if not hmac.compare_digest(token.encode(), self._token.encode()):
            log.warning("single instance: ignoring a command with a wrong token")
            return None
        return command

    def notify_running(self, command: str = "show", timeout: float = 5.0) -> bool:
        """Send `command` to the running instance (blocking); True once it acknowledged.

        Retries until `timeout`: the holder may still be starting and not have written
        its endpoint yet, or the endpoint on disk may be a crashed instance's leftover.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self._try_notify(command, max(0.1, deadline - time.monotonic())):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def _try_notify(self, command: str, timeout: float) -> bool:
        try:
            endpoint = json.loads(self.endpoint_path.read_text(encoding="utf-8"))
            port = int(endpoint["port"])
            token = str(endpoint["token"])
        except (OSError, ValueError, KeyError, TypeError):
            return False
        request = json.dumps({"token": token, "command": command}).encode() + b"\n"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=min(timeout, 2.0)) as sock:
                sock.sendall(request)
                with sock.makefile("rb") as stream:
                    reply = stream.readline(64)
        except OSError:
            return False
        return reply.strip() == b"ok"

    async def close(self) -> None:
        """Stop serving, remove the endpoint file and release the lock."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            with contextlib.suppress(OSError):
                self.endpoint_path.unlink()
        self.release()

    def release(self) -> None:
        """Release the lock (the lock file stays: deleting it would race a new acquirer)."""
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                _unlock(self._lock_file)
            self._lock_file.close()
            self._lock_file = None


def _lock(lock_file: IO[bytes]) -> None:
    """Exclusive, non-blocking; raises OSError when someone else holds it."""
    if sys.platform == "win32":
        lock_file.seek(0)
        msvcrt.locking(lock_file.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _unlock(lock_file: IO[bytes]) -> None:
    if sys.platform == "win32":
        lock_file.seek(0)
        msvcrt.locking(lock_file.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)
