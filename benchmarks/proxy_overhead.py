"""What the proxy adds on top of llama-server: the same requests direct and through it.

Runs in one process on one machine, alternating direct and proxied requests so that noise
hits both sides alike, and reports differences against the direct baseline. The direct
llama-server is started with the command line the runner gave its own child:

- non-streaming requests: added latency, p50 and p99;
- streaming: added latency per chunk and tokens/s through the proxy vs direct;
- cold start: time to first byte for an unloaded model through the proxy, minus
  llama-server's own spawn-to-healthy time plus its warm time to first byte;
- swap: a request for B while A is loaded (one slot) through the proxy, minus A's own
  exit time + B's spawn-to-healthy + a warm request, all measured by hand;
- parallel: 8 clients at once, requests/s through the proxy vs direct, and the app's own
  CPU time per proxied request;
- launch: from starting `llamarunner --headless` to both ports accepting connections.

Usage: python benchmarks/proxy_overhead.py [--model PATH] [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.tiny_gguf import write_tiny_gguf  # noqa: E402

from llamarunner.runtime.resolver import resolve_runtime  # noqa: E402

ARGS = {"ctx-size": 512, "threads": 1}
# The key the hand-started llama-server demands, as the runner's own child demands one.
DIRECT_KEY = "benchmark-direct-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


class DirectServer:
    """llama-server started by hand with the very arguments the runner gave its own child.

    `argv` is the runner's command line (read from its llama-server process); only the
    port changes. The runner's child demands a key on every route but /health, so this
    one is given one too and every request to it carries it, as the proxy's do.
    """

    def __init__(self, argv: list[str]) -> None:
        self._argv = argv
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        argv = list(self._argv)
        argv[argv.index("--port") + 1] = str(self.port)
        return argv

    async def start(self, http: aiohttp.ClientSession) -> float:
        """Spawn and poll /health; returns spawn-to-healthy seconds."""
        self.port = free_port()
        started = time.perf_counter()
        self.proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL,  # noqa: ASYNC220
                                     stderr=subprocess.DEVNULL,
                                     env={**os.environ, "LLAMA_API_KEY": DIRECT_KEY})
        while True:
            try:
                async with http.get(f"{self.url}/health") as resp:
                    if resp.status == 200:
                        return time.perf_counter() - started
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.005)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def with_alias(argv: list[str], alias: str) -> list[str]:
    """The same command line serving the model under another name."""
    argv = list(argv)
    argv[argv.index("--alias") + 1] = alias
    return argv


class Proxy:
    """`llamarunner --headless` in its own process, as users run it."""

    def __init__(self, binary: Path, model: Path, workdir: Path, *,
                 models: dict[str, Any] | None = None, slots: int = 2,
                 ollama_port: int | None = None) -> None:
        self.port = free_port()
        self.started_at = time.perf_counter()
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "proxies": {"ollama": ({"enabled": False} if ollama_port is None else
                                   {"host": "127.0.0.1", "port": ollama_port}),
                        "lmstudio": {"host": "127.0.0.1", "port": self.port}},
            "runtimes": {"default": {"path": str(binary)}},
            "models": models if models is not None else {
                "warm": {"path": str(model), "args": ARGS, "ttl": -1},
                "cold": {"path": str(model), "args": ARGS, "ttl": 0},
            },
            "model_dirs": [str(workdir / "none")],
            "scheduler": {"max_loaded_models": slots},
        }
        self.config_path = workdir / "config.json"
        self.config_path.write_text(json.dumps(config))
        # As installed apps run: with bytecode. A PYTHONDONTWRITEBYTECODE left in the
        # environment would make every launch compile the whole package from source.
        env = {key: value for key, value in os.environ.items()
               if key != "PYTHONDONTWRITEBYTECODE"}
        env = {**env, "LLAMARUNNER_DATA_DIR": str(workdir / "data"),
               "LLAMARUNNER_CACHE_DIR": str(workdir / "cache"),
               "LLAMARUNNER_LOG_DIR": str(workdir / "logs")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llamarunner", "--headless", "--log-level", "WARNING",
             "--config", str(self.config_path)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_listening(self, http: aiohttp.ClientSession) -> None:
        for _ in range(500):
            try:
                async with http.get(f"{self.url}/v1/models") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.02)
        raise RuntimeError("the proxy did not start listening")

    def cpu_seconds(self) -> float:
        """CPU time the app's own process has used so far (all its threads, its children
        not included): what the proxy costs, apart from llama-server's work.

        On Linux from each thread's schedstat, in nanoseconds; psutil's cpu_times counts
        clock ticks (10 ms), as much as a whole round of requests costs.
        """
        tasks = Path(f"/proc/{self.proc.pid}/task")
        if tasks.is_dir():
            total = 0
            for task in tasks.iterdir():
                try:
                    total += int((task / "schedstat").read_text().split()[0])
                except (OSError, ValueError, IndexError):
                    continue  # a thread that ended meanwhile
            return total / 1e9
        times = psutil.Process(self.proc.pid).cpu_times()
        return float(times.user + times.system)

    def runner_argv(self, alias: str) -> list[str]:
        """The command line of the llama-server the app runs for `alias`."""
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            argv: list[str] = child.cmdline()
            if "--alias" in argv and argv[argv.index("--alias") + 1] == alias:
                return argv
        raise RuntimeError(f"no llama-server child serves {alias!r}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def chat(model: str, *, stream: bool, max_tokens: int) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": max_tokens, "stream": stream, "temperature": 0,
            "ignore_eos": True}


async def timed_request(http: aiohttp.ClientSession, url: str, body: dict[str, Any]
                        ) -> tuple[float, float, list[float]]:
    # llama-server drops some keep-alive connections silently; like the proxy, try once more.
    try:
        return await _timed_request(http, url, body)
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        return await _timed_request(http, url, body)


async def _timed_request(http: aiohttp.ClientSession, url: str, body: dict[str, Any]
                         ) -> tuple[float, float, list[float]]:
    """(total seconds, seconds to first byte, arrival time of each streamed event)."""
    started = time.perf_counter()
    first = 0.0
    arrivals: list[float] = []
    async with http.post(url + "/v1/chat/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.content:
            now = time.perf_counter()
            if not first:
                first = now - started
            if line.startswith(b"data: {"):
                arrivals.append(now)
    return time.perf_counter() - started, first, arrivals


async def bench_non_streaming(http: aiohttp.ClientSession, direct: str, proxy: str,
                              rounds: int) -> dict[str, float]:
    direct_t: list[float] = []
    proxy_t: list[float] = []
    for i in range(rounds):
        order = [(direct, direct_t), (proxy, proxy_t)]
        for url, sink in order if i % 2 else reversed(order):
            total, _, _ = await timed_request(http, url, chat("warm", stream=False,
                                                              max_tokens=1))
            sink.append(total)
    return {
        "direct_p50": percentile(direct_t, 50), "proxy_p50": percentile(proxy_t, 50),
        "direct_p99": percentile(direct_t, 99), "proxy_p99": percentile(proxy_t, 99),
        "added_p50": percentile(proxy_t, 50) - percentile(direct_t, 50),
        "added_p99": percentile(proxy_t, 99) - percentile(direct_t, 99),
    }


async def bench_streaming(http: aiohttp.ClientSession, direct: str, proxy: str,
                          rounds: int) -> dict[str, float]:
    # Measured on whole streams: the proxy may hand several events to the client in one
    # read, so per-event arrival gaps would flatter it.
    per_chunk: dict[str, list[float]] = {"direct": [], "proxy": []}
    rates: dict[str, list[float]] = {"direct": [], "proxy": []}
    for i in range(rounds):
        order = [("direct", direct), ("proxy", proxy)]
        for side, url in order if i % 2 else reversed(order):
            total, _, arrivals = await timed_request(http, url, chat("warm", stream=True,
                                                                     max_tokens=128))
            per_chunk[side].append(total / max(1, len(arrivals)))
            rates[side].append(len(arrivals) / total)
    return {
        "added_per_chunk_p50": statistics.median(per_chunk["proxy"])
        - statistics.median(per_chunk["direct"]),
        "direct_tps": statistics.median(rates["direct"]),
        "proxy_tps": statistics.median(rates["proxy"]),
    }


async def bench_cold(http: aiohttp.ClientSession, argv: list[str], proxy: str,
                     rounds: int) -> dict[str, float]:
    own_start: list[float] = []
    direct_first: list[float] = []
    proxy_first: list[float] = []
    for _ in range(rounds):
        server = DirectServer(with_alias(argv, "cold"))
        try:
            own_start.append(await server.start(http))
            _, first, _ = await timed_request(http, server.url,
                                              chat("cold", stream=True, max_tokens=4))
            direct_first.append(first)
        finally:
            server.stop()
        # "cold" has ttl 0: the proxy unloads it right after each request.
        await asyncio.sleep(0.5)
        _, first, _ = await timed_request(http, proxy, chat("cold", stream=True, max_tokens=4))
        proxy_first.append(first)
        await asyncio.sleep(0.5)
    baseline = statistics.median(own_start) + statistics.median(direct_first)
    return {
        "llama_server_start_to_healthy_p50": statistics.median(own_start),
        "direct_warm_first_byte_p50": statistics.median(direct_first),
        "proxy_cold_first_byte_p50": statistics.median(proxy_first),
        "added_cold_p50": statistics.median(proxy_first) - baseline,
    }


async def bench_swap(http: aiohttp.ClientSession, binary: Path, model: Path, workdir: Path,
                     argv: list[str], rounds: int) -> dict[str, float]:
    """Proxy swap A→B (one slot) vs. A's exit + B's spawn-to-healthy + a warm request."""
    by_hand: list[float] = []
    for _ in range(rounds):
        a, b = DirectServer(with_alias(argv, "a")), DirectServer(with_alias(argv, "b"))
        await a.start(http)
        assert a.proc is not None
        started = time.perf_counter()
        a.proc.terminate()
        await asyncio.to_thread(a.proc.wait, 10)
        exit_s = time.perf_counter() - started
        try:
            healthy_s = await b.start(http)
            total, _, _ = await timed_request(http, b.url, chat("b", stream=False, max_tokens=1))
        finally:
            b.stop()
        by_hand.append(exit_s + healthy_s + total)
    models = {name: {"path": str(model), "args": ARGS, "ttl": -1} for name in ("a", "b")}
    proxy = Proxy(binary, model, workdir / "swap", models=models, slots=1)
    swaps: list[float] = []
    try:
        await proxy.wait_listening(http)
        await timed_request(http, proxy.url, chat("a", stream=False, max_tokens=1))
        for i in range(rounds * 2):
            # Alternate so every request swaps: the loaded model is always the other one.
            total, _, _ = await timed_request(http, proxy.url,
                                              chat("ba"[i % 2], stream=False, max_tokens=1))
            swaps.append(total)
    finally:
        proxy.stop()
    return {
        "by_hand_p50": statistics.median(by_hand),
        "proxy_swap_p50": statistics.median(swaps),
        "added_swap_p50": statistics.median(swaps) - statistics.median(by_hand),
    }


async def bench_parallel(http: aiohttp.ClientSession, direct: str, proxy: Proxy,
                         clients: int, per_client: int, rounds: int) -> dict[str, float]:
    """Requests/s with `clients` concurrent clients, direct and proxied, alternating; and
    the CPU time the app's own process spends per proxied request."""
    rates: dict[str, list[float]] = {"direct": [], "proxy": []}
    cpu_per_request: list[float] = []

    async def one_client(url: str) -> None:
        for _ in range(per_client):
            await timed_request(http, url, chat("warm", stream=False, max_tokens=16))

    for i in range(rounds):
        order = [("direct", direct), ("proxy", proxy.url)]
        for side, url in order if i % 2 else reversed(order):
            cpu_before = proxy.cpu_seconds()
            started = time.perf_counter()
            await asyncio.gather(*(one_client(url) for _ in range(clients)))
            rates[side].append(clients * per_client / (time.perf_counter() - started))
            if side == "proxy":
                cpu_per_request.append((proxy.cpu_seconds() - cpu_before)
                                       / (clients * per_client))
    direct_rps, proxy_rps = statistics.median(rates["direct"]), statistics.median(rates["proxy"])
    return {"direct_rps": direct_rps, "proxy_rps": proxy_rps, "ratio": proxy_rps / direct_rps,
            "app_cpu_per_request": statistics.median(cpu_per_request)}


