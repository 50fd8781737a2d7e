"""`llamarunner doctor` as users run it: a real process against a started app (real
llama-server, tiny models), over real HTTP on the ports of the config."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.support.tiny_gguf import write_tiny_gguf

from llamarunner.doctor import CLIENTS

CLIENT_NAMES = [name for name, _ in CLIENTS]
API_KEY = "doctor-test-key-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fixed_ports() -> dict[str, Any]:
    # The doctor runs in another process and knows the ports from the config alone.
    return {"ollama": {"enabled": True, "host": "127.0.0.1", "port": free_port()},
            "lmstudio": {"enabled": True, "host": "127.0.0.1", "port": free_port()}}


@pytest.fixture
def app_config(write_config: Callable[..., Path], llama_server_bin: Path, tiny_model: Path,
               tmp_path: Path) -> Callable[..., Path]:
    """A config with a chat model ("tiny") and one without a chat template ("plain", listed
    first), both APIs on fixed free ports."""
    plain = write_tiny_gguf(tmp_path / "plain.gguf", name="plain", chat_template=None)

    def factory(**extra: Any) -> Path:
        models = {"plain": {"path": str(plain), "args": {"ctx-size": 256}},
                  "tiny": {"path": str(tiny_model), "args": {"ctx-size": 256}}}
        return write_config(models, runtime=llama_server_bin, proxies=fixed_ports(), **extra)

    return factory


async def doctor(config: Path, *args: str) -> tuple[int, str, str]:
    """Run `llamarunner doctor ... --config PATH` (the option after the command, on purpose)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llamarunner", "doctor", *args, "--config", str(config),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def client_lines(out: str) -> dict[str, str]:
    """Each client's line, by client name; every client has exactly one."""
    lines = {name: [line for line in out.splitlines() if line.startswith(f"{name}:")]
             for name in CLIENT_NAMES}
    assert all(len(found) == 1 for found in lines.values()), out
    return {name: found[0][len(name) + 1:].strip() for name, found in lines.items()}


async def test_every_client_works_with_the_first_model_that_can_chat(
    app_config: Callable[..., Path], start_service: Any
) -> None:
    config = app_config()
    await start_service(config)
    code, out, err = await doctor(config)
    assert code == 0, out + err
    assert "Model: tiny" in out.splitlines()  # "plain" is listed first but cannot chat
    assert client_lines(out) == dict.fromkeys(CLIENT_NAMES, "works")
    assert out.rstrip().endswith("All 5 clients work.")


async def test_json_output(app_config: Callable[..., Path], start_service: Any) -> None:
    config = app_config()
    await start_service(config)
    code, out, _ = await doctor(config, "--json", "--model", "tiny:latest")
    report = json.loads(out)
    assert code == 0 and report["works"] is True and report["model"] == "tiny"
    assert [(c["client"], c["works"]) for c in report["clients"]] == [
        (name, True) for name in CLIENT_NAMES]


async def test_a_model_without_a_chat_template_fails_with_the_fix(
    app_config: Callable[..., Path], start_service: Any
) -> None:
    config = app_config()
    await start_service(config)
    code, out, err = await doctor(config, "--model", "plain")
    assert code == 1, out + err
    lines = client_lines(out)
    for name, line in lines.items():
        assert line.startswith("fails at POST "), (name, line)
        assert "(HTTP 400)" in line and "cannot chat" in line, (name, line)
        assert f'"chat_template" in models.plain in {config}' in line, (name, line)
    assert "on 127.0.0.1:" in lines["OpenAI SDK"] and "/v1/chat/completions" in lines[
        "OpenAI SDK"]
    assert "POST /api/chat" in lines["Open WebUI"]
    assert out.rstrip().endswith("5 of 5 clients would fail.")


async def test_the_api_key_of_the_config_is_sent(
    app_config: Callable[..., Path], start_service: Any, tmp_path: Path
) -> None:
    config = app_config(security={"api_key": API_KEY})
    await start_service(config)
    code, out, err = await doctor(config)
    assert code == 0, out + err
    lines = client_lines(out)
    assert all(line.startswith("works") for line in lines.values()), out
    # What Copilot itself would meet: it lists models without a key.
    assert "Copilot sends no API key" in lines["GitHub Copilot"]

    # The same app, but the doctor reads a config without the key.
    keyless = tmp_path / "keyless.json"
    data = json.loads(config.read_text())
    del data["security"]
    keyless.write_text(json.dumps(data))
    code, out, _ = await doctor(keyless)
    assert code == 1
    assert "(HTTP 401)" in out and f"the app wants an API key but {keyless} has none" in out


async def test_copilot_refuses_an_old_ollama_version(
    app_config: Callable[..., Path], start_service: Any
) -> None:
    config = app_config()
    data = json.loads(config.read_text())
    data["proxies"]["ollama"]["version"] = "0.6.3"
    config.write_text(json.dumps(data))
    await start_service(config)
    code, out, _ = await doctor(config)
    assert code == 1
    lines = client_lines(out)
    assert lines["GitHub Copilot"].startswith("fails at GET /api/version on 127.0.0.1:")
    assert "reports Ollama 0.6.3; Copilot needs 0.6.4 or newer" in lines["GitHub Copilot"]
    assert f"set proxies.ollama.version to 0.13.0 in {config}" in lines["GitHub Copilot"]
    assert all(line == "works" for name, line in lines.items() if name != "GitHub Copilot")


def test_an_app_that_is_not_running_is_a_clear_error(tmp_path: Path) -> None:
    ports = fixed_ports()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"proxies": ports}))
    done = subprocess.run([sys.executable, "-m", "llamarunner", "--config", str(config),
                           "doctor"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert done.stdout == ""
    ollama, lmstudio = ports["ollama"]["port"], ports["lmstudio"]["port"]
    assert done.stderr.startswith(
        f"llamarunner: LlamaRunner Pro is not running on 127.0.0.1:{ollama} / {lmstudio}: "
        "start it with `llamarunner`")


def test_an_unusable_config_is_reported_before_anything_is_tried(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"proxies": {"ollama": {"port": "x"}}}')
    done = subprocess.run([sys.executable, "-m", "llamarunner", "doctor", "--config",
                           str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "proxies.ollama.port" in done.stderr and "fix it first" in done.stderr
