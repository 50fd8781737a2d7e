"""RAM/CPU/GPU sampling of the system and the runners; unknown stays unknown (None), never 0."""

from .gpu import (
    AmdSysfsReader,
    GpuReader,
    GpuSample,
    NvmlReader,
    default_gpu_readers,
    detect_gpu_readers,
    gpu_status,
)
from .history import MetricsHistory, Point
from .sampler import PidsProvider, RunnerUsage, Sample, Sampler, pids_from_manager
from .service_monitor import SampleSubscriber, ServiceMonitor

__all__ = [
    "AmdSysfsReader",
    "GpuReader",
    "GpuSample",
    "MetricsHistory",
    "NvmlReader",
    "PidsProvider",
    "Point",
    "RunnerUsage",
    "Sample",
    "SampleSubscriber",
    "Sampler",
    "ServiceMonitor",
    "default_gpu_readers",
    "detect_gpu_readers",
    "gpu_status",
    "pids_from_manager",
]
