"""One file downloaded into a partial file: resumed with HTTP Range, retried, hashed on the way.

The partial file survives a cut connection, a cancelled pull and a restart; the next try
asks for `Range: bytes=<what we have>-` and hashes what is already on disk first, so the
sha256 covers every byte without fetching any twice. A server that ignores the range
(200 instead of 206) makes the download start over.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

import aiohttp

from .errors import PullError, RemoteUnreachableError

__all__ = ["Fetched", "Opener", "close_synced", "fetch_to_partial", "human_bytes"]

log = logging.getLogger(__name__)

# Opens the source at a byte offset: a GET with `Range: bytes=<offset>-` when offset > 0.
Opener = Callable[[int], AbstractAsyncContextManager[aiohttp.ClientResponse]]

_CHUNK: Final = 1 << 20
_BATCH: Final = 4 << 20
_HASH_CHUNK: Final = 4 << 20
_TRANSIENT_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})


class _Transient(Exception):
    """A failure worth another try (cut connection, timeout, 5xx)."""


@dataclass(frozen=True)
class Fetched:
    partial: Path
    digest: str  # "sha256:<hex>" of the whole file
    size: int


def human_bytes(count: float) -> str:
    """`4.1 GB`: decimal units, as Ollama and disk tools show sizes."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


def _hash_existing(path: Path, hasher: Any) -> int:
    size = 0
    if not path.exists():
        return 0
    with open(path, "rb") as file:
        while chunk := file.read(_HASH_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return size


def _write(file: BinaryIO, hasher: Any, chunk: bytes) -> None:
    file.write(chunk)
    hasher.update(chunk)


async def _flush(file: BinaryIO, state: _Progress, pending: bytearray) -> None:
    data = bytes(pending)
    pending.clear()
    await asyncio.to_thread(_write, file, state.hasher, data)
    state.have += len(data)


def close_synced(file: BinaryIO) -> None:
    """Flush and close a file we wrote; synced so a power cut keeps what was reported."""
    try:
        file.flush()
        with contextlib.suppress(OSError):
            os.fsync(file.fileno())
    finally:
        file.close()


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-199/200"
    if not value or not value.startswith("bytes "):
        return None
    start, _, _ = value[6:].partition("-")
    return int(start) if start.isdigit() else None


@dataclass
class _Progress:
    """What is on disk so far and the hash of exactly those bytes."""

    hasher: Any
    have: int = 0

    def restart(self) -> None:
        self.hasher, self.have = hashlib.sha256(), 0


async def fetch_to_partial(
    partial: Path,
    open_from: Opener,
    *,
    expected_size: int | None,
    on_bytes: Callable[[int], None],
    what: str,
    retries: int = 2,
    retry_delay: float = 0.5,
) -> Fetched:
    """Download into `partial` (resuming what is there) and return its digest and size.

    `on_bytes(n)` is told of every n bytes added (negative when a restart drops bytes).
    Transient failures are retried `retries` times, each resuming where the last stopped;
    after that a resumable PullError keeps the partial file for the next pull.
    """
    state = _Progress(hashlib.sha256())
    state.have = await asyncio.to_thread(_hash_existing, partial, state.hasher)
    if expected_size is not None and state.have > expected_size:
        # More than the file can hold: not a prefix of it. Start over.
        await asyncio.to_thread(partial.unlink)
        state.restart()
    on_bytes(state.have)
    failures = 0
    while expected_size is None or state.have < expected_size:
        try:
            if await _attempt(partial, open_from, state, expected_size, on_bytes, what):
                break
            raise _Transient("the connection closed before the end of the file")
        except _Transient as exc:
            failures += 1
            if failures > retries:
                total = f" of {expected_size}" if expected_size is not None else ""
                raise PullError(
                    f"the download of {what} failed after {failures} tries at {state.have}"
                    f"{total} bytes ({exc}); pull again to resume from there", status=502,
                    resumable=True) from exc
            log.info("download of %s interrupted at %d bytes (%s); resuming", what,
                     state.have, exc)
            await asyncio.sleep(retry_delay * failures)
    return Fetched(partial, f"sha256:{state.hasher.hexdigest()}", state.have)


async def _attempt(
    partial: Path, open_from: Opener, state: _Progress, expected_size: int | None,
    on_bytes: Callable[[int], None], what: str,
) -> bool:
    """One request, adding to `partial` and `state`; True when the file is complete."""
    try:
        async with open_from(state.have) as resp:
            if resp.status == 416 and expected_size is not None and state.have == expected_size:
                return True
            if resp.status in _TRANSIENT_STATUSES:
                raise _Transient(f"the server answered {resp.status}")
            if resp.status == 206 and _content_range_start(
                    resp.headers.get("Content-Range")) == state.have:
                pass
            elif resp.status in (200, 206):
                if state.have:
                    # The range was ignored: everything comes again from byte 0.
                    log.info("server ignored the range request for %s; starting over", what)
                    on_bytes(-state.have)
                    state.restart()
                    await asyncio.to_thread(partial.write_bytes, b"")
            elif resp.status == 404:
                raise PullError(f"the download of {what} answered 404: the file is gone "
                                "from the server", status=502)
            else:
                raise PullError(f"the download of {what} answered {resp.status}", status=502)
            file = await asyncio.to_thread(open, partial, "ab")
            # Writes and hashing go to a thread in batches: one hop per few MB, not per
            # network read. What reaches the disk is always hashed, so a resume is exact.
            pending = bytearray()
            try:
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    if (expected_size is not None
                            and state.have + len(pending) + len(chunk) > expected_size):
                        pending.clear()
                        raise PullError(
                            f"the server sent more than the {expected_size} bytes of {what}; "
                            "the file there does not match the manifest's digest", status=502)
                    pending += chunk
                    on_bytes(len(chunk))
                    if len(pending) >= _BATCH:
                        await _flush(file, state, pending)
            finally:
                try:
                    if pending:
                        await _flush(file, state, pending)
                finally:
                    await asyncio.to_thread(close_synced, file)
            return expected_size is None or state.have == expected_size
    except RemoteUnreachableError as exc:
        raise _Transient(str(exc)) from exc
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as exc:
        raise _Transient(str(exc) or type(exc).__name__) from exc
