"""GPU readers against a fake NVML module and a fake sysfs tree; statuses when nothing is there."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from llamarunner.monitor import (
    AmdSysfsReader,
    GpuSample,
    NvmlReader,
    Sampler,
    detect_gpu_readers,
    gpu_status,
)
from llamarunner.monitor import gpu as gpu_module

GIB = 1024**3


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


class NVMLError_LibraryNotFound(NVMLError):  # pynvml's own spelling
    def __init__(self) -> None:
        super().__init__(12)


class NVMLError_NotSupported(NVMLError):
    def __init__(self) -> None:
        super().__init__(3)


class FakeNvml:
    """The slice of pynvml the reader uses; each device is a dict of what it answers."""

    NVMLError = NVMLError

    def __init__(self, devices: list[dict[str, Any]], init_error: Exception | None = None):
        self.devices = devices
        self.init_error = init_error
        self.initialised = 0
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict[str, Any]:
        device = self.devices[index]
        if device.get("lost"):
            raise NVMLError(15)  # NVML_ERROR_GPU_IS_LOST
        return device

    def nvmlDeviceGetName(self, handle: dict[str, Any]) -> str | bytes:
        return handle["name"]  # type: ignore[no-any-return]

    def nvmlDeviceGetUtilizationRates(self, handle: dict[str, Any]) -> SimpleNamespace:
        if handle.get("util") is None:
            raise NVMLError_NotSupported()
        return SimpleNamespace(gpu=handle["util"], memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: dict[str, Any]) -> SimpleNamespace:
        if handle.get("used") is None:
            raise NVMLError_NotSupported()
        return SimpleNamespace(used=handle["used"], total=handle["total"], free=0)


def test_nvml_reads_every_gpu() -> None:
    fake = FakeNvml([
        {"name": "NVIDIA H100", "util": 87, "used": 40 * GIB, "total": 80 * GIB},
        {"name": b"Tesla T4", "util": 0, "used": 300 * 1024**2, "total": 16 * GIB},
    ])
    reader = NvmlReader(nvml=fake)
    reader.open()
    assert reader.available
    assert reader.status == "NVIDIA: 2 GPUs via NVML"
    assert reader.read() == [
        GpuSample(0, "NVIDIA H100", 87.0, 40 * GIB, 80 * GIB, "NVIDIA"),
        GpuSample(1, "Tesla T4", 0.0, 300 * 1024**2, 16 * GIB, "NVIDIA"),
    ]
    reader.close()
    assert fake.shutdowns == 1 and not reader.available and reader.read() == []
    reader.open()  # closing is not final: the next sampler run probes again
    assert fake.initialised == 2 and len(reader.read()) == 2


def test_nvml_unsupported_readings_stay_unknown() -> None:
    fake = FakeNvml([
        {"name": "Jetson", "util": None, "used": None},
        {"name": "gone", "lost": True},
    ])
    reader = NvmlReader(nvml=fake)
    reader.open()
    jetson, lost = reader.read()
    assert (jetson.utilization_percent, jetson.vram_used, jetson.vram_total) == (None, None, None)
    assert lost.index == 1 and "unreadable" in lost.name
    assert (lost.utilization_percent, lost.vram_used) == (None, None)
    assert reader.status == "NVIDIA: 2 GPUs via NVML"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (NVMLError_LibraryNotFound(), "no NVIDIA driver (NVML not found)"),
        (NVMLError(12), "no NVIDIA driver (NVML not found)"),
        (NVMLError(9), "no NVIDIA driver loaded (NVML: driver not loaded)"),
        (NVMLError(999), "NVIDIA: NVML failed to start (NVML error 999)"),
    ],
)
def test_nvml_init_failure_says_why(error: Exception, status: str) -> None:
    fake = FakeNvml([], init_error=error)
    reader = NvmlReader(nvml=fake)
    reader.open()
    assert not reader.available
    assert reader.status == status
    assert reader.read() == []
    reader.close()
    assert fake.shutdowns == 0  # never initialised, so never shut down


def test_nvml_without_gpus_releases_the_library() -> None:
    fake = FakeNvml([])
    reader = NvmlReader(nvml=fake)
    reader.open()
    assert reader.status == "no NVIDIA GPU (NVML sees none)"
    assert not reader.available and fake.shutdowns == 1


def test_fake_module_without_error_class_is_handled() -> None:
    def fail() -> None:
        raise RuntimeError("boom")

    module = SimpleNamespace(nvmlInit=fail)
    reader = NvmlReader(nvml=module)
    reader.open()
    assert reader.status == "NVIDIA: NVML failed to start (boom)"


@pytest.mark.parametrize(
    ("driver", "status"),
    [
        (False, "no NVIDIA driver (NVML not found)"),
        (True, "NVIDIA driver found, but GPU readings need nvidia-ml-py "
               "(pip install 'llamarunner[gpu]')"),
    ],
)
def test_nvml_without_pynvml(monkeypatch: pytest.MonkeyPatch, driver: bool, status: str) -> None:
    monkeypatch.setattr(gpu_module, "import_pynvml", lambda: None)
    monkeypatch.setattr(gpu_module, "nvidia_driver_present", lambda: driver)
    reader = NvmlReader()
    reader.open()
    assert (reader.available, reader.status) == (False, status)


def _card(root: Path, name: str, vendor: str, **files: str) -> Path:
    device = root / name / "device"
    device.mkdir(parents=True)
    (device / "vendor").write_text(vendor + "\n")
    for file, text in files.items():
        path = device / file.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return device


def test_amd_sysfs_tree(tmp_path: Path) -> None:
    root = tmp_path / "drm"
    _card(root, "card0", "0x1002", device="0x744c", gpu_busy_percent="42",
          mem_info_vram_used=str(3 * GIB), mem_info_vram_total=str(24 * GIB))
    _card(root, "card0-DP-1", "0x1002")  # a connector, not a GPU
    _card(root, "renderD128", "0x1002")  # the same GPU's render node
    _card(root, "card1", "0x8086", gpu_busy_percent="5")  # Intel: not ours
    _card(root, "card2", "0x1002", product_name="AMD Radeon Pro W7900",
          mem_info_vram_total=str(48 * GIB), gpu_busy_percent="not a number")
    _card(root, "card10", "0x1002", gpu_busy_percent="99", power__runtime_status="suspended",
          mem_info_vram_used="0", mem_info_vram_total=str(8 * GIB))
    reader = AmdSysfsReader(root)
    reader.open()
    assert reader.status == "AMD: 3 GPUs via sysfs"
    assert reader.read() == [
        GpuSample(0, "AMD GPU 0x744c", 42.0, 3 * GIB, 24 * GIB, "AMD"),
        # Unreadable or missing files are unknown, never 0.
        GpuSample(2, "AMD Radeon Pro W7900", None, None, 48 * GIB, "AMD"),
        # A runtime-suspended GPU is idle; its busy file is not read (that would wake it).
        GpuSample(10, "AMD GPU", 0.0, 0, 8 * GIB, "AMD"),
    ]


def test_amd_file_vanishing_between_reads(tmp_path: Path) -> None:
    device = _card(tmp_path, "card0", "0x1002", gpu_busy_percent="10",
                   mem_info_vram_used="1", mem_info_vram_total="2")
    reader = AmdSysfsReader(tmp_path)
    reader.open()
    (device / "gpu_busy_percent").unlink()
    assert reader.read()[0].utilization_percent is None


@pytest.mark.parametrize("make_root", [False, True])
def test_amd_nothing_found(tmp_path: Path, make_root: bool) -> None:
    root = tmp_path / "drm"
    if make_root:
        _card(root, "card0", "0x10de")  # an NVIDIA card only
    reader = AmdSysfsReader(root)
    reader.open()
    assert not reader.available and reader.read() == []
    assert reader.status == f"no AMD GPU in {root}"


def test_gpu_status_joins_reasons_or_names_what_was_found(tmp_path: Path) -> None:
    nvidia = NvmlReader(nvml=FakeNvml([], init_error=NVMLError_LibraryNotFound()))
    amd = AmdSysfsReader(tmp_path / "drm")
    for reader in (nvidia, amd):
        reader.open()
    assert gpu_status([nvidia, amd]) == (
        f"no NVIDIA driver (NVML not found); no AMD GPU in {tmp_path / 'drm'}"
    )
    _card(tmp_path / "drm", "card0", "0x1002", gpu_busy_percent="1")
    amd.open()
    assert gpu_status([nvidia, amd]) == "AMD: 1 GPU via sysfs"
    assert gpu_status([]) == "GPU readings are off"


def test_detect_probes_every_reader_for_this_machine() -> None:
    readers = detect_gpu_readers()
    try:
        assert readers and all("not probed" not in reader.status for reader in readers)
        assert gpu_status(readers)
    finally:
        for reader in readers:
            reader.close()


def test_sampler_reports_gpus_and_status() -> None:
    fake = FakeNvml([{"name": "NVIDIA L4", "util": 12, "used": GIB, "total": 24 * GIB}])
    sampler = Sampler(dict, gpu_readers=[NvmlReader(nvml=fake)])
    sample = sampler.sample()
    assert sample.gpus == [GpuSample(0, "NVIDIA L4", 12.0, GIB, 24 * GIB, "NVIDIA")]
    assert sample.gpus[0].key == "NVIDIA:0"
    assert sample.gpu_status == "NVIDIA: 1 GPU via NVML"
    sampler.close()
    assert fake.shutdowns == 1


def test_sampler_without_gpus_says_why(tmp_path: Path) -> None:
    fake = FakeNvml([], init_error=NVMLError_LibraryNotFound())
    sampler = Sampler(dict, gpu_readers=[NvmlReader(nvml=fake), AmdSysfsReader(tmp_path)])
    sample = sampler.sample()
    assert sample.gpus == []
    assert sample.gpu_status == f"no NVIDIA driver (NVML not found); no AMD GPU in {tmp_path}"
    assert Sampler(dict, gpu_readers=[]).sample().gpu_status == "GPU readings are off"
