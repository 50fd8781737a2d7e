"""What a pull costs on top of the download itself: hashing, partial file, progress events.

A loopback registry stand-in (tests/support/registry_standin.py) serves one blob of
`--megabytes` MB. Each round downloads it twice, alternating the order: with a plain
aiohttp GET written to a file (the baseline), and as a pull through the app's ModelStore
(registry manifest, sha256 checked, moved into the store). A third measure pulls it with
the connection cut halfway and resumed with Range: the resume's extra cost. Reported as
MB/s and as ratios against the same run's baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "app"))

from tests.support.registry_standin import StandIn  # noqa: E402

from llamarunner.store.model_store import ModelStore  # noqa: E402


async def plain_download(url: str, target: Path) -> float:
    start = time.perf_counter()
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        with open(target, "wb") as file:  # noqa: ASYNC230 - the baseline is the naive way
            async for chunk in resp.content.iter_chunked(1 << 20):
                file.write(chunk)
    return time.perf_counter() - start


async def pull(folder: Path, name: str) -> float:
    store = ModelStore(folder, retry_delay=0.0)
    start = time.perf_counter()
    try:
        await store.pull(name, insecure=True).wait()
    finally:
        await store.close()
    return time.perf_counter() - start


async def main(args: argparse.Namespace) -> dict[str, Any]:
    blob = os.urandom(args.megabytes * 1_000_000)
    stand_in = await StandIn().start()
    manifest = stand_in.add_model("library/big", "latest", blob)
    digest = manifest["layers"][0]["digest"]
    url = f"{stand_in.base_url}/v2/library/big/blobs/{digest}"
    name = f"{stand_in.host}/library/big"
    plain: list[float] = []
    pulled: list[float] = []
    resumed: list[float] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for round_no in range(args.rounds):
                work = Path(tmp) / str(round_no)
                work.mkdir()
                order = ("plain", "pull") if round_no % 2 == 0 else ("pull", "plain")
                for kind in order:
                    if kind == "plain":
                        plain.append(await plain_download(url, work / "plain.bin"))
                    else:
                        pulled.append(await pull(work / "store", name))
                stand_in.faults.cut[digest] = (len(blob) // 2, 1)
                resumed.append(await pull(work / "cut", name))
    finally:
        await stand_in.close()
    mb = args.megabytes
    base, through, cut = (statistics.median(x) for x in (plain, pulled, resumed))
    return {
        "megabytes": mb, "rounds": args.rounds,
        "plain_MBps": round(mb / base, 1), "pull_MBps": round(mb / through, 1),
        "pull_vs_plain": round(base / through, 3),
        "cut_and_resumed_MBps": round(mb / cut, 1),
        "resume_vs_pull": round(through / cut, 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    result = asyncio.run(main(parser.parse_args()))
    if parser.parse_args().json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>22}: {value}")
