"""`llamarunner worker`: llama.cpp's RPC server in the foreground, stopped cleanly on a signal.

A worker lends this machine's CPU or GPU to a llama-server on another machine (a model's
`rpc` list there). It is ggml-rpc-server itself, run as a child like every runner: in its
own process group, dying with us, its output passed through.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..runner.process import ManagedProcess
from ..runtime.rpc_server import RpcServerNotFoundError, find_rpc_server
from .probe import DEFAULT_RPC_PORT, WorkerState, probe_worker

DEFAULT_HOST = "127.0.0.1"
# How long a stopped worker may take to exit before its process group is killed.
STOP_GRACE_S = 5.0
# How long to wait for the first answer to a handshake before saying it is not answering
# (device discovery on a GPU machine can take a while).
READY_TIMEOUT_S = 60.0
READY_POLL_S = 0.1

# As the headless app's: 2 and 3 are not fixed by trying again (a service manager should
# not restart on them), 1 is a server that stopped by itself.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2  # options that cannot work, or no RPC server to run
EXIT_LISTEN = 3  # the address or port cannot be listened on

Printer = Callable[[str], None]


@dataclass(frozen=True)
class WorkerOptions:
    """The command's flags; None threads lets the RPC server pick (half the cores)."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_RPC_PORT
    threads: int | None = None
    cache: bool = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def check_options(options: WorkerOptions) -> str | None:
    """Why the options cannot work, or None."""
    try:
        ipaddress.IPv4Address(options.host)
    except ValueError:
        # ggml-rpc-server binds with inet_addr(): IPv4 literals only, no names, no IPv6.
        return (f"--host {options.host!r} is not an IPv4 address: the RPC server binds "
                "one IPv4 address (127.0.0.1, this machine's address on a private network, "
                "or 0.0.0.0 for all)")
    if not 1 <= options.port <= 65535:
        return f"--port {options.port} is not between 1 and 65535"
    if options.threads is not None and options.threads < 1:
        return f"--threads {options.threads} must be 1 or more"
    return None


def bind_problem(host: str, port: int) -> str | None:
    """Why the RPC server could not listen on host:port, or None.

    Asked first because the server itself only prints "Failed to create server socket"
    and exits 0, and because a worker already on that port would answer our readiness
    handshake in its place.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        if sys.platform != "win32":
            # As the RPC server binds (SO_REUSEADDR): a port in TIME_WAIT is free to it.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (f"port {port} on {host} is in use (another worker, or another "
                        "program): stop it or pick another --port")
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"{host} is not an address of this machine"
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(options: WorkerOptions) -> str:
    """What to say when the worker listens beyond this machine."""
    return (f"warning: the RPC worker listens on {options.address}, beyond this machine. "
            "llama.cpp's RPC servers have no authentication and no encryption: anyone who "
            "reaches this port can use this machine's memory and compute. Bind it to a "
            f"private network address only, never to the internet, and firewall port "
            f"{options.port} to the machines that run the models.")


def worker_argv(binary: Path, options: WorkerOptions) -> list[str]:
    """The RPC server's command line for the options (its flags: -H -p -t -c)."""
    argv = [str(binary), "-H", options.host, "-p", str(options.port)]
    if options.threads is not None:
        argv += ["-t", str(options.threads)]
    if options.cache:
        argv.append("-c")
    return argv


