"""Ask a llama.cpp RPC worker ("host:port") whether it is up, with its own HELLO handshake.

The wire format is ggml's (ggml/src/ggml-rpc/ggml-rpc.cpp of the pinned llama.cpp): a
request is one command byte, a little-endian u64 size and that many bytes; a reply is a
u64 size and the bytes. HELLO (command 14, fixed across protocol versions) carries 24
bytes of transport capabilities (all zero: plain TCP, no RDMA upgrade) and is answered
with major, minor and patch version bytes, a padding byte and the server's 24 bytes.

An RPC server serves one client at a time (rpc_serve_client runs inside its accept loop):
while a llama-server uses it, a new connection is accepted by the kernel but nothing
answers it. Such a worker is reported busy, not down.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
import time
from dataclasses import dataclass

# Port ggml-rpc-server listens on when given none (tools/rpc/rpc-server.cpp).
DEFAULT_RPC_PORT = 50052
# A worker on the local network answers HELLO in milliseconds; this bounds a dead or
# firewalled host (connect) and a busy or silent one (the answer) together.
PROBE_TIMEOUT_S = 3.0
# The protocol major version of the pinned llama.cpp (ggml/include/ggml-rpc.h): a
# llama-server refuses a worker of another major version.
RPC_PROTOCOL_MAJOR = 7

_HELLO = 14
_CAPS_SIZE = 24
_HELLO_REPLY_SIZE = 4 + _CAPS_SIZE
_SIZE = struct.Struct("<Q")


class WorkerState(enum.Enum):
    """What a probe found; UNKNOWN only before the first probe."""

    UP = "up"  # answered HELLO: ready for a llama-server
    BUSY = "busy"  # accepts connections but answers nobody new: serving another client
    DOWN = "down"  # no connection: not running, wrong port, host unreachable
    NOT_RPC = "not-rpc"  # something else listens there, or an incompatible RPC server
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ProbeResult:
    """One probe of one worker: its state, why, and the RPC protocol version it speaks."""

    address: str
    state: WorkerState
    reason: str
    version: str | None = None
    checked_at: float = 0.0  # wall-clock time of the probe

    @property
    def up(self) -> bool:
        return self.state is WorkerState.UP


def split_address(address: str) -> tuple[str, int]:
    """("host", port) of "host:port"; raises ValueError for anything else."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{address!r} is not host:port")
    return host, int(port)


def hello_request() -> bytes:
    """The bytes of a HELLO command offering plain TCP."""
    return bytes([_HELLO]) + _SIZE.pack(_CAPS_SIZE) + bytes(_CAPS_SIZE)


def parse_hello_reply(data: bytes) -> tuple[int, int, int]:
    """(major, minor, patch) from a complete HELLO reply; ValueError if it is not one."""
    if len(data) < _SIZE.size:
        raise ValueError("short reply")
    (size,) = _SIZE.unpack_from(data)
    if size != _HELLO_REPLY_SIZE or len(data) < _SIZE.size + size:
        raise ValueError(f"a reply of {size} bytes is not a HELLO reply")
    major, minor, patch = data[_SIZE.size:_SIZE.size + 3]
    return major, minor, patch


async def probe_worker(address: str, within: float = PROBE_TIMEOUT_S, *,
                       handshake: bool = True) -> ProbeResult:
    """Connect to the worker and, with `handshake`, exchange HELLO; never raises.

    `within` bounds the whole probe (connection and answer), in seconds.

    Without `handshake` a connection is all that is asked for (a worker known to be in
    use by one of our own llama-servers answers nothing else anyway).
    """
    checked_at = time.time()
    try:
        host, port = split_address(address)
    except ValueError as exc:
        return ProbeResult(address, WorkerState.DOWN, str(exc), checked_at=checked_at)
    deadline = time.monotonic() + within
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), within)
    except TimeoutError:
        return ProbeResult(address, WorkerState.DOWN,
                           f"no connection within {within:g}s: the host is down, "
                           "unreachable or a firewall drops the port", checked_at=checked_at)
    except ConnectionRefusedError:
        return ProbeResult(address, WorkerState.DOWN,
                           f"connection refused: nothing listens on port {port} there",
                           checked_at=checked_at)
    except socket.gaierror as exc:
        return ProbeResult(address, WorkerState.DOWN,
                           f"cannot resolve host '{host}' ({exc.strerror or exc})",
                           checked_at=checked_at)
    except OSError as exc:
        return ProbeResult(address, WorkerState.DOWN,
                           f"cannot connect: {exc.strerror or exc}", checked_at=checked_at)
    try:
        if not handshake:
            return ProbeResult(address, WorkerState.BUSY, "accepts connections",
                               checked_at=checked_at)
        return await _hello(address, reader, writer, max(0.1, deadline - time.monotonic()),
                            checked_at)
    finally:
        # Always hang up: an RPC server serves no one else while this connection is open.
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)


async def _hello(address: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 within: float, checked_at: float) -> ProbeResult:
    try:
        writer.write(hello_request())
        await asyncio.wait_for(writer.drain(), within)
        data = await asyncio.wait_for(reader.read(_SIZE.size + _HELLO_REPLY_SIZE), within)
        while data and len(data) < _SIZE.size + _HELLO_REPLY_SIZE:
            more = await asyncio.wait_for(reader.read(_SIZE.size + _HELLO_REPLY_SIZE
                                                      - len(data)), within)
            if not more:
                break
            data += more
    except TimeoutError:
        return ProbeResult(address, WorkerState.BUSY,
                           f"it accepts connections but did not answer the RPC handshake "
                           f"within {within:g}s: it is serving another llama-server (an "
                           "RPC worker serves one at a time), or it is not an RPC worker",
                           checked_at=checked_at)
    except OSError as exc:
        data = b""
        if not isinstance(exc, ConnectionResetError):
            return ProbeResult(address, WorkerState.NOT_RPC,
                               f"the connection failed during the RPC handshake: "
                               f"{exc.strerror or exc}", checked_at=checked_at)
    if not data:
        return ProbeResult(address, WorkerState.NOT_RPC,
                           "it closed the connection without answering the RPC handshake: "
                           "not a llama.cpp RPC worker, or one of an older llama.cpp",
                           checked_at=checked_at)
    try:
        major, minor, patch = parse_hello_reply(data)
    except ValueError:
        return ProbeResult(address, WorkerState.NOT_RPC,
                           "it answered, but not as a llama.cpp RPC worker (another "
                           "program listens on that port)", checked_at=checked_at)
    version = f"{major}.{minor}.{patch}"
    if major != RPC_PROTOCOL_MAJOR:
        # Not refused here: a runtime other than the pinned one may speak that version.
        return ProbeResult(address, WorkerState.UP,
                           f"RPC protocol {version}; the llama.cpp this app builds speaks "
                           f"{RPC_PROTOCOL_MAJOR}.x, and llama-server refuses a worker of "
                           "another major version", version, checked_at)
    return ProbeResult(address, WorkerState.UP, f"RPC protocol {version}", version,
                       checked_at)
