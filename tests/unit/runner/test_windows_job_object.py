"""The Windows Job Object calls, checked through the kernel32 seam on any OS."""

from __future__ import annotations

import ctypes
from typing import Any

import pytest

from llamarunner.runner import _windows


class FakeKernel32:
    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.fail = fail

    def _record(self, name: str, *args: Any) -> int:
        self.calls.append((name, args))
        return 0 if name == self.fail else 77

    def CreateJobObjectW(self, attributes: Any, name: Any) -> int:
        return self._record("CreateJobObjectW", attributes, name)

    def SetInformationJobObject(self, job: int, cls: int, info: Any, length: int) -> int:
        self.limit_flags = ctypes.cast(
            info, ctypes.POINTER(_windows.ExtendedLimitInformation)
        ).contents.BasicLimitInformation.LimitFlags
        return self._record("SetInformationJobObject", job, cls, length)

    def OpenProcess(self, access: int, inherit: bool, pid: int) -> int:
        return self._record("OpenProcess", access, inherit, pid)

    def AssignProcessToJobObject(self, job: int, process: int) -> int:
        return self._record("AssignProcessToJobObject", job, process)

    def CloseHandle(self, handle: int) -> int:
        return self._record("CloseHandle", handle)


def test_job_is_created_with_kill_on_close() -> None:
    k32 = FakeKernel32()
    _windows.JobObject(k32)
    names = [name for name, _ in k32.calls]
    assert names == ["CreateJobObjectW", "SetInformationJobObject"]
    assert k32.calls[1][1][1] == _windows.JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS
    assert k32.calls[1][1][2] == ctypes.sizeof(_windows.ExtendedLimitInformation)
    assert k32.limit_flags == _windows.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE


def test_assign_opens_assigns_and_closes_the_process_handle() -> None:
    k32 = FakeKernel32()
    job = _windows.JobObject(k32)
    job.assign(1234)
    assert [name for name, _ in k32.calls[2:]] == [
        "OpenProcess", "AssignProcessToJobObject", "CloseHandle"]
    access, inherit, pid = k32.calls[2][1]
    assert pid == 1234 and inherit is False
    assert access & _windows.PROCESS_SET_QUOTA and access & _windows.PROCESS_TERMINATE


@pytest.mark.parametrize("failing", ["CreateJobObjectW", "SetInformationJobObject"])
def test_failures_raise(failing: str) -> None:
    with pytest.raises(OSError):
        _windows.JobObject(FakeKernel32(fail=failing))


def test_failed_assign_still_closes_the_handle() -> None:
    k32 = FakeKernel32(fail="AssignProcessToJobObject")
    job = _windows.JobObject(k32)
    with pytest.raises(OSError):
        job.assign(5)
    assert k32.calls[-1][0] == "CloseHandle"


def test_children_get_their_own_group_and_no_console() -> None:
    flags = _windows.spawn_options()["creationflags"]
    assert flags & _windows.CREATE_NEW_PROCESS_GROUP and flags & _windows.CREATE_NO_WINDOW
