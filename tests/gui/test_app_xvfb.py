"""The whole desktop app as users run it, on a real X server (Xvfb) with a real tray (trayer).

Each test starts Xvfb on a display it picks itself (-displayfd), docks the app's icon in
trayer, and watches X from outside with xwininfo/xdotool: the icon must really be in the
tray, its menu must really open, and Quit must really stop every llama-server.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil
import pytest
from tests.support import http

TOOLS = ("Xvfb", "trayer", "xdotool", "xwininfo")
pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not all(shutil.which(t) for t in TOOLS),
    reason="needs Linux with Xvfb, trayer, xdotool and xwininfo (scripts/test installs them)",
)

SCREENSHOT_DIR = Path("/tmp")
# Grabs the whole X screen from a separate process, for the screenshots in /tmp.
_GRAB = ("import sys\nfrom PySide6.QtGui import QGuiApplication\n"
         "app = QGuiApplication(sys.argv[:1])\n"
         "sys.exit(0 if app.primaryScreen().grabWindow(0).save(sys.argv[1]) else 1)\n")
_WINDOW_LINE = re.compile(
    r"^(?P<indent>\s*)(?P<id>0x[0-9a-f]+) (?:\"(?P<name>.*)\"|\(has no name\)): "
    r"\((?P<cls>.*?)\)\s+(?P<w>\d+)x(?P<h>\d+)\+-?\d+\+-?\d+\s+\+(?P<x>-?\d+)\+(?P<y>-?\d+)"
)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def stop_process(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class TrayWindow:
    id: str
    x: int
    y: int
    width: int
    height: int


class XDisplay:
    """An Xvfb display, the tray on it, and helpers that look at it from outside."""

    def __init__(self, number: int, tmp_path: Path) -> None:
        self.name = f":{number}"
        self.tmp_path = tmp_path
        self.env = {**os.environ, "DISPLAY": self.name,
                    # QSettings (window geometry) must not land in the real ~/.config.
                    "XDG_CONFIG_HOME": str(tmp_path / "xdg-config")}
        self.tray: subprocess.Popen[bytes] | None = None

    def run(self, *argv: str) -> str:
        return subprocess.run(argv, env=self.env, capture_output=True, text=True,
                              timeout=30).stdout

    def start_tray(self) -> None:
        log_path = self.tmp_path / "trayer.log"
        for attempt in (1, 2):
            with log_path.open("ab") as log:
                self.tray = subprocess.Popen(
                    ["trayer", "--edge", "top", "--align", "right", "--widthtype", "request",
                     "--height", "24", "--transparent", "false"],
                    env=self.env, stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_for(self._tray_ready, 20, "trayer's panel")
                return
            except AssertionError:
                stop_process(self.tray)
                if attempt == 2:
                    raise AssertionError(
                        f"trayer did not come up; its output:\n{log_path.read_text()}"
                    ) from None

    def _tray_ready(self) -> bool:
        assert self.tray is not None
        if self.tray.poll() is not None:
            raise AssertionError(f"trayer exited with {self.tray.returncode}")
        return '("panel" "trayer")' in self.run("xwininfo", "-root", "-tree")

    def tray_icon(self) -> TrayWindow | None:
        """The app's window docked inside trayer's panel, if any (parsed from the tree)."""
        ancestors: list[tuple[int, str]] = []
        for line in self.run("xwininfo", "-root", "-tree").splitlines():
            match = _WINDOW_LINE.match(line)
            if match is None:
                continue
            depth = len(match["indent"])
            while ancestors and ancestors[-1][0] >= depth:
                ancestors.pop()
            ancestors.append((depth, match["cls"]))
            in_tray = any('"trayer"' in cls for _, cls in ancestors[:-1])
            if in_tray and '"llamarunner"' in match["cls"]:
                return TrayWindow(match["id"], int(match["x"]), int(match["y"]),
                                  int(match["w"]), int(match["h"]))
        return None

    def visible_app_windows(self) -> set[str]:
        """Mapped windows of the app's X class (the tray icon, menus, windows, dialogs)."""
        out = self.run("xdotool", "search", "--onlyvisible", "--class", "llamarunner")
        return set(out.split())

    def screenshot(self, name: str) -> Path:
        path = SCREENSHOT_DIR / f"llamarunner-{name}.png"
        subprocess.run([sys.executable, "-c", _GRAB, str(path)],
                       env={**self.env, "QT_QPA_PLATFORM": "xcb"}, timeout=30, check=True,
                       capture_output=True)
        return path


