"""Take the docs' window screenshots from a real Service with a tiny model, offscreen.

Usage: python scripts/screenshots.py [--out docs/images] [--meters-seconds 62]
                                     [--only library settings logs meters chat get-model]

Starts the Service on a qasync loop with a generated tiny model (and the demo model, SmolLM2,
when it is in the app's models folder or the demo cache), loads the models through the
library window so runner logs flow, sends a few chats (and, for the meters, about a minute
of bursts of generation), then saves library.png, settings.png, logs.png and meters.png, and
chat.png: the library's "Try it" panel with the demo model's answer to a question, and
get-model.png: the "Get model" dialog next to the library's Downloads tab, downloading from a
loopback stand-in of the Hugging Face hub (tests/support/registry_standin.py). The user's
config, caches, window geometry and model stores are never touched: everything lives
in a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import qasync
from PySide6.QtCore import QPoint, QSettings, QSize, Qt
from PySide6.QtGui import QPainter, QPixmap
from PySide6.QtWidgets import QApplication, QWidget

from llamarunner import paths
from llamarunner.config import ConfigStore
from llamarunner.demo import DEMO_MODEL_NAME, DEMO_MODELS, demo_cache_dir
from llamarunner.runtime.resolver import resolve_runtime
from llamarunner.service import Service

ROOT = Path(__file__).resolve().parents[1]
TINY = "tiny-chat"
PICTURES = ("library", "settings", "logs", "meters", "chat", "get-model")
# Two questions, so the picture shows a conversation (answers chosen by SmolLM2 at temperature 0).
CHAT_QUESTIONS = ("Name three colors.", "What color is the sky?")
T = TypeVar("T")


def free_port(preferred: int) -> int:
    """The preferred port when nothing listens there (nicer in a picture), else any."""
    for port in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise RuntimeError("no free port")


def write_config(folder: Path, runtime: Path, tiny: Path, demo: Path | None) -> Path:
    data: dict[str, Any] = {
        "proxies": {
            "ollama": {"enabled": True, "host": "127.0.0.1", "port": free_port(11434)},
            "lmstudio": {"enabled": True, "host": "127.0.0.1", "port": free_port(1234)},
        },
        "runtimes": {"default": {"path": str(runtime)}},
        "models": {TINY: {"path": str(tiny), "args": {"ctx-size": 2048, "threads": 2},
                          "ttl": "10m"}},
        # The demo model is listed the way a user's own folder would be ("folder" source).
        "model_dirs": [str(demo.parent)] if demo else [str(folder / "no-models-here")],
        "scheduler": {"max_loaded_models": 2, "load_timeout": "60s", "stop_grace": "2s"},
        # Never list the real Ollama / LM Studio stores of the machine taking the pictures.
        "sources": {"ollama": {"enabled": False}, "lmstudio": {"enabled": False}},
    }
    path = folder / "config.json"
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


class Pump:
    """Runs the qasync loop (and with it Qt) for a while or until something is true.

    Uses run_forever, not run_until_complete: qasync's run_until_complete dispatches Qt
    events once more after the loop has stopped, with no running loop set, and a task step
    that lands there fails with "no running event loop".
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        task = self.loop.create_task(coro)
        task.add_done_callback(lambda _task: self.loop.stop())
        self.loop.run_forever()
        return task.result()

    def sleep(self, seconds: float) -> None:
        self.run(asyncio.sleep(seconds))

    def until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            self.sleep(0.05)

    def call(self, action: Callable[[], object]) -> None:
        """Run a slot inside the running loop, as a click in the real app would."""

        async def inside() -> None:
            action()

        self.run(inside())


def save(widget: QWidget, size: QSize, out: Path, name: str, pump: Pump) -> None:
    widget.resize(size)
    widget.show()
    pump.sleep(0.3)  # layouts, fonts and the first paint settle
    target = out / f"{name}.png"
    if not widget.grab().save(str(target)):
        raise RuntimeError(f"could not write {target}")
    print(f"wrote {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")