def run_worker_cli(options: WorkerOptions, *,
                   find: Callable[[], Path] = find_rpc_server) -> int:
    """Run the worker until SIGINT/SIGTERM; return the command's exit status."""
    problem = check_options(options)
    if problem is not None:
        print(f"llamarunner worker: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        binary = find()
    except RpcServerNotFoundError as exc:
        print(f"llamarunner worker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    problem = bind_problem(options.host, options.port)
    if problem is not None:
        print(f"llamarunner worker: {problem}", file=sys.stderr)
        return EXIT_LISTEN
    if not is_loopback(options.host):
        print(f"llamarunner worker: {exposure_warning(options)}", file=sys.stderr)
    try:
        return asyncio.run(serve(worker_argv(binary, options), options))
    except KeyboardInterrupt:  # Windows: Ctrl+C cancels serve(), which stopped the child
        return EXIT_OK


async def serve(argv: Sequence[str], options: WorkerOptions, *,
                say: Printer | None = None, stop: asyncio.Event | None = None) -> int:
    """Run the RPC server until `stop` is set (or SIGINT/SIGTERM arrives) or it exits.

    Returns 0 after a requested stop, 1 when the server exited on its own (it only ever
    does when it cannot start: a port in use, an address not of this machine).
    """
    say = say or _print
    stop = stop or asyncio.Event()
    process = ManagedProcess("rpc-worker", argv, on_lines=_echo)
    try:
        await process.spawn()
    except OSError as exc:
        say(f"llamarunner worker: cannot run {argv[0]}: {exc}")
        return EXIT_FAILED
    handled = _stop_on_signals(stop)
    exited = asyncio.ensure_future(process.wait())
    stopping = asyncio.ensure_future(stop.wait())
    ready = asyncio.ensure_future(_until_ready(options))
    try:
        done, _pending = await asyncio.wait({exited, stopping, ready},
                                            return_when=asyncio.FIRST_COMPLETED)
        if ready in done and exited not in done:
            if ready.result():
                say(f"llamarunner worker: {Path(argv[0]).name} (pid {process.pid}) is ready "
                    f"on {options.address}; stop it with Ctrl+C or SIGTERM")
            else:
                say(f"llamarunner worker: {options.address} does not answer the RPC "
                    f"handshake after {READY_TIMEOUT_S:g}s; still waiting")
            done, _pending = await asyncio.wait({exited, stopping},
                                                return_when=asyncio.FIRST_COMPLETED)
        if stopping in done:
            await process.stop(STOP_GRACE_S)
            say("llamarunner worker: stopped")
            return EXIT_OK
        code = exited.result()
        await process.stop(0)  # whatever of its process group is left
        say(f"llamarunner worker: {Path(argv[0]).name} exited with status {code} by itself"
            f"{_why(process.tail())}")
        return EXIT_FAILED
    finally:
        for task in (exited, stopping, ready):
            task.cancel()
        await asyncio.gather(exited, stopping, ready, return_exceptions=True)
        if process.returncode is None:
            # Cancelled (Ctrl+C on Windows) or failed: the child and its group go too.
            await process.stop(STOP_GRACE_S)
        _restore_signals(handled)


async def _until_ready(options: WorkerOptions) -> bool:
    """True once the server answers a handshake (or is already busy with a client)."""
    host = "127.0.0.1" if options.host == "0.0.0.0" else options.host
    address = f"{host}:{options.port}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT_S
    while loop.time() < deadline:
        result = await probe_worker(address, within=2.0)
        if result.state in (WorkerState.UP, WorkerState.BUSY):
            return True
        await asyncio.sleep(READY_POLL_S)
    return False


def _why(tail: list[str]) -> str:
    text = "\n".join(tail)
    if "Failed to create server socket" in text or "Invalid host address" in text:
        return (": it could not listen there (the port is in use, or the address is not "
                "one of this machine's)")
    return f"; its last output:\n{text}" if text else ""


def _stop_on_signals(stop: asyncio.Event) -> list[signal.Signals]:
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Windows has no add_signal_handler: Ctrl+C there cancels serve() instead.
        with contextlib.suppress(NotImplementedError, AttributeError, ValueError,
                                 RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    return handled


def _restore_signals(handled: list[signal.Signals]) -> None:
    loop = asyncio.get_running_loop()
    for sig in handled:
        with contextlib.suppress(NotImplementedError, ValueError, RuntimeError):
            loop.remove_signal_handler(sig)


def _echo(lines: list[str]) -> None:
    for line in lines:
        print(line, flush=True)


def _print(text: str) -> None:
    print(text, flush=True)
