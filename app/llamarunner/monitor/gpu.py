"""GPU readers: NVIDIA through NVML (nvidia-ml-py), AMD through Linux sysfs; unknown stays None."""

from __future__ import annotations

import contextlib
import ctypes.util
import importlib
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

AMD_VENDOR_ID = "0x1002"
DEFAULT_DRM_ROOT = Path("/sys/class/drm")

# pynvml's error codes for "no library" and "no driver" (nvml.h NVML_ERROR_*), used when an
# exception's class name does not say it (older nvidia-ml-py raises plain NVMLError).
_NVML_ERROR_DRIVER_NOT_LOADED = 9
_NVML_ERROR_LIBRARY_NOT_FOUND = 12


@dataclass(frozen=True)
class GpuSample:
    """One GPU at one moment. None means "could not be read", never "zero"."""

    index: int
    name: str
    utilization_percent: float | None
    vram_used: int | None
    vram_total: int | None
    vendor: str = ""

    @property
    def key(self) -> str:
        """A stable identity across samples (NVIDIA 0 and AMD card0 may both exist)."""
        return f"{self.vendor}:{self.index}"


class GpuReader(Protocol):
    """Reads one vendor's GPUs. `open` probes (may be slow: NVML init), `read` is cheap."""

    vendor: str

    @property
    def available(self) -> bool:
        """True when `open` found at least one GPU of this vendor."""
        ...

    @property
    def status(self) -> str:
        """What was found ("NVIDIA: 1 GPU via NVML") or why nothing was."""
        ...

    def open(self) -> None: ...

    def read(self) -> list[GpuSample]: ...

    def close(self) -> None: ...


# ---- NVIDIA ----------------------------------------------------------------------------


def import_pynvml() -> Any | None:
    """The `pynvml` module of nvidia-ml-py, or None when it is not installed."""
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        return None


def nvidia_driver_present() -> bool:
    """A cheap guess whether an NVIDIA driver is installed, to word the status usefully."""
    if sys.platform.startswith("linux"):
        return Path("/proc/driver/nvidia/version").exists()
    if sys.platform == "win32":
        # The driver puts nvml.dll into System32, which is on PATH.
        return ctypes.util.find_library("nvml") is not None
    return False  # macOS has had no NVIDIA driver for years


def _text(value: str | bytes) -> str:
    # nvidia-ml-py < 11.515 returned bytes for names; newer versions return str.
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _nvml_init_failure(exc: BaseException) -> str:
    kind = type(exc).__name__
    code = getattr(exc, "value", None)
    if "LibraryNotFound" in kind or code == _NVML_ERROR_LIBRARY_NOT_FOUND:
        return "no NVIDIA driver (NVML not found)"
    if "DriverNotLoaded" in kind or code == _NVML_ERROR_DRIVER_NOT_LOADED:
        return "no NVIDIA driver loaded (NVML: driver not loaded)"
    return f"NVIDIA: NVML failed to start ({exc or kind})"


class NvmlReader:
    """NVIDIA GPUs through NVML. `nvml` is the pynvml module; tests pass a fake object."""

    vendor = "NVIDIA"

    def __init__(self, nvml: Any | None = None) -> None:
        self._injected = nvml
        self._nvml: Any | None = None  # set while NVML is initialised
        self._errors: tuple[type[BaseException], ...] = (Exception,)
        self._devices: list[tuple[int, Any | None, str]] = []  # (index, handle, name)
        self._status = "NVIDIA: not probed yet"

    @property
    def available(self) -> bool:
        return bool(self._devices)

    @property
    def status(self) -> str:
        return self._status

    def open(self) -> None:
        if self._nvml is not None:
            return
        module = self._injected if self._injected is not None else import_pynvml()
        if module is None:
            self._status = (
                "NVIDIA driver found, but GPU readings need nvidia-ml-py "
                "(pip install 'llamarunner[gpu]')"
                if nvidia_driver_present()
                else "no NVIDIA driver (NVML not found)"
            )
            return
        error_type = getattr(module, "NVMLError", None)
        # Catch only NVML's own errors when the module names them, so that a real bug
        # in this reader still shows; a module without the class gets the broad net.
        self._errors = (error_type, OSError) if isinstance(error_type, type) else (Exception,)
        try:
            module.nvmlInit()
        except self._errors as exc:
            self._status = _nvml_init_failure(exc)
            log.debug("NVML init failed: %r", exc)
            return
        self._nvml = module
        try:
            count = int(module.nvmlDeviceGetCount())
        except self._errors as exc:
            self._status = f"NVIDIA: NVML could not count GPUs ({exc})"
            self.close()
            return
        self._devices = [self._device(module, index) for index in range(count)]
        if not self._devices:
            self._status = "no NVIDIA GPU (NVML sees none)"
            self.close()
            return
        plural = "" if count == 1 else "s"
        self._status = f"NVIDIA: {count} GPU{plural} via NVML"

    def _device(self, module: Any, index: int) -> tuple[int, Any | None, str]:
        try:
            handle = module.nvmlDeviceGetHandleByIndex(index)
        except self._errors as exc:
            # A GPU that fell off the bus still counts; its readings stay unknown.
            return index, None, f"NVIDIA GPU {index} (unreadable: {exc})"
        try:
            name = _text(module.nvmlDeviceGetName(handle))
        except self._errors:
            name = f"NVIDIA GPU {index}"
        return index, handle, name

    def read(self) -> list[GpuSample]:
        module = self._nvml
        if module is None:
            return []
        samples = []
        for index, handle, name in self._devices:
            utilization: float | None = None
            used: int | None = None
            total: int | None = None
            if handle is not None:
                # NOT_SUPPORTED on some boards: the value stays unknown, not 0.
                with contextlib.suppress(*self._errors):
                    utilization = float(module.nvmlDeviceGetUtilizationRates(handle).gpu)
                try:
                    memory = module.nvmlDeviceGetMemoryInfo(handle)
                    used, total = int(memory.used), int(memory.total)
                except self._errors:
                    pass  # unified-memory parts (Jetson, GH200) do not report VRAM
            samples.append(GpuSample(index, name, utilization, used, total, self.vendor))
        return samples

    def close(self) -> None:
        module, self._nvml = self._nvml, None
        self._devices = []
        if module is not None:
            try:
                module.nvmlShutdown()
            except self._errors as exc:
                log.debug("NVML shutdown failed: %r", exc)