async def _accepts(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


async def _answers(http: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with http.get(url) as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def bench_launch(http: aiohttp.ClientSession, binary: Path, model: Path, workdir: Path,
                       rounds: int) -> dict[str, float]:
    """From spawning `llamarunner --headless` to both ports accepting, then answering HTTP.

    "Answering" is the figure that counts: GET /api/version on the Ollama port and
    GET /v1/models on the OpenAI port both return 200.
    """
    accepting: list[float] = []
    answering: list[float] = []
    for i in range(rounds):
        proxy = Proxy(binary, model, workdir / f"launch{i}", ollama_port=free_port(),
                      models={"warm": {"path": str(model), "args": ARGS}})
        ollama_port = json.loads(proxy.config_path.read_text())["proxies"]["ollama"]["port"]
        try:
            accepted_at = None
            for _ in range(2000):  # polled every 5 ms; 10 s at most
                if accepted_at is None and await _accepts(proxy.port) \
                        and await _accepts(ollama_port):
                    accepted_at = time.perf_counter()
                if accepted_at is not None \
                        and await _answers(http, f"{proxy.url}/v1/models") \
                        and await _answers(http, f"http://127.0.0.1:{ollama_port}/api/version"):
                    break
                await asyncio.sleep(0.005)
            now = time.perf_counter()
            accepting.append((accepted_at or now) - proxy.started_at)
            answering.append(now - proxy.started_at)
        finally:
            proxy.stop()
    return {"launch_to_ports_p50": statistics.median(answering),
            "launch_max": max(answering),
            "launch_to_accepting_p50": statistics.median(accepting)}


def compile_package() -> None:
    """Write the package's bytecode once, as installing it does."""
    import llamarunner

    compileall.compile_dir(str(Path(llamarunner.__file__).parent), quiet=1)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None,
                        help="GGUF to use (default: a generated tiny model)")
    parser.add_argument("--requests", type=int, default=200,
                        help="non-streaming rounds (each is one direct + one proxied request)")
    parser.add_argument("--streams", type=int, default=30)
    parser.add_argument("--cold", type=int, default=8)
    parser.add_argument("--swaps", type=int, default=6)
    parser.add_argument("--launches", type=int, default=5)
    parser.add_argument("--per-client", type=int, default=10,
                        help="requests each of the 8 parallel clients sends per round")
    parser.add_argument("--parallel-rounds", type=int, default=6,
                        help="parallel rounds (each is one direct + one proxied round)")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS),
                        help="run only these parts")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    binary = resolve_runtime("llama-server")
    compile_package()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model = args.model or write_tiny_gguf(workdir / "tiny.gguf")
        connector = aiohttp.TCPConnector(limit=0)
        # Every request carries a key, as SDK clients always send one: the hand-started
        # llama-server demands it and the proxy (no key configured) ignores it.
        headers = {"Authorization": f"Bearer {DIRECT_KEY}"}
        async with aiohttp.ClientSession(connector=connector, trust_env=False,
                                         headers=headers) as http:
            proxy = Proxy(binary, model, workdir)
            direct: DirectServer | None = None
            try:
                await proxy.wait_listening(http)
                await timed_request(http, proxy.url, chat("warm", stream=False, max_tokens=1))
                argv = proxy.runner_argv("warm")
                direct = DirectServer(argv)
                await direct.start(http)
                # Warm both sides up (connections, caches, the proxied runner itself).
                for _ in range(5):
                    await timed_request(http, direct.url, chat("warm", stream=False,
                                                               max_tokens=1))
                    await timed_request(http, proxy.url, chat("warm", stream=False,
                                                              max_tokens=1))
                results: dict[str, dict[str, float]] = {}
                if "non_streaming" in args.only:
                    results["non_streaming"] = await bench_non_streaming(
                        http, direct.url, proxy.url, args.requests)
                if "streaming" in args.only:
                    results["streaming"] = await bench_streaming(
                        http, direct.url, proxy.url, args.streams)
                if "cold_start" in args.only:
                    results["cold_start"] = await bench_cold(
                        http, argv, proxy.url, args.cold)
                if "parallel" in args.only:
                    results["parallel"] = await bench_parallel(
                        http, direct.url, proxy, 8, args.per_client, args.parallel_rounds)
                if "swap" in args.only:
                    results["swap"] = await bench_swap(http, binary, model, workdir, argv,
                                                       args.swaps)
                if "launch" in args.only:
                    results["launch"] = await bench_launch(
                        http, binary, model, workdir, args.launches)
            finally:
                if direct is not None:
                    direct.stop()
                proxy.stop()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"model: {args.model or 'generated tiny llama'}; llama-server: {binary}")
    for part, figures in results.items():
        REPORTS[part](figures)