async def chat(service: Service, model: str, prompt: str, tokens: int = 24) -> None:
    """One real request through the LM Studio/OpenAI listener, so the runner log shows it."""
    port = service.listeners.bound_port("lmstudio")
    body = {"model": model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": tokens}
    async with service.http.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                                 json=body) as response:
        await response.read()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--meters-seconds", type=float, default=62.0,
                        help="how long the meters record before their picture (default 62)")
    parser.add_argument("--only", nargs="+", choices=PICTURES, default=list(PICTURES),
                        metavar="PICTURE",
                        help=f"take only these pictures ({', '.join(PICTURES)})")
    args = parser.parse_args()
    wanted = set(args.only)
    meters_seconds = args.meters_seconds if "meters" in wanted else 0.0
    # No screen needed, and the same pictures on every machine.
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    # Found before the environment is redirected to the temporary folder below.
    runtime = resolve_runtime("llama-server")
    demo_name = DEMO_MODELS[DEMO_MODEL_NAME].file_name
    candidates = (paths.models_dir() / demo_name, demo_cache_dir() / demo_name)
    demo_found = next((path for path in candidates if path.is_file()), None)
    if demo_found is None:
        print(f"demo model not found at {candidates[0]} or {candidates[1]}: only the tiny "
              "model is shown (install it with `llamarunner demo`)")
        if "chat" in wanted:
            print("skipping chat.png: it shows the demo model's answer")
            wanted.discard("chat")

    with tempfile.TemporaryDirectory(prefix="llamarunner-shots-") as tmp_name:
        tmp = Path(tmp_name)
        for variable, sub in (("LLAMARUNNER_DATA_DIR", "data"), ("LLAMARUNNER_LOG_DIR", "logs"),
                              ("LLAMARUNNER_CACHE_DIR", "cache"), ("OLLAMA_MODELS", "ollama")):
            os.environ[variable] = str(tmp / sub)
        sys.path.insert(0, str(ROOT))  # the tiny model writer lives with the tests
        from tests.support.tiny_gguf import write_tiny_gguf

        (tmp / "models").mkdir()
        tiny = write_tiny_gguf(tmp / "models" / "tiny-chat.gguf", name=TINY)
        demo = None
        if demo_found is not None:
            # A folder of its own, so the folder source lists the demo model and nothing else.
            demo = tmp / "demo-models" / demo_name
            demo.parent.mkdir()
            # A hard link or a copy: folder scans do not follow links that leave the folder.
            try:
                os.link(demo_found, demo)
            except OSError:
                shutil.copyfile(demo_found, demo)
        config_path = write_config(tmp, runtime, tiny, demo)
        return take(out, tmp, config_path, demo is not None, meters_seconds, wanted)


def take(out: Path, tmp: Path, config_path: Path, with_demo: bool, meters_seconds: float,
         wanted: set[str]) -> int:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    for scope_format in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
        QSettings.setPath(scope_format, QSettings.Scope.UserScope, str(tmp / "qsettings"))
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    pump = Pump(loop)

    from llamarunner.gui.bridge import ServiceBridge
    from llamarunner.gui.windows.library import LibraryWindow
    from llamarunner.gui.windows.logs import LogsWindow
    from llamarunner.gui.windows.settings import SettingsWindow

    service = Service(ConfigStore(config_path), runner_log_dir=tmp / "runners")
    errors = pump.run(service.start())
    if errors:
        print(f"listener problems: {errors}")
    bridge = ServiceBridge(service)
    windows: list[QWidget] = []
    meters = Meters.start(service, meters_seconds) if "meters" in wanted else None
    try:
        library = LibraryWindow(service, bridge)
        settings = SettingsWindow(service, bridge)
        logs = LogsWindow(service, bridge)
        windows += [library, settings, logs]

        # Load through the window, like a click on Load would.
        names = [TINY, *([DEMO_MODEL_NAME] if with_demo else [])]
        for name in names:
            library.select(name)
            pump.call(library.load_selected)
        pump.until(lambda: all(library.state_text(n) == "ready" for n in names), 90,
                   "the models to load")
        # Real requests: the runner logs show them, the meters show their CPU use.
        pump.run(workload(service, names, meters_seconds if meters else 0))

        library.select(TINY)
        if "library" in wanted:
            save(library, QSize(1180, 720), out, "library", pump)
        if "settings" in wanted:
            save(settings, QSize(860, 450), out, "settings", pump)
        if "logs" in wanted:
            logs.show_runner(TINY)
            save(logs, QSize(1180, 640), out, "logs", pump)
        if meters is not None:
            window = meters.window()
            windows.append(window)
            save(window, QSize(900, 720), out, "meters", pump)
        if "chat" in wanted:
            save_chat(library, out, pump)
        if "get-model" in wanted:
            save_get_model(service, library, out, pump)
    finally:
        for window in windows:
            window.hide()
        if meters is not None:
            meters.task.cancel()
        pump.run(service.stop())
        bridge.close()
        with contextlib.suppress(RuntimeError):
            loop.close()
        asyncio.set_event_loop(None)
    return 0


