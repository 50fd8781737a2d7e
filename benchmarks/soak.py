"""Headless memory: idle RSS, and RSS growth over many proxied requests (leaks show here).

Starts `llamarunner --headless` in its own process with the generated tiny model, reads
its RSS with no model loaded, then sends N one-token chats from a few concurrent clients
over loopback and reports RSS after a warm-up and at the end. The runner's llama-server
is a separate process and not counted. Bounded: it stops after --requests or --max-seconds.

Usage: python benchmarks/soak.py [--requests 10000] [--clients 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from proxy_overhead import ARGS, Proxy, chat, timed_request  # noqa: E402
from tests.support.tiny_gguf import write_tiny_gguf  # noqa: E402

from llamarunner.runtime.resolver import resolve_runtime  # noqa: E402

MB = 1024 * 1024


def rss(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / MB


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--max-seconds", type=float, default=600)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    binary = resolve_runtime("llama-server")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model = write_tiny_gguf(workdir / "tiny.gguf")
        proxy = Proxy(binary, model, workdir / "soak",
                      models={"warm": {"path": str(model), "args": ARGS, "ttl": -1}})
        connector = aiohttp.TCPConnector(limit=0)
        try:
            async with aiohttp.ClientSession(connector=connector, trust_env=False) as http:
                await proxy.wait_listening(http)
                await asyncio.sleep(2)  # let start-up allocations settle
                idle = rss(proxy.proc.pid)
                sent = 0
                deadline = time.monotonic() + args.max_seconds
                after_warmup = 0.0

                async def client() -> None:
                    nonlocal sent, after_warmup
                    while sent < args.requests and time.monotonic() < deadline:
                        sent += 1
                        await timed_request(http, proxy.url,
                                            chat("warm", stream=sent % 2 == 0, max_tokens=1))
                        if sent == args.warmup:
                            after_warmup = rss(proxy.proc.pid)

                started = time.monotonic()
                await asyncio.gather(*(client() for _ in range(args.clients)))
                elapsed = time.monotonic() - started
                await asyncio.sleep(1)
                final = rss(proxy.proc.pid)
        finally:
            proxy.stop()
    results = {
        "idle_rss_mb": idle, "rss_after_warmup_mb": after_warmup, "rss_final_mb": final,
        "growth_after_warmup_mb": final - after_warmup, "growth_from_idle_mb": final - idle,
        "requests": sent, "seconds": elapsed,
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"idle RSS (no model loaded)          {idle:7.1f} MB (target <= 60 MB)")
    print(f"RSS after {args.warmup} warm-up requests   {after_warmup:7.1f} MB")
    print(f"RSS after {sent} requests           {final:7.1f} MB ({elapsed:.0f} s)")
    print(f"growth after warm-up                {final - after_warmup:7.1f} MB (target <= 5 MB)")
    print(f"growth from idle                    {final - idle:7.1f} MB")


if __name__ == "__main__":
    asyncio.run(main())
