"""Windows process-tree plumbing: a kill-on-close Job Object and CTRL_BREAK for stops."""

from __future__ import annotations

import ctypes
import signal
import subprocess
from typing import Any, Protocol

# Constants from the Win32 API (winnt.h / winbase.h).
JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x00002000
JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS = 9
PROCESS_SET_QUOTA = 0x0100
PROCESS_TERMINATE = 0x0001
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000


class _IoCounters(ctypes.Structure):
    _fields_ = [(name, ctypes.c_ulonglong) for name in (
        "ReadOperationCount", "WriteOperationCount", "OtherOperationCount",
        "ReadTransferCount", "WriteTransferCount", "OtherTransferCount",
    )]


class _BasicLimitInformation(ctypes.Structure):
    _fields_ = [
        ("PerProcessUserTimeLimit", ctypes.c_int64),
        ("PerJobUserTimeLimit", ctypes.c_int64),
        ("LimitFlags", ctypes.c_uint32),
        ("MinimumWorkingSetSize", ctypes.c_size_t),
        ("MaximumWorkingSetSize", ctypes.c_size_t),
        ("ActiveProcessLimit", ctypes.c_uint32),
        ("Affinity", ctypes.c_size_t),
        ("PriorityClass", ctypes.c_uint32),
        ("SchedulingClass", ctypes.c_uint32),
    ]


class ExtendedLimitInformation(ctypes.Structure):
    _fields_ = [
        ("BasicLimitInformation", _BasicLimitInformation),
        ("IoInfo", _IoCounters),
        ("ProcessMemoryLimit", ctypes.c_size_t),
        ("JobMemoryLimit", ctypes.c_size_t),
        ("PeakProcessMemoryUsed", ctypes.c_size_t),
        ("PeakJobMemoryUsed", ctypes.c_size_t),
    ]


class Kernel32(Protocol):
    """The slice of kernel32 we call; a seam so tests can check the calls on any OS."""

    def CreateJobObjectW(self, attributes: Any, name: Any) -> int: ...
    def SetInformationJobObject(
        self, job: int, info_class: int, info: Any, length: int
    ) -> int: ...
    def OpenProcess(self, access: int, inherit: bool, pid: int) -> int: ...
    def AssignProcessToJobObject(self, job: int, process: int) -> int: ...
    def CloseHandle(self, handle: int) -> int: ...


def _real_kernel32() -> Kernel32:
    return ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined, no-any-return]


class JobObject:
    """A Job Object that kills every process in it when its last handle closes.

    The app holds the only handle, so when the app dies for any reason (crash, Task
    Manager), Windows closes the handle and takes llama-server down with it.
    """

    def __init__(self, kernel32: Kernel32 | None = None) -> None:
        self._k32 = kernel32 if kernel32 is not None else _real_kernel32()
        self.handle = self._k32.CreateJobObjectW(None, None)
        if not self.handle:
            raise OSError("CreateJobObjectW failed")
        info = ExtendedLimitInformation()
        info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        ok = self._k32.SetInformationJobObject(
            self.handle,
            JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS,
            ctypes.byref(info),
            ctypes.sizeof(info),
        )
        if not ok:
            raise OSError("SetInformationJobObject failed")

    def assign(self, pid: int) -> None:
        process = self._k32.OpenProcess(PROCESS_SET_QUOTA | PROCESS_TERMINATE, False, pid)
        if not process:
            raise OSError(f"OpenProcess({pid}) failed")
        try:
            if not self._k32.AssignProcessToJobObject(self.handle, process):
                raise OSError(f"AssignProcessToJobObject({pid}) failed")
        finally:
            self._k32.CloseHandle(process)


_job: JobObject | None = None


def shared_job() -> JobObject:
    """One job for the whole app; created on first use."""
    global _job
    if _job is None:
        _job = JobObject()
    return _job


def spawn_options() -> dict[str, Any]:
    # A new process group lets CTRL_BREAK_EVENT reach only the child; no console window.
    return {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW}


def after_spawn(pid: int) -> None:
    shared_job().assign(pid)


def terminate(process: subprocess.Popen[bytes] | Any) -> None:
    """Polite stop: CTRL_BREAK to the child's console process group."""
    process.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