def save_chat(library: Any, out: Path, pump: Pump) -> None:
    """The "Try it" panel after the demo model answered a question, streamed as in the app."""
    library.resize(QSize(1000, 760))
    library.show()
    library.select(DEMO_MODEL_NAME)
    library.tabs.setCurrentWidget(library.chat)
    library.splitter.setSizes([230, 530])
    panel = library.chat
    outcomes: list[str] = []
    panel.finished.connect(outcomes.append)
    panel.temperature_spin.setValue(0.0)
    panel.max_tokens_spin.setValue(256)
    for count, question in enumerate(CHAT_QUESTIONS, 1):
        panel.input.setPlainText(question)
        pump.call(panel.send)
        pump.until(lambda n=count: len(outcomes) >= n, 120, "the demo model's answer")
        turn = panel.turns[-1]
        if outcomes[-1] != "done":
            raise RuntimeError(f"the chat for chat.png failed: {turn.error or outcomes[-1]}")
    pump.sleep(0.3)  # layouts, fonts and the first paint settle
    target = out / "chat.png"
    if not panel.grab().save(str(target)):
        raise RuntimeError(f"could not write {target}")
    print(f"wrote {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}: "
          f"{[t.answer for t in panel.turns]!r}")


def save_get_model(service: Service, library: Any, out: Path, pump: Pump) -> None:
    """The "Get model" dialog listing a repository's quants, beside the Downloads tab with one
    download done and one under way, from a loopback stand-in of the Hugging Face hub."""
    from tests.support.registry_standin import StandIn
    from tests.support.tiny_gguf import write_tiny_gguf

    hub = pump.run(StandIn().start())
    os.environ["HF_ENDPOINT"] = hub.base_url
    try:
        folder = Path(tempfile.mkdtemp(prefix="hub-", dir=os.environ["LLAMARUNNER_DATA_DIR"]))
        small = write_tiny_gguf(folder / "tiny.gguf", name="tiny-q8").read_bytes()
        # Sizes for the picker only; the slow download is never finished.
        hub.add_hub_repo("example/Tiny-Chat-GGUF", {
            "Tiny-Chat-Q8_0.gguf": small,
            "Tiny-Chat-Q4_K_M.gguf": bytes(48 << 20),
            "Tiny-Chat-Q6_K.gguf": bytes(61 << 20),
            "Tiny-Chat-F16.gguf": bytes(160 << 20),
            "README.md": b"# Tiny Chat\n",
        })
        library.resize(QSize(980, 640))
        library.show()
        library.splitter.setSizes([250, 390])
        dialog = library.open_get_model()
        dialog.name_edit.setText("hf.co/example/Tiny-Chat-GGUF:Q8_0")
        pump.call(dialog.look_up)
        pump.until(lambda: dialog.quant_combo.count() > 0, 30, "the quant list")
        pump.call(dialog.download)
        panel = library.downloads

        def state(name: str) -> str:
            row = panel.row(name)
            return "" if row is None else str(row.state)

        def completed(name: str) -> int:
            row = panel.row(name)
            return 0 if row is None or row.job is None else int(row.job.completed)

        pump.until(lambda: state("hf.co/example/Tiny-Chat-GGUF:Q8_0") == "done", 60,
                   "the small download")
        hub.faults.delay = 0.01  # per 64 KB: about 6 MB/s, so the row shows speed and ETA
        dialog = library.open_get_model()
        dialog.name_edit.setText("hf.co/example/Tiny-Chat-GGUF")
        pump.call(dialog.look_up)
        pump.until(lambda: dialog.quant_combo.count() > 0, 30, "the quant list")
        pump.call(dialog.download)
        pump.until(lambda: completed("hf.co/example/Tiny-Chat-GGUF") > (14 << 20), 60,
                   "the large download to be under way")
        pump.sleep(0.6)  # a few ticks, so the speed settles
        # The dialog as it was before Download: typed repository, quants listed.
        dialog = library.open_get_model()
        dialog.name_edit.setText("https://huggingface.co/example/Tiny-Chat-GGUF")
        pump.call(dialog.look_up)
        pump.until(lambda: dialog.quant_combo.count() > 0, 30, "the quant list")
        dialog.resize(QSize(560, 280))
        library.select("hf.co/example/Tiny-Chat-GGUF:Q8_0")  # Delete is on for it
        pump.sleep(0.3)
        window_picture, dialog_picture = library.grab(), dialog.grab()
        margin = 16
        canvas = QPixmap(window_picture.width() + dialog_picture.width() + 3 * margin,
                         max(window_picture.height(), dialog_picture.height()) + 2 * margin)
        canvas.fill(Qt.GlobalColor.white)
        painter = QPainter(canvas)
        painter.drawPixmap(QPoint(margin, margin), window_picture)
        painter.drawPixmap(QPoint(2 * margin + window_picture.width(), margin), dialog_picture)
        painter.end()
        for job in service.model_store.jobs():
            job.cancel()
        dialog.hide()
        target = out / "get-model.png"
        if not canvas.save(str(target)):
            raise RuntimeError(f"could not write {target}")
        print(f"wrote {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")
    finally:
        hub.faults.delay = 0
        pump.run(hub.close())


