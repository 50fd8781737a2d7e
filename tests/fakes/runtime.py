"""Makes the fake llama-server look like a runtime binary that config can point at.

POSIX only: the wrapper is a ``#!/bin/sh`` script; Windows is not supported.
"""

from __future__ import annotations

import shlex
import stat
import sys
from pathlib import Path

FAKE_SERVER = Path(__file__).resolve().with_name("fake_llama_server.py")

__all__ = ["FAKE_SERVER", "fake_runtime"]


def fake_runtime(tmp_dir: Path, name: str = "llama-server") -> Path:
    """Write an executable ``tmp_dir/name`` that runs the fake server and return its path.

    The script ``exec``s the interpreter, so the pid the runner spawned *is* the fake
    server: signals, process groups and exit codes behave as with the real binary.
    """
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    wrapper = tmp_dir / name
    wrapper.write_text(
        "#!/bin/sh\n"
        f'exec {shlex.quote(sys.executable)} {shlex.quote(str(FAKE_SERVER))} "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return wrapper
