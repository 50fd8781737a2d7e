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
