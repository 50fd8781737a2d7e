"""Shared fixtures: real llama-server, generated tiny models, isolated dirs, orphan checks."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from tests.fakes.runtime import fake_runtime
from tests.support.speech import make_speech
from tests.support.tiny_gguf import write_tiny_gguf

from llamarunner import demo, paths
from llamarunner.config import ConfigStore
from llamarunner.runtime.resolver import RuntimeNotFoundError, resolve_runtime
from llamarunner.service import Service


def pytest_configure(config: pytest.Config) -> None:
    # Find the real llama-server once, before tests move the cache folder to a temporary
    # one: from then on the binary is reached through the override variable.
    if not os.environ.get("LLAMARUNNER_LLAMA_SERVER"):
        # When there is none, llama_server_bin fails the tests that need it, with the reason.
        with contextlib.suppress(RuntimeNotFoundError):
            os.environ["LLAMARUNNER_LLAMA_SERVER"] = str(resolve_runtime("llama-server"))
    # Real models are cached in the user's cache folder (outside the clone), like
    # llama-server, so repeated runs download them once; tests move the cache folder later.
    _REAL_CACHE.append(paths.cache_dir())


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's real config, models, caches, logs or model stores."""
    monkeypatch.setenv("LLAMARUNNER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LLAMARUNNER_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("LLAMARUNNER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "no-ollama-store"))
    # LM Studio's folder is found from the home folder: give each test an empty one.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("USERPROFILE", str(tmp_path / "home"))
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def _live_children() -> list[psutil.Process]:
    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child)
        except psutil.Error:
            continue
    return alive


@pytest.fixture(autouse=True)
def no_orphans() -> Iterator[None]:
    """Every test must leave no child process behind (llama-server, fakes, grandchildren)."""
    yield
    deadline = time.monotonic() + 3
    left = _live_children()
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = _live_children()
    if left:
        described = [f"{p.pid} {' '.join(p.cmdline()[:3])}" for p in left if p.is_running()]
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        pytest.fail(f"test left child processes behind: {described}")


@pytest.fixture(scope="session")
def llama_server_bin() -> Path:
    """The real llama-server; the README's test command builds and caches it first."""
    try:
        return resolve_runtime("llama-server")
    except RuntimeNotFoundError as exc:
        pytest.fail(f"no real llama-server for the tests: {exc}")


_REAL_CACHE: list[Path] = []


def _real_model(name: str) -> Path:
    saved = os.environ.get("LLAMARUNNER_CACHE_DIR")
    os.environ["LLAMARUNNER_CACHE_DIR"] = str(_REAL_CACHE[0])
    try:
        return demo.cached_demo_file(name)
    except demo.DemoUnavailableError as exc:
        pytest.fail(f"no {name} model for the tests: {exc}")
    finally:
        if saved is None:
            os.environ.pop("LLAMARUNNER_CACHE_DIR", None)
        else:
            os.environ["LLAMARUNNER_CACHE_DIR"] = saved


@pytest.fixture(scope="session")
def smollm2_model() -> Path:
    """SmolLM2-135M-Instruct (a real chat model with its own template), from its PyPI wheel."""
    return _real_model(demo.SMOLLM2.name)


@pytest.fixture(scope="session")
def gemma3_model() -> Path:
    """Gemma 3 270M, the base model: no chat template of its own."""
    return _real_model(demo.GEMMA3.name)


@pytest.fixture(scope="session")
def whisper_model() -> Path:
    """Whisper tiny.en in CTranslate2 format (a folder), from its PyPI wheel."""
    return _real_model(demo.WHISPER_TINY_EN.name)


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few seconds of real English speech (espeak-ng), 16 kHz mono WAV."""
    return make_speech(tmp_path_factory.mktemp("speech"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf", name="tiny")


@pytest.fixture(scope="session")
def tiny_model_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("models-b") / "tiny-b.gguf", name="tiny-b",
                           seed=1)


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    return fake_runtime(tmp_path / "fake-runtime")


ConfigFactory = Callable[..., Path]


@pytest.fixture
def write_config(tmp_path: Path) -> ConfigFactory:
    """Write a config with ephemeral listener ports; returns its path."""

    def factory(models: dict[str, Any], *, runtime: Path | str = "llama-server",
                runtimes: dict[str, Any] | None = None,
                scheduler: dict[str, Any] | None = None,
                proxies: dict[str, Any] | None = None, **extra: Any) -> Path:
        data: dict[str, Any] = {
            "proxies": proxies or {
                "ollama": {"enabled": False, "host": "127.0.0.1", "port": 0},
                "lmstudio": {"enabled": True, "host": "127.0.0.1", "port": 0},
            },
            "runtimes": runtimes or {"default": {"path": str(runtime)}},
            "models": models,
            "model_dirs": [str(tmp_path / "no-models-here")],
            "scheduler": {"load_timeout": "30s", "stop_grace": "2s", **(scheduler or {})},
        }
        data.update(extra)
        path = tmp_path / "config.json"
        path.write_text(json.dumps(data, indent=2))
        return path

    return factory


class RunningService:
    """A started Service and the base URL of one of its listeners."""

    def __init__(self, service: Service, api: str = "lmstudio") -> None:
        self.service = service
        port = service.listeners.bound_port(api)
        self.base_url = f"http://127.0.0.1:{port}"


ServiceStarter = Callable[[Path], Any]


@pytest.fixture
async def start_service() -> AsyncIterator[ServiceStarter]:
    started: list[Service] = []

    async def starter(config_path: Path, api: str = "lmstudio") -> RunningService:
        service = Service(ConfigStore(config_path), runner_log_dir=config_path.parent / "runners",
                          metadata_cache_file=config_path.parent / "gguf-metadata.json")
        errors = await service.start()
        started.append(service)
        assert not errors, errors
        return RunningService(service, api)

    yield starter
    for service in started:
        await service.stop()


def pytest_report_header(config: pytest.Config) -> str:
    try:
        binary = resolve_runtime("llama-server")
    except RuntimeNotFoundError:
        return "llama-server: NOT FOUND"
    override = os.environ.get("LLAMARUNNER_LLAMA_SERVER", "")
    return f"llama-server: {binary} (LLAMARUNNER_LLAMA_SERVER={override})"