def _report_non_streaming(ns: dict[str, float]) -> None:
    print("non-streaming (chat, 1 token):")
    print(f"  direct p50 {ms(ns['direct_p50'])}  proxy p50 {ms(ns['proxy_p50'])}"
          f"  added p50 {ms(ns['added_p50'])}")
    print(f"  direct p99 {ms(ns['direct_p99'])}  proxy p99 {ms(ns['proxy_p99'])}"
          f"  added p99 {ms(ns['added_p99'])}")


def _report_streaming(st: dict[str, float]) -> None:
    print("streaming (chat, 128 tokens):")
    print(f"  added per chunk p50 {ms(st['added_per_chunk_p50'])}")
    print(f"  tokens/s direct {st['direct_tps']:.0f}  proxy {st['proxy_tps']:.0f}"
          f"  ratio {st['proxy_tps'] / st['direct_tps']:.3f}")


def _report_cold(cold: dict[str, float]) -> None:
    print("cold start:")
    print(f"  llama-server spawn-to-healthy p50 {ms(cold['llama_server_start_to_healthy_p50'])}")
    print(f"  direct warm first byte p50        {ms(cold['direct_warm_first_byte_p50'])}")
    print(f"  proxy cold first byte p50         {ms(cold['proxy_cold_first_byte_p50'])}")
    print(f"  added by the proxy p50            {ms(cold['added_cold_p50'])}")


