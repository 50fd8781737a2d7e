"""The library window lists a peer's models with their source and whether the peer answers
(two real Services on loopback, one the peer of the other)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize
from PySide6.QtWidgets import QWidget

from llamarunner.config import ConfigStore
from llamarunner.gui.bridge import ServiceBridge
from llamarunner.gui.models.library_model import COL_NAME, COL_SOURCE, NAME_ROLE
from llamarunner.gui.windows.library import LibraryWindow
from llamarunner.service import Service


def _peer_config(folder: Path, runtime: Path, model: Path) -> Path:
    folder.mkdir()
    path = folder / "config.json"
    path.write_text(json.dumps({
        "proxies": {"ollama": {"enabled": False, "host": "127.0.0.1", "port": 0},
                    "lmstudio": {"enabled": True, "host": "127.0.0.1", "port": 0}},
        "runtimes": {"default": {"path": str(runtime)}},
        "models": {"far": {"path": str(model), "args": {"ctx-size": 256}}},
        "model_dirs": [str(folder / "none")],
    }))
    return path


def _source(window: LibraryWindow, name: str) -> str:
    proxy = window.proxy
    for row in range(proxy.rowCount()):
        if proxy.index(row, COL_NAME).data(NAME_ROLE) == name:
            return str(proxy.index(row, COL_SOURCE).data())
    raise AssertionError(f"{name} is not listed")


def test_peer_models_show_their_peer_and_its_state(
        qt_driver: Any, tiny_config: Callable[..., Path], tmp_path: Path,
        llama_server_bin: Path, tiny_model_b: Path,
        screenshot: Callable[[QWidget, str], Path]) -> None:
    peer = Service(ConfigStore(_peer_config(tmp_path / "peer", llama_server_bin, tiny_model_b)),
                   runner_log_dir=tmp_path / "peer" / "runners")
    assert not qt_driver.run(peer.start())
    url = f"http://127.0.0.1:{peer.listeners.bound_port('lmstudio')}/v1"
    config = tiny_config(peers={"box": {"url": url}})
    service = Service(ConfigStore(config), runner_log_dir=config.parent / "runners")
    assert not qt_driver.run(service.start())
    bridge = ServiceBridge(service, capture_logs=False)
    window = LibraryWindow(service, bridge)
    window.resize(QSize(1300, 620))
    window.show()
    try:
        qt_driver.until(lambda: "far" in window.model.names(), timeout=30,
                        message="the peer's model listed")
        assert _source(window, "far") == "peer box"
        assert window.state_text("far") == "on peer"
        assert _source(window, "tiny") != "peer box"
        window.select("far")
        assert not window.detail.isEnabled()  # the peer's settings are the peer's
        assert window.delete_reason("far") is not None
        assert "peer box" in (window.delete_reason("far") or "")
        assert screenshot(window, "library-peers").stat().st_size > 0

        # The peer goes away: the next look at it marks its model unavailable.
        qt_driver.run(peer.stop())
        qt_driver.run(service.refresh_peers())
        qt_driver.until(lambda: window.state_text("far") == "peer unavailable", timeout=30,
                        message="the peer shown unavailable")
    finally:
        window.hide()
        qt_driver.run(service.stop())
        qt_driver.run(peer.stop())
        bridge.close()
