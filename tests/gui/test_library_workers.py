"""The library window shows each RPC worker of a model and its state (real Service,
a real ggml-rpc-server and a port nobody listens on)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import html
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QWidget
from pytestqt.qtbot import QtBot
from tests.support.rpc_worker import free_port

from llamarunner.config import ConfigStore
from llamarunner.gui.bridge import ServiceBridge
from llamarunner.gui.models.library_model import COL_NAME, COL_WORKERS, NAME_ROLE
from llamarunner.gui.windows._common import ERROR_COLOR
from llamarunner.gui.windows.library import LibraryWindow
from llamarunner.runtime.rpc_server import find_rpc_server
from llamarunner.service import Service

pytestmark = pytest.mark.skipif(os.name == "nt", reason="starts ggml-rpc-server")


class RpcWorker:
    """A real ggml-rpc-server on loopback."""

    def __init__(self) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [str(find_rpc_server()), "-H", "127.0.0.1", "-p", str(self.port), "-t", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "ggml-rpc-server did not start"
                time.sleep(0.05)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def rpc_worker(llama_server_bin: Path) -> Iterator[RpcWorker]:
    del llama_server_bin  # the RPC server is found beside it
    worker = RpcWorker()
    try:
        yield worker
    finally:
        worker.kill()


class Window:
    def __init__(self, driver: Any, service: Service, window: LibraryWindow) -> None:
        self.driver = driver
        self.service = service
        self.window = window

    def cell(self, name: str, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        proxy = self.window.proxy
        for row in range(proxy.rowCount()):
            if proxy.index(row, COL_NAME).data(NAME_ROLE) == name:
                return proxy.index(row, COL_WORKERS).data(role)
        raise AssertionError(f"{name} is not listed")

    def until(self, predicate: Callable[[], bool], message: str) -> None:
        self.driver.until(predicate, timeout=30, message=message)

    def click(self, widget: QWidget) -> None:
        async def press() -> None:
            QtBot.mouseClick(widget, Qt.MouseButton.LeftButton)

        self.driver.run(press())


@pytest.fixture
def library_with_workers(qt_driver: Any, tiny_config: Callable[..., Path], tiny_model: Path,
                         tiny_model_b: Path, rpc_worker: RpcWorker
                         ) -> Iterator[tuple[Window, RpcWorker, str]]:
    dead = f"127.0.0.1:{free_port()}"
    config = tiny_config({
        "tiny": {"path": str(tiny_model), "args": {"ctx-size": 256},
                 "rpc": [rpc_worker.address, dead]},
        "tiny-b": {"path": str(tiny_model_b), "args": {"ctx-size": 256}},
    })
    service = Service(ConfigStore(config), runner_log_dir=config.parent / "runners")
    assert not qt_driver.run(service.start())
    # The first check starts with the Service; let it end on the loop (between two runs
    # of the test's loop nothing moves, and Qt may step a task with no loop running).
    qt_driver.until(lambda: all(s.checked_at for s in service.rpc_workers()),
                    message="the first check of the workers")
    bridge = ServiceBridge(service, capture_logs=False)
    window = LibraryWindow(service, bridge)
    window.resize(QSize(1300, 620))
    window.show()
    try:
        yield Window(qt_driver, service, window), rpc_worker, dead
    finally:
        window.hide()
        qt_driver.run(service.stop())
        bridge.close()


def test_each_worker_and_its_state(library_with_workers: tuple[Window, RpcWorker, str],
                                   screenshot: Callable[[QWidget, str], Path]) -> None:
    library, worker, dead = library_with_workers
    up = worker.address
    window = library.window
    assert not window.table.isColumnHidden(COL_WORKERS)
    library.until(lambda: window.workers_text("tiny") == f"{up} up, {dead} down",
                  "the workers' states")
    assert library.cell("tiny-b") == ""
    assert library.cell("tiny", Qt.ItemDataRole.ForegroundRole) == QColor(ERROR_COLOR)
    tip = library.cell("tiny", Qt.ItemDataRole.ToolTipRole)
    assert f"{up} up: RPC protocol 7.0.0 (checked " in tip
    assert f"{dead} down: connection refused: nothing listens on port" in tip

    # The settings panel lists them for the selected model, and only for it.
    window.select("tiny")
    assert window.detail_form.isRowVisible(window.workers_label)
    lines = [re.sub(r"<[^>]+>", "", html.unescape(part))
             for part in window.workers_label.text().split("<br>")]
    assert [line.split(" (checked")[0] for line in lines] == [
        f"{up} up: RPC protocol 7.0.0",
        f"{dead} down: connection refused: nothing listens on port {dead.split(':')[1]} there"]
    assert f'<span style="color: {ERROR_COLOR};">{dead} down' in window.workers_label.text()
    path = screenshot(window, "library-workers")
    assert path.stat().st_size > 0

    # Loading it fails at once, naming the dead worker.
    library.click(window.load_button)
    library.until(lambda: "failed to load" in window.status_label.text(), "the failure")
    assert f"RPC worker {dead} is down" in window.status_label.text()
    assert window.state_text("tiny") == "failed"

    window.select("tiny-b")
    assert not window.detail_form.isRowVisible(window.workers_label)


def test_refresh_probes_at_once_and_the_column_goes_with_the_last_worker(
        library_with_workers: tuple[Window, RpcWorker, str]) -> None:
    library, worker, dead = library_with_workers
    up = worker.address
    window = library.window
    library.until(lambda: window.workers_text("tiny") == f"{up} up, {dead} down",
                  "the first probe")
    # The worker stops; Refresh checks now instead of at the next periodic check.
    worker.kill()
    library.click(window.refresh_button)
    library.until(lambda: window.workers_text("tiny") == f"{up} down, {dead} down",
                  "the stopped worker shown down")

    def drop_rpc(data: dict[str, Any]) -> None:
        data["models"]["tiny"].pop("rpc")

    library.driver.run(library.service.update_config(drop_rpc))
    library.until(lambda: window.table.isColumnHidden(COL_WORKERS), "the column hidden")
    assert library.service.rpc_workers() == []