@pytest.fixture
def xdisplay(tmp_path: Path) -> Iterator[XDisplay]:
    read_fd, write_fd = os.pipe()
    # -displayfd: Xvfb picks a free display number itself and writes it to us when ready,
    # so tests never race a developer's own X server or each other.
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x800x24",
         "-nolisten", "tcp"],
        pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    display: XDisplay | None = None
    try:
        ready, _, _ = select.select([read_fd], [], [], 20)
        assert ready, "Xvfb did not start"
        number = int(os.read(read_fd, 32).decode().strip())
        display = XDisplay(number, tmp_path)
        yield display
    finally:
        os.close(read_fd)
        if display is not None and display.tray is not None:
            stop_process(display.tray)
        stop_process(xvfb)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class App:
    proc: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def launch(tmp_path: Path, xdisplay: XDisplay, llama_server_bin: Path,
           tiny_model: Path) -> Iterator[Callable[..., App]]:
    """Start `python -m llamarunner` on the Xvfb display (xcb), with the tiny model."""
    apps: list[App] = []
    logs: list[IO[bytes]] = []

    def start(name: str = "app") -> App:
        config = tmp_path / "config.json"
        if not config.exists():
            config.write_text(json.dumps({
                "proxies": {"ollama": {"host": "127.0.0.1", "port": free_port()},
                            "lmstudio": {"host": "127.0.0.1", "port": free_port()}},
                "runtimes": {"default": {"path": str(llama_server_bin)}},
                "models": {"tiny": {"path": str(tiny_model), "args": {"ctx-size": 256}}},
                "model_dirs": [str(tmp_path / "no-models-here")],
            }, indent=2))
        port = json.loads(config.read_text())["proxies"]["lmstudio"]["port"]
        log_path = tmp_path / f"{name}.log"
        logs.append(log_path.open("wb"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "llamarunner", "--config", str(config)],
            env={**xdisplay.env, "QT_QPA_PLATFORM": "xcb"},
            stdout=logs[-1], stderr=subprocess.STDOUT)
        app = App(proc, f"http://127.0.0.1:{port}", log_path)
        apps.append(app)
        return app

    try:
        yield start
    finally:
        for app in apps:
            if app.proc.poll() is None:
                with contextlib.suppress(psutil.Error):
                    for child in psutil.Process(app.proc.pid).children(recursive=True):
                        child.kill()
                app.proc.kill()
                app.proc.wait()
        for handle in logs:
            handle.close()


def runner_children(app: App) -> list[psutil.Process]:
    children: list[psutil.Process] = psutil.Process(app.proc.pid).children(recursive=True)
    return children


def serve_one_request(app: App) -> list[psutil.Process]:
    http.wait_until_up(app.base_url + "/v1/models", timeout=30)
    status, body = http.post_json(app.base_url + "/v1/completions",
                                  {"model": "tiny", "prompt": "a", "max_tokens": 2})
    assert status == 200, body
    children = runner_children(app)
    assert [child.name() for child in children] == ["llama-server"]
    return children


def assert_quit_cleanly(app: App, children: list[psutil.Process]) -> None:
    try:
        code = app.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the app did not quit; its log:\n{app.log()}")
    assert code == 0, app.log()
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"runners outlived the app: {alive}"
    assert "stopped cleanly" in app.log()


def test_tray_icon_docks_serves_and_quits_from_its_menu(xdisplay: XDisplay,
                                                        launch: Callable[..., App]) -> None:
    xdisplay.start_tray()
    app = launch()
    icon = wait_for(xdisplay.tray_icon, 30, "the tray icon inside trayer")
    assert icon.width >= 16 and icon.height >= 16
    children = serve_one_request(app)
    before = xdisplay.visible_app_windows()
    assert icon.id in {hex(int(w)) for w in before}

    # Right click on the icon opens the menu (built on open); Up selects its last entry.
    xdisplay.run("xdotool", "mousemove", "--sync", str(icon.x + icon.width // 2),
                 str(icon.y + icon.height // 2), "click", "3")
    menu = wait_for(lambda: xdisplay.visible_app_windows() - before, 10, "the tray menu")
    assert len(menu) == 1
    xdisplay.screenshot("xvfb-tray-menu")
    xdisplay.run("xdotool", "key", "Up")
    time.sleep(0.2)
    xdisplay.screenshot("xvfb-tray-menu-quit")
    xdisplay.run("xdotool", "key", "Return")
    assert_quit_cleanly(app, children)


def test_sigterm_quits_cleanly_and_a_second_launch_wakes_the_first(
        xdisplay: XDisplay, launch: Callable[..., App]) -> None:
    xdisplay.start_tray()
    first = launch("first")
    icon = wait_for(xdisplay.tray_icon, 30, "the tray icon inside trayer")
    children = serve_one_request(first)
    before = xdisplay.visible_app_windows()

    second = launch("second")
    assert second.proc.wait(timeout=30) == 0, second.log()
    assert "already running" in second.log()
    # The first instance opened its library window (or the dialog that stands for it).
    wait_for(lambda: xdisplay.visible_app_windows() - before, 10, "a window of the first app")
    xdisplay.screenshot("xvfb-second-launch")
    still = xdisplay.tray_icon()
    assert still is not None and still.id == icon.id  # one icon, the first app's
    assert runner_children(first) == children

    first.proc.send_signal(signal.SIGTERM)
    assert_quit_cleanly(first, children)


def test_a_tray_that_appears_after_the_app_is_still_used(xdisplay: XDisplay,
                                                         launch: Callable[..., App]) -> None:
    # At login the app can start before the panel: it must wait for the tray to appear
    # instead of opening its fallback window at once.
    app = launch()
    http.wait_until_up(app.base_url + "/v1/models", timeout=30)
    time.sleep(1.5)
    assert xdisplay.visible_app_windows() == set(), "fell back to a window too early"
    xdisplay.start_tray()
    wait_for(xdisplay.tray_icon, 15, "the tray icon inside the late trayer")
    assert "no system tray yet" in app.log() and "tray icon shown" in app.log()
    xdisplay.screenshot("xvfb-tray-icon")
    app.proc.send_signal(signal.SIGINT)  # Ctrl+C in the terminal that started it
    assert_quit_cleanly(app, [])
