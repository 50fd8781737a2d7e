"""`llamarunner --headless` as users run it: a real process, signals, exit codes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from tests.support import http

from llamarunner import __version__


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(config: Path, tmp_path: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "LLAMARUNNER_DATA_DIR": str(tmp_path / "data"),
           "LLAMARUNNER_LOG_DIR": str(tmp_path / "logs")}
    return subprocess.Popen(
        [sys.executable, "-m", "llamarunner", "--headless", "--config", str(config)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def write(config: Path, data: dict[str, object]) -> Path:
    config.write_text(json.dumps(data, indent=2))
    return config


def proxies(port: int) -> dict[str, object]:
    return {"ollama": {"enabled": False}, "lmstudio": {"port": port}}


def test_version_flag() -> None:
    out = subprocess.run([sys.executable, "-m", "llamarunner", "--version"],
                         capture_output=True, text=True, check=True)
    first, second = out.stdout.strip().splitlines()
    assert first == f"llamarunner {__version__}"
    # conftest points LLAMARUNNER_LLAMA_SERVER at the real binary.
    assert second.startswith("llama-server ") and "(env: " in second


def test_serves_then_stops_cleanly_on_sigterm(tmp_path, llama_server_bin, tiny_model) -> None:
    port = free_port()
    config = write(tmp_path / "config.json", {
        "proxies": proxies(port),
        "runtimes": {"default": {"path": str(llama_server_bin)}},
        "models": {"tiny": {"path": str(tiny_model), "args": {"ctx-size": 256}}},
    })
    app = launch(config, tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        http.wait_until_up(base + "/v1/models")
        status, body = http.post_json(base + "/v1/completions",
                                      {"model": "tiny", "prompt": "a", "max_tokens": 2})
        assert status == 200, body
        children = psutil.Process(app.pid).children(recursive=True)
        assert [c.name() for c in children] == ["llama-server"]
        app.send_signal(signal.SIGTERM)
        assert app.wait(timeout=20) == 0
        _, alive = psutil.wait_procs(children, timeout=3)
        assert not alive
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
        app.stdout.close()  # type: ignore[union-attr]
        app.stderr.close()  # type: ignore[union-attr]


def test_sigkilled_app_takes_its_runners_with_it(tmp_path, llama_server_bin, tiny_model) -> None:
    port = free_port()
    config = write(tmp_path / "config.json", {
        "proxies": proxies(port),
        "runtimes": {"default": {"path": str(llama_server_bin)}},
        "models": {"a": {"path": str(tiny_model), "args": {"ctx-size": 256}},
                   "b": {"path": str(tiny_model), "args": {"ctx-size": 256}}},
        "scheduler": {"max_loaded_models": 2},
    })
    app = launch(config, tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        http.wait_until_up(base + "/v1/models")
        for model in ("a", "b"):
            status, _ = http.post_json(base + "/v1/completions",
                                       {"model": model, "prompt": "a", "max_tokens": 2})
            assert status == 200
        children = psutil.Process(app.pid).children(recursive=True)
        assert len(children) == 2
        app.kill()
        app.wait()
        _, alive = psutil.wait_procs(children, timeout=2)
        assert not alive, "runners outlived a SIGKILLed app"
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
        app.stdout.close()  # type: ignore[union-attr]
        app.stderr.close()  # type: ignore[union-attr]


def test_port_in_use_is_a_clear_error(tmp_path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write(tmp_path / "config.json", {"proxies": proxies(port)})
        app = launch(config, tmp_path)
        _, err = app.communicate(timeout=30)
    assert app.returncode == 3
    assert f"port {port} is already in use" in err
    assert "proxies.lmstudio.port" in err and str(config) in err


def test_unparseable_config_refuses_to_start_and_is_left_alone(tmp_path) -> None:
    config = tmp_path / "config.json"
    text = '{\n  "proxies": {\n    "lmstudio": {"port": 1234,}\n  }\n}\n'
    config.write_text(text)
    app = launch(config, tmp_path)
    _, err = app.communicate(timeout=30)
    assert app.returncode == 2
    assert f"{config}:3:" in err
    assert config.read_text() == text


@pytest.mark.parametrize("line", ['"models": {"x": {"path": "/m.gguf", "args": {"port": 1}}}'])
def test_invalid_config_lists_the_problem_with_its_key_path(tmp_path, line: str) -> None:
    config = tmp_path / "config.json"
    config.write_text("{\n" + line + "\n}\n")
    app = launch(config, tmp_path)
    _, err = app.communicate(timeout=30)
    assert app.returncode == 2
    assert "models.x.args.port" in err and "set by the runner" in err


def test_model_files_in_the_models_folder_are_served_without_config(
    tmp_path, llama_server_bin, tiny_model
) -> None:
    port = free_port()
    config = write(tmp_path / "config.json", {
        "proxies": proxies(port),
        "runtimes": {"default": {"path": str(llama_server_bin)}},
    })
    models_dir = tmp_path / "data" / "models"
    models_dir.mkdir(parents=True)
    (models_dir / "first.gguf").write_bytes(tiny_model.read_bytes())
    app = launch(config, tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        http.wait_until_up(base + "/v1/models")
        assert http.model_ids(base) == ["first"]
        # A file that appears later is found too.
        (models_dir / "Later-Model.gguf").write_bytes(tiny_model.read_bytes())
        deadline = time.monotonic() + 10
        while "later-model" not in http.model_ids(base) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert http.model_ids(base) == ["first", "later-model"]
        status, _ = http.post_json(base + "/v1/completions",
                                   {"model": "later-model", "prompt": "a", "max_tokens": 2})
        assert status == 200
    finally:
        app.send_signal(signal.SIGTERM)
        app.communicate(timeout=20)
