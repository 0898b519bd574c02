"""What machine accel runs on: the device, its cores and caches, and (once calibrated) its peaks.

`describe_machine()` reads static facts only and is cheap. Peak bandwidth and FLOP/s come from
calibration (accel.core.calibration), cached per machine and torch version.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from pathlib import Path
from typing import Any

import torch

from accel._version import __version__


@dataclasses.dataclass(frozen=True)
class Machine:
    device: str
    device_name: str
    cores: int
    threads: int
    torch_version: str
    accel_version: str
    memory_bytes: int | None = None
    cache_bytes: dict[str, int] = dataclasses.field(default_factory=dict)
    peak_bandwidth_gbs: float | None = None
    peak_gflops: float | None = None
    peak_gflops_by_dtype: dict[str, float] = dataclasses.field(default_factory=dict)
    calibrated: bool = False

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def ridge_flops_per_byte(self) -> float | None:
        """Arithmetic intensity at which compute and bandwidth limits meet."""
        if not self.peak_gflops or not self.peak_bandwidth_gbs:
            return None
        return self.peak_gflops / self.peak_bandwidth_gbs

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["ridge_flops_per_byte"] = self.ridge_flops_per_byte
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Machine":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_cache_bytes() -> dict[str, int]:
    """Cache sizes per level from sysfs (L1d, L2, L3), when Linux exposes them."""
    caches: dict[str, int] = {}
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    if not root.exists():
        return caches
    for index in sorted(root.glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        multiplier = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(size[-1], 1)
        value = int(size.rstrip("KMG")) * multiplier
        caches[f"L{level}" + ("d" if kind == "Data" else "")] = value
    return caches


def total_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def describe_machine(device: str | None = None) -> Machine:
    """Static facts about the device accel will measure on; no calibration."""
    device = device or default_device()
    machine = Machine(
        device="cpu",
        device_name=cpu_model_name(),
        cores=usable_cores(),
        threads=torch.get_num_threads(),
        torch_version=torch.__version__,
        accel_version=__version__,
        memory_bytes=total_memory_bytes(),
        cache_bytes=cpu_cache_bytes(),
    )
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        return dataclasses.replace(
            machine, device=f"cuda:{index}", device_name=props.name, memory_bytes=props.total_memory, cache_bytes={}
        )
    return machine
