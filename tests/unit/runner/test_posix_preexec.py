"""The pre-exec hook resolves everything in the parent: nothing is looked up after fork."""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the parent-death signal is Linux's prctl")


def test_the_hook_makes_no_library_lookup_when_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from llamarunner.runner import _posix

    hook = _posix.preexec_function()
    assert hook is not None and hook is _posix.preexec_function()  # built once

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("library lookup after fork")

    monkeypatch.setattr(ctypes.util, "find_library", forbidden)
    monkeypatch.setattr(ctypes, "CDLL", forbidden)
    # The forked child inherits the patched lookups: a lookup in the hook would fail there
    # ("Exception occurred in preexec_fn").
    result = subprocess.run([sys.executable, "-c", "print('ok')"], capture_output=True,
                            text=True, check=False, preexec_fn=hook)
    assert result.stdout.strip() == "ok"


def test_a_child_started_with_the_hook_runs() -> None:
    from llamarunner.runner import _posix

    result = subprocess.run([sys.executable, "-c", "print('ok')"], capture_output=True,
                            text=True, check=False, **_posix.spawn_options())
    assert (result.returncode, result.stdout.strip()) == (0, "ok")
