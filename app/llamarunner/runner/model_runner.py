"""One model's child (llama-server or the speech worker): start it healthy, watch it, stop it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import aiohttp
import psutil

from ..audio.launch import WORKER_KEY_ENV, worker_command
from ..config.schema import ArgValue, ModelConfig, args_to_argv
from ..core.errors import RunnerFailedError
from ..core.events import EventBus, RunnerLogLine, RunnerStateChanged
from .process import ManagedProcess
from .registry import ChildRegistry
from .state import RunnerState, check_transition

log = logging.getLogger(__name__)

# /health is asked at once, again whenever llama-server prints a line (it prints "model
# loaded" as it becomes ready, so that answer is the 200), and otherwise on a timer that
# starts at HEALTH_POLL_INTERVAL and doubles up to HEALTH_POLL_MAX: a tiny model is ready
# in ~20 ms, a large one loads silently for seconds and needs no hundreds of polls.
HEALTH_POLL_INTERVAL = 0.005
HEALTH_POLL_MAX = 0.05
# Once a runner is up, its output is read at most this often (ManagedProcess
# .coalesce_output): log lines reach the logs window within this, at a small fraction of
# the CPU that reading each per-request line as it comes would take.
OUTPUT_COALESCE_S = 0.05
# Flags the runner owns; config validation already rejects them in `args`.
RUNNER_HOST = "127.0.0.1"
# llama-server's message when its port is taken (server.cpp: "couldn't bind HTTP server
# socket"); the OS's own wording shows up too.
_BIND_FAILURE = re.compile(r"couldn't bind|address already in use", re.IGNORECASE)
# llama-server's environment variable for --api-key (common/arg.cpp). The environment, not
# argv: every local user can read a process's command line, but not its environment.
API_KEY_ENV = "LLAMA_API_KEY"
# How a child killed by the CPU looks (negative signal numbers, as asyncio reports them).
_CRASH_EXIT_CODES = frozenset({-signal.SIGSEGV, -signal.SIGILL, -signal.SIGBUS})
# llama-server binaries that crashed while loading with weight repacking on. Repacking
# moves weights into CPU-specific layouts (AMX tiles on recent Xeons); some virtual
# machines advertise AMX yet fault on its first use, so such a binary gets --no-repack
# for the rest of this run. Keyed by binary: one process-wide fact about this machine.
_NO_REPACK_BINARIES: set[str] = set()
_REPACK_FLAGS = ("repack", "no-repack", "nr")


class PortConflictError(Exception):
    """The chosen port belongs to another program; a new port is worth one more try."""


def pick_free_port(host: str = RUNNER_HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _listens_on(pid: int, port: int) -> bool | None:
    """Whether `pid` (or a process it forked) listens on `port`; None when we cannot see."""
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return None
    # The child itself first: llama-server binds its own port, and listing a process's
    # descendants means reading every process on the machine. IPv4 only: RUNNER_HOST is.
    owner = _process_listens_on(root, port)
    if owner is not False:
        return owner
    try:
        children = root.children(recursive=True)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return None
    for child in children:
        owner = _process_listens_on(child, port)
        if owner is not False:
            return owner
    return False


def _process_listens_on(proc: psutil.Process, port: int) -> bool | None:
    try:
        conns = proc.net_connections(kind="tcp4")
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return None
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
               for c in conns)


def effective_args(
    model: ModelConfig, overrides: Mapping[str, ArgValue] | None
) -> dict[str, ArgValue]:
    """The model's configured args with per-load overrides (Ollama's num_ctx…) on top."""
    args = dict(model.args)
    if overrides:
        args.update(overrides)
    return args


def build_command(
    binary: Path, model: ModelConfig, port: int,
    overrides: Mapping[str, ArgValue] | None = None, *, no_repack: bool = False,
) -> list[str]:
    """The full argv for a model: runner-owned flags first, then the user's.

    `binary` is llama-server, or for an audio model the Python that runs the speech worker.
    """
    args = effective_args(model, overrides)
    if model.is_audio:
        return worker_command(binary, model.path, model.name, RUNNER_HOST, port, args)
    if no_repack and not any(flag in args for flag in _REPACK_FLAGS):
        args["no-repack"] = True
    argv = [str(binary), "--host", RUNNER_HOST, "--port", str(port), "-m", model.path]
    if "alias" not in args and "a" not in args:
        # So llama-server's own /v1/models and responses name the model as clients asked.
        argv += ["--alias", model.name]
    if model.rpc:
        # llama.cpp's RPC backend: the workers hold part of the layers (see rpc/).
        argv += ["--rpc", ",".join(model.rpc)]
    argv += args_to_argv(args)
    return argv


def safe_file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:100] or "model"


class ModelRunner:
    """State, process and counters of one model. Only the RunnerManager mutates it."""

    def __init__(
        self,
        model: ModelConfig,
        *,
        events: EventBus,
        http: aiohttp.ClientSession,
        log_dir: Path | None,
        on_unexpected_exit: Callable[[ModelRunner], None],
        registry: ChildRegistry | None = None,
    ) -> None:
        self.model = model
        self.state = RunnerState.STOPPED
        self.port: int | None = None
        self.process: ManagedProcess | None = None
        # The key the running llama-server demands on every route but /health: without it
        # any local user, or a web page that guesses the port, could use the model while
        # bypassing the listeners' Host, Origin and API-key checks. New for every start.
        self._secret = ""
        # Built once per start, not per request: every proxied request reads both.
        self._auth_headers: Mapping[str, str] = {"Authorization": "Bearer "}
        self._base_url = ""
        self.inflight = 0
        self.last_used = 0.0
        self.draining = False
        self.loaded_at: float | None = None
        self.last_error: RunnerFailedError | None = None
        # Load-time settings a client asked for (Ollama's num_ctx, num_gpu…): the ones the
        # running process has, and the ones the next start must use.
        self.active_overrides: dict[str, ArgValue] = {}
        self.next_overrides: dict[str, ArgValue] = {}
        # A client's keep_alive replaces the configured TTL until the next request.
        self.keep_alive: float | None = None
        self._events = events
        self._http = http
        self._log_dir = log_dir
        self._on_unexpected_exit = on_unexpected_exit
        self._registry = registry
        self._watch_task: asyncio.Task[None] | None = None
        self.start_task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def program(self) -> str:
        """What runs the model, for messages: llama-server or the speech worker."""
        return "the speech worker" if self.model.is_audio else "llama-server"

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def auth_headers(self) -> Mapping[str, str]:
        """What every request to this runner's llama-server must carry (read-only)."""
        return self._auth_headers

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def set_state(self, target: RunnerState, reason: str | None = None) -> None:
        check_transition(self.name, self.state, target)
        self.state = target
        log.info("runner %s: %s%s", self.name, target.value, f" ({reason})" if reason else "")
        self._events.publish(RunnerStateChanged(self.name, target.value, reason))

    def _publish_lines(self, lines: list[str]) -> None:
        # llama-server logs ~8 lines per request: the name and bus are looked up once.
        name, publish = self.name, self._events.publish
        for line in lines:
            publish(RunnerLogLine(name, line))

    def tail(self, lines: int = 20) -> list[str]:
        return self.process.tail(lines) if self.process else []

    async def start(self, binary: Path, load_timeout: float) -> None:
        """Spawn llama-server and return once /health says 200; raise RunnerFailedError.

        The caller has already moved the state to STARTING. A port another program took
        between picking and binding costs one retry on a fresh port.
        """
        try:
            await self._start_with_repack_fallback(binary, load_timeout)
        except PortConflictError as exc:
            log.warning("runner %s: %s; retrying on another port", self.name, exc)
            try:
                await self._start_once(binary, load_timeout)
            except PortConflictError as again:
                raise RunnerFailedError(
                    self.name, f"{again}; close the program using it or retry",
                    tail=self.tail(),
                ) from again

    async def _start_with_repack_fallback(self, binary: Path, load_timeout: float) -> None:
        """Start; after a CPU fault while loading, try once more without weight repacking."""
        try:
            await self._start_once(binary, load_timeout)
        except RunnerFailedError as exc:
            user_chose = any(flag in effective_args(self.model, self.next_overrides)
                             for flag in _REPACK_FLAGS)
            if (exc.exit_code not in _CRASH_EXIT_CODES or user_chose or self.model.is_audio
                    or str(binary) in _NO_REPACK_BINARIES):
                raise
            log.warning("runner %s: llama-server crashed while loading (exit code %s); "
                        "retrying without weight repacking (--no-repack)",
                        self.name, exc.exit_code)
            _NO_REPACK_BINARIES.add(str(binary))
            await self._start_once(binary, load_timeout)

    async def _start_once(self, binary: Path, load_timeout: float) -> None:
        self.port = pick_free_port()
        self._base_url = f"http://{RUNNER_HOST}:{self.port}"
        self._secret = secrets.token_urlsafe(32)
        self._auth_headers = MappingProxyType({"Authorization": f"Bearer {self._secret}"})
        self.active_overrides = dict(self.next_overrides)
        argv = build_command(binary, self.model, self.port, self.active_overrides,
                             no_repack=str(binary) in _NO_REPACK_BINARIES)
        log_path = (
            self._log_dir / f"{safe_file_name(self.name)}.log" if self._log_dir else None
        )
        self.process = ManagedProcess(
            self.name,
            argv,
            log_path=log_path,
            on_lines=self._publish_lines,
            env={**os.environ,
                 WORKER_KEY_ENV if self.model.is_audio else API_KEY_ENV: self._secret},
            registry=self._registry,
        )
        log.debug("starting %s: %s", self.name, " ".join(argv))
        try:
            await self.process.spawn()
        except OSError as exc:
            raise RunnerFailedError(self.name, f"cannot execute {binary}: {exc}") from exc
        exit_waiter = asyncio.get_running_loop().create_task(
            self.process.wait(), name=f"exit:{self.name}"
        )
        try:
            await self._wait_healthy(exit_waiter, load_timeout)
            await self._verify_identity(exit_waiter)
        except BaseException:
            exit_waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await exit_waiter
            raise
        if self._registry is not None and self.process.pid is not None:
            # Again now that it is up: a wrapper script that exec()s the real binary has
            # a new command line by now, and stale-child matching compares command lines.
            # Soon, not now: the requests waiting for this start go first.
            asyncio.get_running_loop().call_soon(self._registry.record, self.process.pid)
        self.process.coalesce_output(OUTPUT_COALESCE_S)
        self.loaded_at = time.time()
        self._watch_task = asyncio.get_running_loop().create_task(
            self._watch_exit(exit_waiter), name=f"watch:{self.name}"
        )

    async def _wait_healthy(self, exit_waiter: asyncio.Task[int], load_timeout: float) -> None:
        assert self.process is not None
        url = f"{self.base_url}/health"
        last_status: int | None = None
        last_progress = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=2)
        output = self.process.output_arrived
        interval = HEALTH_POLL_INTERVAL
        while True:
            output.clear()  # before asking: a line printed meanwhile means "ask again"
            status: int | None
            try:
                async with self._http.get(url, timeout=timeout,
                                          headers=self.auth_headers) as resp:
                    status = resp.status
                    await resp.read()
            except (aiohttp.ClientError, TimeoutError):
                status = None
            if status == 200:
                return
            now = time.monotonic()
            if status != last_status:
                last_status = status
                last_progress = now
            # A slow load that keeps logging is making progress; only silence is fatal.
            quiet_for = now - max(last_progress, self.process.last_output_at)
            if quiet_for > load_timeout:
                await self.process.stop(grace=0)
                raise RunnerFailedError(
                    self.name,
                    f"no progress while loading for {load_timeout:g}s "
                    f"(scheduler.load_timeout){self._rpc_note()}",
                    tail=self.process.tail(),
                )
            printed = asyncio.ensure_future(output.wait())
            try:
                done, _ = await asyncio.wait({exit_waiter, printed}, timeout=interval,
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                printed.cancel()
            if exit_waiter in done:
                code = exit_waiter.result()
                tail = self.process.tail()
                if any(_BIND_FAILURE.search(line) for line in tail):
                    await self.process.stop(grace=0)
                    raise PortConflictError(f"port {self.port} is in use by another program")
                raise RunnerFailedError(
                    self.name, f"{self.program} exited while loading{self._rpc_note()}",
                    exit_code=code, tail=tail,
                )
            if printed not in done:
                interval = min(interval * 2, HEALTH_POLL_MAX)

    def _rpc_note(self) -> str:
        """For a model split over RPC workers: they are the usual suspects.

        llama-server aborts when a worker refuses it, stops answering or goes away
        ("Remote RPC server crashed or returned malformed response" in its log).
        """
        if not self.model.rpc:
            return ""
        return (f" (it is split over the RPC workers {', '.join(self.model.rpc)}: check that "
                "each still runs `llamarunner worker`, and the model's log)")

    async def _verify_identity(self, exit_waiter: asyncio.Task[int]) -> None:
        """Make sure the server that said healthy is our child, not a stranger on the port.

        A program that grabbed the port first answers /health while our child fails to
        bind; routing requests there would serve another program's model (or worse).
        """
        assert self.process is not None and self.process.pid is not None and self.port
        owner = await asyncio.to_thread(_listens_on, self.process.pid, self.port)
        if owner is None:
            # Sockets of our own child are not visible (macOS without root): a foreign
            # server will not name itself with our --alias.
            owner = await self._serves_our_alias()
        if owner and not exit_waiter.done():
            return
        await self.process.stop(grace=0)
        raise PortConflictError(f"port {self.port} is in use by another program")

    async def _serves_our_alias(self) -> bool:
        args = self.effective_args()
        alias = args.get("alias", args.get("a", self.model.name))
        try:
            async with self._http.get(
                f"{self.base_url}/v1/models", timeout=aiohttp.ClientTimeout(total=5),
                headers=self.auth_headers,
            ) as resp:
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return False
        entries = data.get("data") if isinstance(data, dict) else None
        return any(isinstance(e, dict) and e.get("id") == alias for e in entries or [])

    async def _watch_exit(self, exit_waiter: asyncio.Task[int]) -> None:
        code = await exit_waiter
        if self.state is RunnerState.READY:
            assert self.process is not None
            self.last_error = RunnerFailedError(
                self.name, f"{self.program} exited unexpectedly{self._rpc_note()}",
                exit_code=code, tail=self.process.tail(),
            )
            # Reap the rest of the tree (a grandchild may survive its parent).
            await self.process.stop(grace=0)
            self.set_state(RunnerState.FAILED, f"exited with code {code}")
            self._on_unexpected_exit(self)

    async def stop(self, grace: float) -> None:
        """Stop the process tree; the caller moves the state to STOPPING first."""
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
            self._watch_task = None
        if self.process is not None:
            await self.process.stop(grace)
        self.loaded_at = None

    def describe_argv(self) -> Sequence[str]:
        return self.process.argv if self.process else []

    def effective_args(self) -> dict[str, ArgValue]:
        return effective_args(self.model, self.active_overrides)
