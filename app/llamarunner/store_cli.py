"""`llamarunner pull` and `llamarunner rm`: through the running app, or on its store directly.

With the app up, the command is an Ollama API client of it (POST /api/pull, DELETE
/api/delete on the configured Ollama port, with the config's API key, as the doctor
finds them), so the app lists the model at once and a pull stops when the command is
interrupted, resumable. With no app answering there, the same engine runs here on the
same store; the app lists the model on its next scan (or its next start).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

import aiohttp

from .config import Config
from .core.errors import LlamaRunnerError
from .doctor.target import Endpoint, target_from_config
from .store.meter import TransferMeter, eta_seconds, format_duration
from .store.transfer import human_bytes

__all__ = ["ProgressPrinter", "bar_line", "plain_line", "pull_command", "rm_command"]

_BAR_WIDTH: Final = 24
# Without a terminal, a layer's progress is printed at each tenth of it.
_PLAIN_STEP: Final = 10
_CONNECT_TIMEOUT: Final = 5.0
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_INTERRUPTED: Final = 130


# --- progress (pure lines, and the printer that keeps one bar per layer) ----------------


def _percent(done: int, total: int) -> int:
    return min(100, done * 100 // total) if total > 0 else 0


def _speed_text(speed: float | None) -> str:
    return f"{human_bytes(speed)}/s" if speed is not None else "-/s"


def bar_line(label: str, done: int, total: int, speed: float | None,
             width: int = _BAR_WIDTH) -> str:
    """`pulling 3f2a1b2c4d5e  45% ▕███████         ▏ 12.0 MB/27.0 MB 3.1 MB/s 5s`."""
    filled = min(width, done * width // total) if total > 0 else 0
    bar = "█" * filled + " " * (width - filled)
    left = format_duration(eta_seconds(total, done, speed))
    return (f"{label} {_percent(done, total):3d}% ▕{bar}▏ {human_bytes(done)}/"
            f"{human_bytes(total)} {_speed_text(speed)} {left}")


def plain_line(label: str, done: int, total: int, speed: float | None) -> str:
    """`pulling 3f2a1b2c4d5e: 45% (12.0 MB of 27.0 MB, 3.1 MB/s, 5s left)`."""
    left = format_duration(eta_seconds(total, done, speed))
    return (f"{label}: {_percent(done, total)}% ({human_bytes(done)} of {human_bytes(total)}, "
            f"{_speed_text(speed)}, {left} left)")


@dataclass
class ProgressPrinter:
    """Prints Ollama's progress lines: a redrawn bar per layer on a terminal, else plain
    lines (each status once, a layer at every tenth)."""

    out: TextIO
    tty: bool
    clock: Callable[[], float] = time.monotonic
    _label: str | None = None  # the status shown last
    _open_bar: bool = False  # a bar is drawn and its line not ended yet
    _steps: dict[str, int] = field(default_factory=dict)
    _meters: dict[str, TransferMeter] = field(default_factory=dict)

    def update(self, status: str, digest: str | None = None, total: int = 0,
               completed: int = 0) -> None:
        if not (digest and total):
            if status != self._label:
                self._end_bar()
                self._write(status + "\n")
            self._label = status
            return
        now = self.clock()
        meter = self._meters.setdefault(digest, TransferMeter())
        meter.add(now, completed)
        speed = meter.speed(now)
        if self.tty:
            if status != self._label:
                self._end_bar()
            self._write("\r" + bar_line(status, completed, total, speed) + "\x1b[K")
            self._open_bar = True
        else:
            step = _percent(completed, total) // _PLAIN_STEP
            if self._steps.get(digest) != step:
                self._steps[digest] = step
                self._write(plain_line(status, completed, total, speed) + "\n")
        self._label = status

    def close(self) -> None:
        self._end_bar()

    def _end_bar(self) -> None:
        if self._open_bar:
            self._write("\n")
            self._open_bar = False

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


def _update(printer: ProgressPrinter, line: dict[str, Any]) -> None:
    status = line.get("status")
    if not isinstance(status, str):
        return
    total, completed = line.get("total"), line.get("completed")
    printer.update(status, line.get("digest") if isinstance(line.get("digest"), str) else None,
                   total if isinstance(total, int) else 0,
                   completed if isinstance(completed, int) else 0)


# --- talking to the app -----------------------------------------------------------------


class _NotRunning(Exception):
    """The app cannot be asked (nothing answers, or no Ollama port): work here instead."""


@dataclass(frozen=True)
class _App:
    endpoint: Endpoint
    api_key: str
    key_hint: str  # what to do when the app wants a key this process lacks


def _app(config: Config, config_path: str) -> _App:
    target = target_from_config(config, config_path)
    hint = (f"; set ${target.key_missing} (security.api_key_env) for this command"
            if target.key_missing else "")
    return _App(target.ollama, target.api_key, hint)


def _session() -> aiohttp.ClientSession:
    # Loopback: a user's HTTP_PROXY must not capture it. A pull takes as long as it takes.
    return aiohttp.ClientSession(trust_env=False, timeout=aiohttp.ClientTimeout(
        total=None, sock_connect=_CONNECT_TIMEOUT))


def _headers(app: _App) -> dict[str, str]:
    return {"Authorization": f"Bearer {app.api_key}"} if app.api_key else {}


def _error_of(body: bytes, status: int) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])
    return f"the app answered HTTP {status}: {body[:200].decode(errors='replace')}"


async def _request(session: aiohttp.ClientSession, app: _App, method: str, path: str,
                   body: dict[str, Any]) -> aiohttp.ClientResponse:
    if app.endpoint.url is None:
        raise _NotRunning(f"the app cannot be asked: {app.endpoint.problem} "
                          f"({app.endpoint.fix})")
    try:
        return await session.request(method, app.endpoint.url + path, json=body,
                                     headers=_headers(app))
    except aiohttp.ClientConnectorError as exc:
        raise _NotRunning(f"the app is not running (nothing answers on "
                          f"{app.endpoint.host_port})") from exc


async def _refused(resp: aiohttp.ClientResponse, app: _App, err: TextIO) -> int:
    """Say why the app refused (with the key hint on a 401); the failure exit status."""
    message = _error_of(await resp.read(), resp.status)
    hint = app.key_hint if resp.status == 401 else ""
    err.write(f"llamarunner: {message}{hint}\n")
    return EXIT_FAILED


async def _pull_via_app(app: _App, name: str, insecure: bool, printer: ProgressPrinter,
                        err: TextIO) -> int:
    async with _session() as session:
        resp = await _request(session, app, "POST", "/api/pull",
                              {"model": name, "insecure": insecure, "stream": True})
        async with resp:
            if resp.status != 200:
                return await _refused(resp, app, err)
            last = ""
            async for raw in resp.content:
                if not raw.strip():
                    continue
                line = json.loads(raw)
                if isinstance(line, dict) and isinstance(line.get("error"), str):
                    printer.close()
                    err.write(f"llamarunner: {line['error']}\n")
                    return EXIT_FAILED
                if isinstance(line, dict):
                    _update(printer, line)
                    last = str(line.get("status", ""))
    printer.close()
    if last != "success":
        err.write("llamarunner: the app ended the pull without finishing it; run the "
                  "same command again to resume\n")
        return EXIT_FAILED
    return EXIT_OK


async def _pull_here(name: str, insecure: bool, printer: ProgressPrinter, err: TextIO) -> int:
    from .store.model_store import ModelStore, default_store_root

    store = ModelStore(default_store_root())
    await store.start()
    try:
        job = store.pull(name, insecure=insecure, cancel_when_unwatched=False)
        async for event in job.events():
            printer.update(event.status, event.digest, event.total or 0, event.completed or 0)
    except LlamaRunnerError as exc:
        printer.close()
        err.write(f"llamarunner: {exc.message}\n")
        return EXIT_FAILED
    finally:
        await store.close()
    printer.close()
    return EXIT_OK


async def _pull(config: Config, config_path: str, name: str, insecure: bool, out: TextIO,
                err: TextIO) -> int:
    printer = ProgressPrinter(out, tty=out.isatty())
    app = _app(config, config_path)
    try:
        return await _pull_via_app(app, name, insecure, printer, err)
    except _NotRunning as reason:
        err.write(f"llamarunner: {reason}; pulling into its model store here, and the app "
                  "lists the model when it next looks\n")
    except (aiohttp.ClientError, ValueError) as exc:
        printer.close()
        err.write(f"llamarunner: the pull through the app at {app.endpoint.url} broke off "
                  f"({exc!r}); run the same command again to resume\n")
        return EXIT_FAILED
    return await _pull_here(name, insecure, printer, err)


async def _rm_via_app(app: _App, name: str, out: TextIO, err: TextIO) -> int:
    async with _session() as session:
        resp = await _request(session, app, "DELETE", "/api/delete", {"model": name})
        async with resp:
            if resp.status != 200:
                return await _refused(resp, app, err)
    out.write(f"deleted '{name}'\n")
    return EXIT_OK


async def _rm_here(config: Config, config_path: str, name: str, out: TextIO,
                   err: TextIO) -> int:
    from .config import ConfigStore
    from .service import Service

    # The app's own library and rules, without its listeners or runners.
    service = Service(ConfigStore(Path(config_path)))
    service.config = config
    await service.rescan()
    try:
        resolved = service.resolve_model(name)
        await service.delete_model(resolved)
    except LlamaRunnerError as exc:
        err.write(f"llamarunner: {exc.message}\n")
        return EXIT_FAILED
    except PermissionError as exc:
        err.write(f"llamarunner: model '{name}' was not deleted: {exc}\n")
        return EXIT_FAILED
    finally:
        await service.model_store.close()
    out.write(f"deleted '{name}'\n")
    return EXIT_OK


async def _rm(config: Config, config_path: str, name: str, out: TextIO, err: TextIO) -> int:
    app = _app(config, config_path)
    try:
        return await _rm_via_app(app, name, out, err)
    except _NotRunning as reason:
        err.write(f"llamarunner: {reason}; removing the model here\n")
    except aiohttp.ClientError as exc:
        err.write(f"llamarunner: the app at {app.endpoint.url} did not answer the delete "
                  f"({exc!r})\n")
        return EXIT_FAILED
    return await _rm_here(config, config_path, name, out, err)


def _run(work: Callable[[], Any], err: TextIO) -> int:
    try:
        result: int = asyncio.run(work())
    except KeyboardInterrupt:
        err.write("\nllamarunner: interrupted; a pull resumes where it stopped when run "
                  "again\n")
        return EXIT_INTERRUPTED
    return result


def pull_command(config: Config, config_path: str, name: str, *, insecure: bool = False,
                 out: TextIO | None = None, err: TextIO | None = None) -> int:
    """`llamarunner pull NAME`: 0 once the model is stored, 1 with the reason otherwise."""
    out, err = out or sys.stdout, err or sys.stderr
    return _run(lambda: _pull(config, config_path, name, insecure, out, err), err)


def rm_command(config: Config, config_path: str, name: str, *, out: TextIO | None = None,
               err: TextIO | None = None) -> int:
    """`llamarunner rm NAME`: 0 once it is gone, 1 with the API's reason otherwise."""
    out, err = out or sys.stdout, err or sys.stderr
    return _run(lambda: _rm(config, config_path, name, out, err), err)