def _report_swap(sw: dict[str, float]) -> None:
    print("swap A->B (one slot):")
    print(f"  by hand (A exit + B healthy + request) p50 {ms(sw['by_hand_p50'])}")
    print(f"  through the proxy p50                      {ms(sw['proxy_swap_p50'])}")
    print(f"  added p50                                  {ms(sw['added_swap_p50'])}")


def _report_parallel(par: dict[str, float]) -> None:
    print("8 parallel clients (chat, 16 tokens):")
    print(f"  req/s direct {par['direct_rps']:.1f}  proxy {par['proxy_rps']:.1f}"
          f"  ratio {par['ratio']:.3f} (target >= 0.90)")
    print(f"  app CPU per proxied request p50 {ms(par['app_cpu_per_request'])}"
          " (target <= 0.4 ms)")


def _report_launch(launch: dict[str, float]) -> None:
    print(f"launch to both ports answering HTTP: p50 {ms(launch['launch_to_ports_p50'])}"
          f"  max {ms(launch['launch_max'])} (target <= 1 s); accepting connections p50"
          f" {ms(launch['launch_to_accepting_p50'])}")


PARTS = ("non_streaming", "streaming", "cold_start", "parallel", "swap", "launch")
REPORTS = {"non_streaming": _report_non_streaming, "streaming": _report_streaming,
           "cold_start": _report_cold, "parallel": _report_parallel, "swap": _report_swap,
           "launch": _report_launch}


if __name__ == "__main__":
    asyncio.run(main())
