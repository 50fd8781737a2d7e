"""Prove a frozen LlamaRunner Pro works: run it on free ports with a tiny model and talk to it.

    python installer/selftest.py PATH_TO_EXECUTABLE [--model GGUF] [--gui auto|yes|no]

Checks, in order, and stops at the first failure with the reason and the app's log:

1. `--version` names the llama-server bundled inside this app and its recorded version.
2. `--headless` serves GET /api/version, a chat through each API (Ollama, OpenAI with
   streaming, LM Studio), runs that chat on the bundled llama-server (not one from PATH),
   and on a stop request exits cleanly with no child process left. A model without a
   chat template of its own chats with its family's template, read from the bundle.
3. The desktop mode does the same first chat, opens its library window when launched a
   second time, and stops: Qt, its plugins and the windows are all in the bundle (on
   Linux only when a display is available, unless --gui yes).

Everything the app writes goes to a temporary folder (HOME too, except on Windows, where
the desktop app reconciles its Run-key login entry with the config like any start of the
app); $LLAMARUNNER_LLAMA_SERVER is unset and the other apps' model stores are switched off,
so only the bundle itself is tested.
The tiny model comes from the checkout's tests/support/tiny_gguf.py (needs the `gguf` and
`numpy` packages from the dev extras) unless --model names a GGUF file. Exit status 0 means
every check passed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
MODEL = "tiny"
FAMILY_MODEL = "family"
IS_WINDOWS = sys.platform == "win32"
START_TIMEOUT = 90.0  # a cold first start unpacks nothing (one-folder) but warms the disk
REQUEST_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
LOG_TAIL_LINES = 40
# Loopback traffic must never go through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class SelfTestError(Exception):
    """A check failed; the message says which and what was seen."""


def step(message: str) -> None:
    print(f"selftest: {message}", flush=True)


# ---- the bundle -----------------------------------------------------------------------------


def bundle_root(exe: Path) -> Path:
    """The folder everything bundled lives under: the one-folder app, or a .app's Contents."""
    real = exe.resolve()
    if real.parent.name == "MacOS" and real.parent.parent.name == "Contents":
        return real.parent.parent
    return real.parent


