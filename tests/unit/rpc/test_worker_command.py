"""`llamarunner worker`: flags to the RPC server's, the checks first, the foreground run."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path

import psutil
import pytest
from tests.support.rpc_worker import free_port

from llamarunner import cli
from llamarunner.rpc import worker as worker_module
from llamarunner.rpc.probe import DEFAULT_RPC_PORT
from llamarunner.rpc.worker import (
    DEFAULT_HOST,
    EXIT_FAILED,
    EXIT_LISTEN,
    EXIT_OK,
    EXIT_USAGE,
    WorkerOptions,
    bind_problem,
    check_options,
    run_worker_cli,
    serve,
    worker_argv,
)
from llamarunner.runtime.rpc_server import RpcServerNotFoundError

ROOT = Path(__file__).resolve().parents[3]
# Plays ggml-rpc-server: answers HELLO on -p PORT until a signal ends it; records its argv.
FAKE_SERVER = f"""
import asyncio, json, sys
sys.path.insert(0, {str(ROOT)!r})
from tests.support.rpc_worker import FakeRpcWorker
port = int(sys.argv[sys.argv.index("-p") + 1])
with open(sys.argv[0] + ".argv", "w") as out:
    json.dump(sys.argv[1:], out)

async def main():
    async with FakeRpcWorker(port=port):
        print("Starting RPC server v7.0.0", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""
# Plays ggml-rpc-server when it cannot bind: says so, and exits 0 (as the real one does).
FAILING_SERVER = """
import sys
print("Failed to create server socket", flush=True)
"""


def script(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return path


def test_cli_maps_the_flags() -> None:
    args = cli.build_parser().parse_args(
        ["worker", "--host", "10.0.0.5", "--port", "6000", "--threads", "4", "--cache"])
    assert (args.command, args.host, args.port, args.threads, args.cache) == (
        "worker", "10.0.0.5", 6000, 4, True)
    defaults = cli.build_parser().parse_args(["worker"])
    assert (defaults.host, defaults.port, defaults.threads, defaults.cache) == (
        DEFAULT_HOST, DEFAULT_RPC_PORT, None, False)
    assert (DEFAULT_HOST, DEFAULT_RPC_PORT) == ("127.0.0.1", 50052)


def test_cli_runs_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[WorkerOptions] = []

    def fake_run(options: WorkerOptions) -> int:
        seen.append(options)
        return 7

    monkeypatch.setattr(worker_module, "run_worker_cli", fake_run)
    assert cli.main(["worker", "--port", "6001", "--threads", "2"]) == 7
    assert seen == [WorkerOptions("127.0.0.1", 6001, 2, False)]


@pytest.mark.parametrize(
    ("options", "argv"),
    [
        (WorkerOptions(), ["-H", "127.0.0.1", "-p", "50052"]),
        (WorkerOptions("10.0.0.5", 6000, 8, True),
         ["-H", "10.0.0.5", "-p", "6000", "-t", "8", "-c"]),
    ],
)
def test_flags_become_the_rpc_server_s(options: WorkerOptions, argv: list[str]) -> None:
    assert worker_argv(Path("/opt/ggml-rpc-server"), options) == ["/opt/ggml-rpc-server", *argv]


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (WorkerOptions("localhost"), "not an IPv4 address"),
        (WorkerOptions("::1"), "not an IPv4 address"),
        (WorkerOptions(port=0), "between 1 and 65535"),
        (WorkerOptions(threads=0), "1 or more"),
    ],
)
def test_options_that_cannot_work(options: WorkerOptions, problem: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    message = check_options(options)
    assert message is not None and problem in message
    assert run_worker_cli(options, find=_never) == EXIT_USAGE
    assert problem in capsys.readouterr().err


def _never() -> Path:
    raise AssertionError("nothing should be looked up")


def test_a_port_in_use_is_refused_before_starting(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert "in use" in (bind_problem("127.0.0.1", port) or "")
        assert run_worker_cli(WorkerOptions(port=port), find=lambda: Path("/bin/false")) == (
            EXIT_LISTEN)
    assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err
    assert bind_problem("127.0.0.1", free_port()) is None


def test_no_rpc_server_says_how_to_get_one(capsys: pytest.CaptureFixture[str]) -> None:
    def missing() -> Path:
        raise RpcServerNotFoundError(["PATH"])

    assert run_worker_cli(WorkerOptions(port=free_port()), find=missing) == EXIT_USAGE
    assert "llamarunner runtime install" in capsys.readouterr().err


def test_listening_beyond_this_machine_warns(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    async def fake_serve(argv: list[str], options: WorkerOptions) -> int:
        return EXIT_OK

    monkeypatch.setattr(worker_module, "serve", fake_serve)
    monkeypatch.setattr(worker_module, "bind_problem", lambda host, port: None)
    assert run_worker_cli(WorkerOptions("192.168.1.20"), find=lambda: Path("x")) == EXIT_OK
    err = capsys.readouterr().err
    assert "no authentication" in err and "private network" in err and "firewall" in err
    assert run_worker_cli(WorkerOptions("127.0.0.1"), find=lambda: Path("x")) == EXIT_OK
    assert capsys.readouterr().err == ""


@pytest.mark.skipif(os.name == "nt", reason="a #! script stands in for the RPC server")
async def test_runs_in_the_foreground_until_stopped(tmp_path: Path) -> None:
    fake = script(tmp_path / "ggml-rpc-server", FAKE_SERVER)
    options = WorkerOptions(port=free_port(), threads=2)
    said: list[str] = []
    stop = asyncio.Event()
    run = asyncio.ensure_future(serve(worker_argv(fake, options), options, say=said.append,
                                      stop=stop))
    for _ in range(200):
        if any("is ready" in line for line in said):
            break
        await asyncio.sleep(0.05)
    ready = next(line for line in said if "is ready" in line)
    assert f"ready on 127.0.0.1:{options.port}" in ready
    pid = int(ready.split("(pid ")[1].split(")")[0])
    recorded = await asyncio.to_thread(Path(f"{fake}.argv").read_text)
    assert json.loads(recorded) == [
        "-H", "127.0.0.1", "-p", str(options.port), "-t", "2"]
    stop.set()
    assert await run == EXIT_OK
    assert said[-1] == "llamarunner worker: stopped"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@pytest.mark.skipif(os.name == "nt", reason="a #! script stands in for the RPC server")
async def test_a_server_that_exits_by_itself_is_a_failure(tmp_path: Path) -> None:
    fake = script(tmp_path / "ggml-rpc-server", FAILING_SERVER)
    options = WorkerOptions(port=free_port())
    said: list[str] = []
    assert await serve(worker_argv(fake, options), options, say=said.append) == EXIT_FAILED
    assert "exited with status 0 by itself: it could not listen there" in said[-1]