async def workload(service: Service, names: list[str], seconds: float) -> None:
    """A few chats, then (for the meters) bursts of generation with pauses in between."""
    for prompt in ("Hello there!", "Name three colours.", "Count to five."):
        await chat(service, TINY, prompt)
    deadline = time.monotonic() + seconds
    turn = 0
    while time.monotonic() < deadline:
        await chat(service, names[turn % len(names)], "Tell me a story.", tokens=96)
        await asyncio.sleep(1.5 + turn % 3)
        turn += 1


class Meters:
    """The resource monitor sampling in the background, and its window when asked."""

    def __init__(self, monitor: Any, task: asyncio.Task[None]) -> None:
        self.monitor = monitor
        self.task = task

    @classmethod
    def start(cls, service: Service, seconds: float) -> Meters | None:
        try:
            from llamarunner.gui.windows import meters  # noqa: F401
            from llamarunner.monitor import Sampler, ServiceMonitor, pids_from_manager
        except ImportError as exc:
            print(f"skipping meters.png: the meters window is not available ({exc})")
            return None
        monitor = ServiceMonitor(Sampler(pids_from_manager(service.manager)),
                                 interval=max(0.25, seconds / 120))
        task = asyncio.get_event_loop().create_task(monitor.run(), name="monitor")
        return cls(monitor, task)

    def window(self) -> QWidget:
        from llamarunner.gui.windows import meters

        # The app plots five minutes; a picture taken after a one-minute run shows that
        # minute across the whole width instead of a sliver at the right edge.
        meters.WINDOW_SECONDS = 60.0
        window: QWidget = meters.MetersWindow(self.monitor)
        return window


if __name__ == "__main__":
    raise SystemExit(main())
