"""The desktop front end: Qt (PySide6) views over the same Service the headless mode runs."""

from __future__ import annotations

import ctypes
import sys

from PySide6.QtCore import QObject, Signal

# Far more references than any run can drop (one per signal emitted: 2**40 is a million
# emissions a second for twelve days).
_SPARE_REFERENCES = 1 << 40


class _Probe(QObject):
    ping = Signal()


def _emit_drops_a_reference_to_true() -> bool:
    before = sys.getrefcount(True)
    probe = _Probe()
    for _ in range(4):
        probe.ping.emit()
    return sys.getrefcount(True) <= before - 4


def _guard_bool_reference_counts() -> None:
    """Survive PySide6 6.12.0's SignalInstance.emit() dropping a reference to True.

    emit() (and disconnect()) return Py_True without taking a new reference, so every
    signal emitted from Python takes one reference away from True. On Python 3.11 True is
    an ordinary object: after a few thousand emissions (llama-server log lines, proxied
    requests through qasync's call_soon_threadsafe) its count reaches zero and the
    interpreter aborts with "bool_dealloc: deallocating True or False". Python 3.12 made
    True and False immortal; when the bug is present this does the same on 3.11 by giving
    them spare references. Checked by behaviour, so a fixed PySide6 is left alone.
    """
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return  # immortal already, or not CPython's object layout
    if hasattr(sys, "gettotalrefcount"):
        return  # a debug build: its object header is different
    if not _emit_drops_a_reference_to_true():
        return
    for obj in (True, False):
        # ob_refcnt is the first field of every object in a release build of CPython.
        refcount = ctypes.c_ssize_t.from_address(id(obj))
        if refcount.value < _SPARE_REFERENCES:
            refcount.value += _SPARE_REFERENCES


_guard_bool_reference_counts()
