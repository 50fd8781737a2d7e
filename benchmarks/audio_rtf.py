"""Speech to text through the app vs the engine called directly, on the same file, in one run.

Real-time factor (RTF) = seconds spent / seconds of audio. The direct side loads the same
Whisper model with faster-whisper in this process, as the app's worker does (CPU, int8,
the engine's own thread count), and transcribes the file; the app side posts the same
file to `llamarunner --headless` (`POST /v1/audio/transcriptions`), whose worker keeps the
model loaded. The two alternate, so noise hits both alike. Reported:

- warm: median RTF of each and the app's overhead (target ≤ 5 %);
- cold: the first transcription after the app starts (worker spawn, model load, the
  transcription), next to the engine's own load time plus a warm direct transcription.

Usage: python benchmarks/audio_rtf.py [--model DIR] [--rounds N] [--seconds S] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.proxy_overhead import Proxy  # noqa: E402

from llamarunner import demo  # noqa: E402
from llamarunner.runtime.resolver import resolve_runtime  # noqa: E402

# Distinct sentences: repeated ones make Whisper fall back to sampling at higher
# temperatures (its compression-ratio check), whose random retries make timings noisy.
PARAGRAPH = (
    "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins "
    "with a single step. The weather today is cold and windy, with rain in the evening. "
    "Please remember to bring your notebook to the meeting on Thursday morning. "
    "Our team finished the report two days before the deadline. The museum opens at nine "
    "and closes at five in the afternoon. She planted tomatoes, beans and carrots in the "
    "garden behind the house. Trains to the city leave every fifteen minutes from the "
    "second platform. He learned to play the piano when he was seven years old. "
    "The library will be closed for repairs until the end of the month."
)


def make_speech(folder: Path, seconds: float) -> tuple[Path, float]:
    """About `seconds` of espeak-ng speech at 16 kHz mono; returns (path, its duration)."""
    for tool in ("espeak-ng", "sox", "soxi"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing (Debian: apt-get install espeak-ng sox)")
    sentences = [part.strip() + "." for part in PARAGRAPH.split(".") if part.strip()]
    text = " ".join(sentences[: max(1, round(seconds / 3))])
    raw, clip = folder / "raw.wav", folder / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", str(clip)], check=True)
    duration = float(subprocess.run(["soxi", "-D", str(clip)], check=True,
                                    capture_output=True, text=True).stdout)
    return clip, duration


class DirectEngine:
    """faster-whisper in this process, set up as the worker sets it up."""

    def __init__(self, model_dir: Path) -> None:
        from faster_whisper import WhisperModel

        loaded: list[Any] = []

        def load() -> None:
            loaded.append(WhisperModel(str(model_dir), device="cpu", compute_type="int8",
                                       cpu_threads=0, local_files_only=True))

        # Loaded in a thread of its own, as the worker loads it. It matters: on this
        # machine a model constructed on the main thread transcribes about 2.7 times
        # slower (CTranslate2 1 core busy instead of 2), which would flatter the app.
        started = time.perf_counter()
        thread = threading.Thread(target=load)
        thread.start()
        thread.join()
        self.model = loaded[0]
        self.load_seconds = time.perf_counter() - started

    def transcribe(self, clip: Path) -> tuple[float, str]:
        started = time.perf_counter()
        segments, _info = self.model.transcribe(str(clip))
        text = "".join(segment.text for segment in segments).strip()
        return time.perf_counter() - started, text


async def through_app(http: aiohttp.ClientSession, url: str, clip: Path,
                      audio: bytes) -> tuple[float, str]:
    form = aiohttp.FormData()
    form.add_field("model", "whisper")
    form.add_field("file", audio, filename=clip.name, content_type="audio/wav")
    started = time.perf_counter()
    async with http.post(f"{url}/v1/audio/transcriptions", data=form) as resp:
        body = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"the app answered {resp.status}: {body}")
    return time.perf_counter() - started, str(body["text"])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    model_dir = Path(args.model) if args.model else demo.cached_demo_file("whisper-tiny.en")
    with tempfile.TemporaryDirectory(prefix="audio-rtf-") as scratch:
        workdir = Path(scratch)
        clip, duration = make_speech(workdir, args.seconds)
        audio = clip.read_bytes()
        print(f"clip: {duration:.1f} s of speech; model: {model_dir}", flush=True)
        proxy = Proxy(resolve_runtime("llama-server"), model_dir, workdir / "app",
                      models={"whisper": {"path": str(model_dir), "ttl": -1}}, slots=1)
        try:
            async with aiohttp.ClientSession(trust_env=False) as http:
                await proxy.wait_listening(http)
                cold, _ = await through_app(http, proxy.url, clip, audio)
                direct = DirectEngine(model_dir)
                first_direct, _ = direct.transcribe(clip)  # the engine's own warm-up
                direct_times: list[float] = []
                app_times: list[float] = []
                _, app_text = await through_app(http, proxy.url, clip, audio)
                _, direct_text = direct.transcribe(clip)
                if app_text != direct_text:  # not the same work: the ratio would mislead
                    print(f"note: the texts differ\n  app:    {app_text}\n  direct: "
                          f"{direct_text}", flush=True)
                for round_no in range(args.rounds):
                    # Alternate who goes first, so a slow moment hits both sides alike.
                    if round_no % 2:
                        app_times.append((await through_app(http, proxy.url, clip, audio))[0])
                        direct_times.append(direct.transcribe(clip)[0])
                    else:
                        direct_times.append(direct.transcribe(clip)[0])
                        app_times.append((await through_app(http, proxy.url, clip, audio))[0])
        finally:
            proxy.stop()
    direct_rtf = statistics.median(direct_times) / duration
    app_rtf = statistics.median(app_times) / duration
    return {
        "audio_seconds": duration,
        "rounds": args.rounds,
        "direct_rtf": direct_rtf,
        "app_rtf": app_rtf,
        "overhead": app_rtf / direct_rtf - 1,
        "cold_app_seconds": cold,
        "cold_engine_seconds": direct.load_seconds + statistics.median(direct_times),
        "first_direct_seconds": first_direct,
    }


def report(result: dict[str, Any]) -> None:
    print(f"warm, median of {result['rounds']} rounds on {result['audio_seconds']:.1f} s "
          "of audio:")
    print(f"  engine direct   RTF {result['direct_rtf']:.4f}")
    print(f"  through the app RTF {result['app_rtf']:.4f}")
    print(f"  app overhead    {result['overhead'] * 100:+.1f} % (target <= 5 %)")
    print("cold (first transcription after the app starts):")
    print(f"  through the app {result['cold_app_seconds']:.2f} s (worker start, load, "
          "transcription)")
    print(f"  engine direct   {result['cold_engine_seconds']:.2f} s (load + one warm "
          "transcription)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a CTranslate2 Whisper folder (default: the "
                        "whisper-tiny.en demo model)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="about how long the test speech is")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        report(result)


if __name__ == "__main__":
    main()