# ---- AMD -------------------------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        # EACCES, or EBUSY/EPERM from amdgpu while the device is being reset: unknown.
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


_CARD = re.compile(r"card(\d+)")


@dataclass(frozen=True)
class _AmdCard:
    index: int
    device: Path
    name: str


class AmdSysfsReader:
    """AMD GPUs through the amdgpu driver's files under /sys/class/drm/card*/device."""

    vendor = "AMD"

    def __init__(self, root: Path = DEFAULT_DRM_ROOT) -> None:
        self._root = root
        self._cards: list[_AmdCard] = []
        self._status = "AMD: not probed yet"

    @property
    def available(self) -> bool:
        return bool(self._cards)

    @property
    def status(self) -> str:
        return self._status

    def open(self) -> None:
        cards = []
        try:
            entries = list(self._root.iterdir())
        except OSError:
            entries = []
        for entry in entries:
            # Only cardN: cardN-DP-1 and friends are connectors, renderD* duplicates cards.
            match = _CARD.fullmatch(entry.name)
            if match is None:
                continue
            device = entry / "device"
            if _read(device / "vendor") != AMD_VENDOR_ID:
                continue
            name = _read(device / "product_name") or f"AMD GPU {_read(device / 'device') or ''}"
            cards.append(_AmdCard(int(match.group(1)), device, name.strip()))
        self._cards = sorted(cards, key=lambda card: card.index)
        if not self._cards:
            self._status = f"no AMD GPU in {self._root}"
        else:
            count = len(self._cards)
            self._status = f"AMD: {count} GPU{'' if count == 1 else 's'} via sysfs"

    def read(self) -> list[GpuSample]:
        samples = []
        for card in self._cards:
            busy: float | None
            if _read(card.device / "power" / "runtime_status") == "suspended":
                # Reading gpu_busy_percent wakes a runtime-suspended dGPU (and keeps it
                # awake when polled every second); a sleeping GPU is idle, so 0 is a fact.
                busy = 0.0
            else:
                value = _read_int(card.device / "gpu_busy_percent")
                busy = float(value) if value is not None else None
            samples.append(
                GpuSample(
                    card.index,
                    card.name,
                    busy,
                    _read_int(card.device / "mem_info_vram_used"),
                    _read_int(card.device / "mem_info_vram_total"),
                    self.vendor,
                )
            )
        return samples

    def close(self) -> None:
        self._cards = []


# ---- detection -------------------------------------------------------------------------


def default_gpu_readers() -> list[GpuReader]:
    """The readers that make sense on this OS, not yet probed."""
    readers: list[GpuReader] = [NvmlReader()]
    if sys.platform.startswith("linux"):
        readers.append(AmdSysfsReader())
    return readers


def detect_gpu_readers() -> list[GpuReader]:
    """Probe every reader; all are returned so the unavailable ones can say why (gpu_status)."""
    readers = default_gpu_readers()
    for reader in readers:
        reader.open()
    return readers


def gpu_status(readers: Sequence[GpuReader]) -> str:
    """One line for the user: what was found, or every reason nothing was."""
    if not readers:
        return "GPU readings are off"
    found = [reader.status for reader in readers if reader.available]
    return "; ".join(found or [reader.status for reader in readers])
