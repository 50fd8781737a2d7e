"""Real test speech: espeak-ng says a sentence, sox resamples it to 16 kHz mono."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

# tiny.en hears espeak's voice well enough to get these words right; tests match a few
# words, never the whole sentence.
SENTENCE = "Hello world. The quick brown fox jumps over the lazy dog."
HEARD_WORDS = ("quick", "brown", "fox", "lazy")


def make_speech(folder: Path, text: str = SENTENCE, *, suffix: str = ".wav") -> Path:
    """Write `text` as speech into `folder`; the suffix picks the container (sox decides)."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is missing: the README's test command installs it")
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / "espeak.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "130", "-w", str(raw), text],
                   check=True, capture_output=True)
    target = folder / f"speech{suffix}"
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", str(target)],
                   check=True, capture_output=True)
    return target


def reencode(source: Path, target: Path, codec: str) -> Path:
    """`source` re-encoded with PyAV (FFmpeg) into `target`, whose suffix picks the
    container: for the formats sox cannot write (m4a with AAC, webm with Opus)."""
    import av  # faster-whisper's decoder; the audio extra brings it

    resampler = av.AudioResampler(format="fltp" if codec == "aac" else "s16",
                                  layout="mono", rate=16000)
    with av.open(str(source)) as given, av.open(str(target), "w") as made:
        stream = made.add_stream(codec, rate=16000)
        stream.layout = "mono"
        for frame in given.decode(audio=0):
            for converted in resampler.resample(frame):
                for packet in stream.encode(converted):
                    made.mux(packet)
        for packet in stream.encode(None):
            made.mux(packet)
    return target