def check_version(exe: Path, env: Mapping[str, str]) -> str:
    """`--version` must name the bundled llama-server and the version recorded beside it."""
    result = subprocess.run([str(exe), "--version"], env=dict(env), capture_output=True,
                            text=True, timeout=STOP_TIMEOUT, check=False)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or len(lines) < 2 or not lines[0].startswith("llamarunner "):
        raise SelfTestError(f"`{exe.name} --version` exited {result.returncode} with "
                            f"{result.stdout!r} {result.stderr!r}")
    runtime_line = lines[1]
    marker = " (bundled: "
    if not runtime_line.startswith("llama-server ") or marker not in runtime_line:
        raise SelfTestError(f"the app does not run its bundled llama-server: {runtime_line!r}")
    version, _, rest = runtime_line[len("llama-server "):].partition(marker)
    server = Path(rest.rstrip(")"))
    if not _inside(server, bundle_root(exe)):
        raise SelfTestError(f"the llama-server in use, {server}, is outside the bundle "
                            f"{bundle_root(exe)}")
    try:
        recorded = json.loads((server.parent / "runtime.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SelfTestError(f"no readable runtime.json beside {server}: {exc}") from exc
    if version != recorded.get("version"):
        raise SelfTestError(f"--version says llama-server {version!r}, but the bundle records "
                            f"{recorded.get('version')!r}")
    return f"{lines[0]}, llama-server {version}"


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


# ---- set-up -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_model(folder: Path) -> Path:
    """The tiny random-weight GGUF the test suite uses (about 0.5 MB, loads in milliseconds)."""
    sys.path.insert(0, str(ROOT))
    try:
        from tests.support.tiny_gguf import write_tiny_gguf
    except ImportError as exc:
        raise SelfTestError(
            f"cannot generate the tiny model ({exc}); install the dev extras "
            "(pip install -e '.[dev]') or pass --model PATH_TO_GGUF"
        ) from exc
    finally:
        sys.path.pop(0)
    path: Path = write_tiny_gguf(folder / f"{MODEL}.gguf", name=MODEL)
    return path


def make_family_model(folder: Path) -> Path | None:
    """A tiny model without a template of its own, whose name puts it in the ChatML family.

    None when the generator is not at hand (an installed app tested with --model only).
    """
    sys.path.insert(0, str(ROOT))
    try:
        from tests.support.tiny_gguf import write_tiny_gguf
    except ImportError:
        return None
    finally:
        sys.path.pop(0)
    path: Path = write_tiny_gguf(folder / f"{FAMILY_MODEL}.gguf", name="SmolLM2 family",
                                 chat_template=None)
    return path


def write_config(folder: Path, model: Path, family: Path | None) -> tuple[Path, int, int]:
    ollama, lmstudio = free_port(), free_port()
    while lmstudio == ollama:
        lmstudio = free_port()
    models: dict[str, Any] = {MODEL: {"path": str(model), "args": {"ctx-size": 512, "threads": 1}}}
    if family is not None:
        models[FAMILY_MODEL] = {"path": str(family), "args": {"ctx-size": 512, "threads": 1}}
    config = {
        "proxies": {
            "ollama": {"enabled": True, "host": "127.0.0.1", "port": ollama},
            "lmstudio": {"enabled": True, "host": "127.0.0.1", "port": lmstudio},
        },
        # The default runtime: the app must find its bundled llama-server by itself.
        "models": models,
        "model_dirs": [str(folder / "models")],
        "sources": {"ollama": {"enabled": False}, "lmstudio": {"enabled": False}},
        "scheduler": {"load_timeout": "60s", "stop_grace": "5s"},
    }
    (folder / "models").mkdir(exist_ok=True)
    path = folder / "config.json"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path, ollama, lmstudio


def app_environment(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "LLAMARUNNER_LLAMA_SERVER"}
    env.update({
        "LLAMARUNNER_DATA_DIR": str(folder / "data"),
        "LLAMARUNNER_LOG_DIR": str(folder / "logs"),
        "LLAMARUNNER_CACHE_DIR": str(folder / "cache"),
        "PYTHONUNBUFFERED": "1",
    })
    if not IS_WINDOWS:
        # The desktop app's window settings and its login entry (XDG autostart, macOS
        # LaunchAgent), which it reconciles with the config at start, stay in the temporary
        # folder rather than the user's own.
        (folder / "home").mkdir(exist_ok=True)
        env.update({"HOME": str(folder / "home"), "XDG_CONFIG_HOME": str(folder / "config")})
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                  "all_proxy"):
        env.pop(proxy, None)
    return env


# ---- HTTP -------------------------------------------------------------------------------------


def _request(url: str, body: Mapping[str, Any] | None = None,
             timeout: float = REQUEST_TIMEOUT) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise SelfTestError(f"{url} answered {exc.code}: {exc.read()[:500]!r}") from exc


def _stream(url: str, body: Mapping[str, Any]) -> list[Any]:
    """POST and read an OpenAI-style event stream; returns the decoded `data:` events."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    events: list[Any] = []
    try:
        with _OPENER.open(request, timeout=REQUEST_TIMEOUT) as response:
            for raw in response:
                line = raw.decode("utf-8").strip()
                if not line.startswith("data:"):
                    continue
                payload = line[len("data:"):].strip()
                if payload == "[DONE]":
                    return events
                events.append(json.loads(payload))
    except urllib.error.HTTPError as exc:
        raise SelfTestError(f"{url} answered {exc.code}: {exc.read()[:500]!r}") from exc
    raise SelfTestError(f"{url}: the stream ended without [DONE] after {len(events)} events")


def _expect(condition: bool, what: str, seen: Any) -> None:
    if not condition:
        raise SelfTestError(f"{what}; got {json.dumps(seen)[:500]}")


MESSAGES = [{"role": "user", "content": "hello"}]


def chat_ollama(port: int) -> None:
    reply = _request(f"http://127.0.0.1:{port}/api/chat", {
        "model": MODEL, "messages": MESSAGES, "stream": False,
        "options": {"num_predict": 8, "temperature": 0},
    })
    message = reply.get("message") if isinstance(reply, dict) else None
    _expect(isinstance(message, dict) and message.get("role") == "assistant"
            and isinstance(message.get("content"), str) and reply.get("done") is True,
            "Ollama /api/chat did not answer with a finished assistant message", reply)


def chat_with_family_template(port: int) -> None:
    """The family templates are data files: prove the bundle carries them."""
    shown = _request(f"http://127.0.0.1:{port}/api/show", {"model": FAMILY_MODEL})
    template = shown.get("template") if isinstance(shown, dict) else None
    _expect(isinstance(template, str) and "<|im_start|>" in template,
            "/api/show did not report the ChatML family template", shown)
    reply = _request(f"http://127.0.0.1:{port}/api/chat", {
        "model": FAMILY_MODEL, "messages": MESSAGES, "stream": False,
        "options": {"num_predict": 4, "temperature": 0},
    })
    _expect(isinstance(reply, dict) and reply.get("done") is True,
            "a chat with the family template did not finish", reply)


def chat_openai_stream(port: int) -> None:
    events = _stream(f"http://127.0.0.1:{port}/v1/chat/completions", {
        "model": MODEL, "messages": MESSAGES, "stream": True, "max_tokens": 8,
        "temperature": 0,
    })
    finished = [e for e in events if isinstance(e, dict) and e.get("choices")
                and e["choices"][0].get("finish_reason")]
    _expect(bool(finished), "OpenAI /v1/chat/completions (stream) never finished", events[-3:])


def chat_lmstudio(port: int) -> None:
    reply = _request(f"http://127.0.0.1:{port}/api/v0/chat/completions", {
        "model": MODEL, "messages": MESSAGES, "max_tokens": 8, "temperature": 0,
    })
    choices = reply.get("choices") if isinstance(reply, dict) else None
    first = choices[0] if isinstance(choices, list) and choices else {}
    _expect(isinstance(first, dict) and first.get("message", {}).get("role") == "assistant",
            "LM Studio /api/v0/chat/completions did not answer with an assistant message",
            reply)


# ---- one run of the app -----------------------------------------------------------------------


@dataclass
class AppRun:
    """The frozen app as a child process, its output file and the runners it started."""

    exe: Path
    args: list[str]
    env: dict[str, str]
    output: Path
    log_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    runners: list[psutil.Process] = field(default_factory=list)
    _output_file: IO[bytes] | None = None

    def start(self) -> None:
        self._output_file = self.output.open("wb")
        flags = 0
        if IS_WINDOWS:
            flags = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        self.proc = subprocess.Popen([str(self.exe), *self.args], env=self.env,
                                     stdout=self._output_file, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, creationflags=flags)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_until_serving(self, port: int) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        url = f"http://127.0.0.1:{port}/api/version"
        while True:
            if not self.alive():
                raise SelfTestError(f"the app exited with status {self.returncode()} "
                                    "before answering")
            try:
                reply = _request(url, timeout=2)
            except (urllib.error.URLError, OSError, SelfTestError) as exc:
                if time.monotonic() > deadline:
                    raise SelfTestError(f"no answer from {url} within {START_TIMEOUT:.0f} s: "
                                        f"{exc}") from exc
                time.sleep(0.2)
                continue
            _expect(isinstance(reply, dict) and isinstance(reply.get("version"), str),
                    "/api/version did not report a version", reply)
            return str(reply["version"])

    def check_runner_is_bundled(self) -> str:
        """The llama-server serving the chats must be the one inside the bundle."""
        assert self.proc is not None
        children = psutil.Process(self.proc.pid).children(recursive=True)
        self.runners = [c for c in children if _is_server(c)]
        if not self.runners:
            raise SelfTestError(f"no llama-server child after a chat; children: {children}")
        root = bundle_root(self.exe)
        for runner in self.runners:
            path = Path(runner.exe())
            if not _inside(path, root):
                raise SelfTestError(f"the chat ran on {path}, not on the bundled llama-server "
                                    f"under {root}")
        return str(Path(self.runners[0].exe()).relative_to(root.resolve()))

    def stop(self) -> None:
        """Ask the app to quit; it must exit cleanly and take every runner with it."""
        assert self.proc is not None
        descendants = psutil.Process(self.proc.pid).children(recursive=True)
        if IS_WINDOWS:
            # The windowed app has no console, so no console control event can reach it:
            # end it, and rely on the kill-on-close Job Object to end its runners.
            self.proc.terminate()
        else:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise SelfTestError(f"the app did not exit within {STOP_TIMEOUT:.0f} s "
                                "of being asked to stop") from exc
        if not IS_WINDOWS:
            if code != 0:
                raise SelfTestError(f"the app exited with status {code} after SIGTERM")
            if "stopped cleanly" not in self.log():
                raise SelfTestError("the app exited without logging 'stopped cleanly'")
        _, alive = psutil.wait_procs([*descendants, *self.runners], timeout=10)
        if alive:
            for orphan in alive:
                with contextlib.suppress(psutil.Error):
                    orphan.kill()
            raise SelfTestError(f"child processes outlived the app: {alive}")

    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def kill(self) -> None:
        if self.proc is None:
            return
        if self.alive():
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(self.proc.pid).children(recursive=True):
                    child.kill()
            self.proc.kill()
            self.proc.wait()
        if self._output_file is not None:
            self._output_file.close()
            self._output_file = None

    def log(self) -> str:
        log_file = self.log_dir / "llamarunner.log"
        try:
            return log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def tail(self) -> str:
        text = self.log() or _read(self.output)
        lines = text.splitlines()[-LOG_TAIL_LINES:]
        return "\n".join(f"    | {line}" for line in lines)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _is_server(proc: psutil.Process) -> bool:
    try:
        name: str = proc.name()
        return name.lower().startswith("llama-server")
    except psutil.Error:
        return False


@contextlib.contextmanager
def running(run: AppRun) -> Iterator[AppRun]:
    run.start()
    try:
        yield run
    except SelfTestError as exc:
        raise SelfTestError(f"{exc}\n  app log ({run.log_dir / 'llamarunner.log'}):\n"
                            f"{run.tail()}") from exc
    finally:
        run.kill()


# Log text that means the desktop app is broken even though it serves.
_DESKTOP_FAILURES = ("running headless", "is not part of this build", "Traceback")
WINDOW_SETTLE_S = 2.0


def open_window(run: AppRun) -> None:
    """A second launch hands over to the running app, which must open its library window.

    The windows are imported by name when first shown, so this is what proves that a
    frozen build carries them (and the Qt parts they need).
    """
    second = subprocess.run([str(run.exe), *run.args], env=run.env, capture_output=True,
                            text=True, timeout=STOP_TIMEOUT, check=False,
                            stdin=subprocess.DEVNULL)
    if second.returncode != 0:
        raise SelfTestError(f"a second launch exited {second.returncode} instead of handing "
                            f"over to the running app: {second.stdout}{second.stderr}")
    time.sleep(WINDOW_SETTLE_S)


def serve_and_stop(run: AppRun, ollama: int, lmstudio: int, *, every_api: bool,
                   desktop: bool = False, family: bool = False) -> None:
    with running(run):
        started = time.monotonic()
        version = run.wait_until_serving(ollama)
        step(f"  /api/version answered {version!r} after {time.monotonic() - started:.1f} s")
        chat_ollama(ollama)
        step("  chat through the Ollama API: ok")
        where = run.check_runner_is_bundled()
        step(f"  the chat ran on the bundled {where}")
        if family:
            chat_with_family_template(ollama)
            step("  chat with a family template from the bundle: ok")
        if every_api:
            chat_openai_stream(lmstudio)
            step("  streamed chat through the OpenAI API: ok")
            chat_lmstudio(lmstudio)
            step("  chat through the LM Studio API: ok")
        if desktop:
            open_window(run)
            log = run.log()
            if "llamarunner.gui" not in log:
                raise SelfTestError("the app did not start as the desktop app")
            broken = [text for text in _DESKTOP_FAILURES if text in log]
            if broken:
                raise SelfTestError(f"the desktop app logged {broken[0]!r}")
            step("  the desktop app (Qt) runs and opened its window on a second launch")
        run.stop()
        step("  stopped cleanly; no child process left" if not IS_WINDOWS
             else "  ended; no child process left")


def gui_wanted(choice: str) -> bool:
    if choice != "auto":
        return choice == "yes"
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def selftest(exe: Path, model: Path | None, gui: str) -> None:
    exe = exe.absolute()
    if not exe.is_file():
        raise SelfTestError(f"{exe} does not exist")
    with tempfile.TemporaryDirectory(prefix="llamarunner-selftest-") as tmp:
        folder = Path(tmp)
        env = app_environment(folder)
        step(f"testing {exe} (bundle {bundle_root(exe)})")
        step(f"--version: {check_version(exe, env)}")
        model = model or make_model(folder)
        family = make_family_model(folder)
        config, ollama, lmstudio = write_config(folder, model, family)
        step(f"headless on ports {ollama} (Ollama) and {lmstudio} (OpenAI/LM Studio)")
        serve_and_stop(AppRun(exe, ["--headless", "--config", str(config)], env,
                              folder / "headless.out", folder / "logs"),
                       ollama, lmstudio, every_api=True, family=family is not None)
        if not gui_wanted(gui):
            step("desktop mode skipped: no display (set DISPLAY or pass --gui yes)")
            return
        step("desktop mode")
        gui_logs = folder / "gui-logs"
        gui_env = {**env, "LLAMARUNNER_LOG_DIR": str(gui_logs)}
        run = AppRun(exe, ["--config", str(config)], gui_env, folder / "gui.out", gui_logs)
        serve_and_stop(run, ollama, lmstudio, every_api=False, desktop=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selftest.py", description="Self-test a frozen LlamaRunner Pro build.")
    parser.add_argument("executable", type=Path,
                        help="the bundle's llamarunner (llamarunner.exe) or a link to it")
    parser.add_argument("--model", type=Path, default=None, metavar="GGUF",
                        help="model to serve (default: generate the tiny test model)")
    parser.add_argument("--gui", choices=("auto", "yes", "no"), default="auto",
                        help="also test the desktop mode (auto: when a display is there)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    try:
        selftest(args.executable, args.model, args.gui)
    except SelfTestError as exc:
        print(f"selftest FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    except (OSError, subprocess.SubprocessError, psutil.Error) as exc:
        print(f"selftest FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    step(f"passed in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
