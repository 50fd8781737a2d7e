"""Tokens/s of a model split over two RPC workers vs the same model run locally.

Informational: both workers are ggml-rpc-server on this machine's loopback, so the split
pays the RPC protocol's round trips and copies without gaining any memory or compute; on
real machines the network decides. In one run it starts the two workers (the binary
`llamarunner worker` runs) and two llama-servers with the same flags, one of them with
`--rpc A,B`, then alternates the same generation request between them and reports the
median tokens/s llama-server itself measured (`timings.predicted_per_second`) and the
ratio split / local.

Usage: python benchmarks/rpc_split.py [--model PATH] [--gemma] [--rounds N] [--tokens N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.rpc_worker import free_port  # noqa: E402
from tests.support.tiny_gguf import write_tiny_gguf  # noqa: E402

from llamarunner.demo import GEMMA3, demo_cache_dir  # noqa: E402
from llamarunner.rpc.probe import WorkerState, probe_worker  # noqa: E402
from llamarunner.runtime.resolver import resolve_runtime  # noqa: E402
from llamarunner.runtime.rpc_server import find_rpc_server  # noqa: E402

# --no-repack: repacked weights fault on CPUs that advertise AMX under virtualisation (the
# runner retries with it for the same reason, runner/model_runner.py); both sides use it.
FLAGS = ["-c", "512", "-t", "1", "--no-warmup", "--no-repack"]
PROMPT = "Once upon a time"


class Process:
    """A child started here, stopped at the end whatever happens."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def until_worker_up(address: str) -> None:
    deadline = time.monotonic() + 30
    while (await probe_worker(address, 1.0)).state is not WorkerState.UP:
        if time.monotonic() > deadline:
            raise SystemExit(f"the RPC worker {address} did not start")
        await asyncio.sleep(0.05)


async def until_healthy(http: aiohttp.ClientSession, port: int, child: Process) -> None:
    deadline = time.monotonic() + 120
    while True:
        if child.proc.poll() is not None:
            raise SystemExit(f"llama-server exited; see {child.log}")
        try:
            async with http.get(f"http://127.0.0.1:{port}/health") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"llama-server on {port} never became healthy; see {child.log}")
        await asyncio.sleep(0.05)


async def generate(http: aiohttp.ClientSession, port: int, tokens: int) -> float:
    """One generation of exactly `tokens` tokens; llama-server's own tokens/s for it."""
    body = {"prompt": PROMPT, "n_predict": tokens, "ignore_eos": True, "temperature": 0,
            "cache_prompt": False}
    async with http.post(f"http://127.0.0.1:{port}/completion", json=body) as resp:
        data: dict[str, Any] = await resp.json()
    timings = data["timings"]
    assert timings["predicted_n"] == tokens, timings
    return float(timings["predicted_per_second"])


async def measure(model: Path, rounds: int, tokens: int, scratch: Path) -> dict[str, Any]:
    server, rpc = resolve_runtime("llama-server"), find_rpc_server()
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    local_port, split_port = free_port(), free_port()
    children: list[Process] = []
    try:
        for index, address in enumerate(workers):
            port = address.rpartition(":")[2]
            children.append(Process([str(rpc), "-H", "127.0.0.1", "-p", port, "-t", "1"],
                                    scratch / f"worker-{index}.log"))
        for address in workers:
            await until_worker_up(address)
        base = [str(server), "-m", str(model), "--host", "127.0.0.1", *FLAGS]
        local = Process([*base, "--port", str(local_port)], scratch / "local.log")
        split = Process([*base, "--port", str(split_port), "--rpc", ",".join(workers)],
                        scratch / "split.log")
        children += [local, split]
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as http:
            await until_healthy(http, local_port, local)
            await until_healthy(http, split_port, split)
            for port in (local_port, split_port):  # first requests allocate; not counted
                await generate(http, port, tokens)
            local_tps: list[float] = []
            split_tps: list[float] = []
            for round_ in range(rounds):
                # Alternate which goes first, so drift hits both alike.
                order = [(local_port, local_tps), (split_port, split_tps)]
                for port, results in order if round_ % 2 == 0 else order[::-1]:
                    results.append(await generate(http, port, tokens))
    finally:
        for child in reversed(children):
            child.stop()
    local_median, split_median = statistics.median(local_tps), statistics.median(split_tps)
    return {"model": model.name, "tokens": tokens, "rounds": rounds,
            "local_tokens_per_s": round(local_median, 1),
            "split_tokens_per_s": round(split_median, 1),
            "ratio_split_to_local": round(split_median / local_median, 3),
            # The split llama-server really used both (each prints this per client).
            "worker_connections": [child.log.read_text().count("Accepted client connection")
                                   for child in children[:2]]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a GGUF (default: the generated tiny one)")
    parser.add_argument("--gemma", action="store_true",
                        help="also Gemma 3 270M from the demo cache, if it is there")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rpc-split-") as folder:
        scratch = Path(folder)
        models = [args.model or write_tiny_gguf(scratch / "tiny.gguf", name="tiny")]
        gemma = demo_cache_dir() / GEMMA3.file_name
        if args.gemma and gemma.is_file():
            models.append(gemma)
        elif args.gemma:
            print(f"no {gemma}: run `llamarunner demo install --model gemma3` first",
                  file=sys.stderr)
        results = [asyncio.run(measure(model, args.rounds, args.tokens, scratch))
                   for model in models]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for result in results:
        print(f"{result['model']}: {result['tokens']} tokens x {result['rounds']} rounds, "
              "two workers on loopback")
        print(f"  local  {result['local_tokens_per_s']:8.1f} tokens/s")
        print(f"  split  {result['split_tokens_per_s']:8.1f} tokens/s")
        print(f"  ratio  {result['ratio_split_to_local']:8.3f} (split / local)")
        print(f"  worker connections {result['worker_connections']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
