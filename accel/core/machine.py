"""What machine accel runs on: the device, its cores, caches and instruction set, and (once
calibrated) its peaks and the rates of the kernels the cures run.

`describe_machine()` reads static facts only and is cheap. Peak bandwidth and FLOP/s come from
calibration (accel.core.calibration), cached per machine and torch version.

The CPU's instruction set decides which lower precision pays: AVX2 + FMA alone runs bf16, fp16 and
`torch._int_mm` in software (about 1 GFLOP/s) while fbgemm's int8 kernels are fast; AVX-512 BF16
and VNNI, or AMX, run bf16 and int8 natively. `cpu_class` names that class in a word.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from pathlib import Path
from typing import Any

import torch

from accel._version import __version__
from accel.core.cure_kernels import BASELINE_KERNEL, KERNELS

# The /proc/cpuinfo flags (x86 `flags`, Arm `Features`) that decide which GEMM kernels run natively.
ISA_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "sve",
    "i8mm",
    "bf16",
)
# CPU classes, fastest first: the first whose flags (any of them) the CPU has names it.
CPU_CLASSES = (
    ("amx", ("amx_bf16", "amx_int8")),
    ("avx512_bf16", ("avx512_bf16",)),
    ("avx512_vnni", ("avx512_vnni",)),
    ("avx512", ("avx512f",)),
    ("avx2", ("avx2",)),
    ("sve", ("sve",)),
    ("neon", ("asimd",)),
)


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
    isa_flags: tuple[str, ...] = ()
    cpu_capability: str = ""  # torch.backends.cpu.get_cpu_capability(): the kernels torch dispatches to
    cure_gflops: dict[str, float] = dataclasses.field(default_factory=dict)  # accel.core.cure_kernels
    calibration_noisy: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "isa_flags", tuple(self.isa_flags))  # a JSON list reads back as a tuple

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def ridge_flops_per_byte(self) -> float | None:
        """Arithmetic intensity at which compute and bandwidth limits meet."""
        if not self.peak_gflops or not self.peak_bandwidth_gbs:
            return None
        return self.peak_gflops / self.peak_bandwidth_gbs

    @property
    def cpu_class(self) -> str:
        return classify_cpu(self.isa_flags, self.cpu_capability)

    def best_cure_gflops(self, dtype: str, cure: str | None = None) -> tuple[float, str] | None:
        """The fastest calibrated kernel a cure (`cure` only, where given) runs in `dtype` (fp32,
        bf16, fp16, int8), as (GFLOP/s, kernel name); None when calibration timed none (an older
        calibration, a GPU)."""
        rates = [(rate, name) for name, rate in self.cure_gflops.items() if name in KERNELS and rate > 0]
        best = [
            (rate, name)
            for rate, name in rates
            if KERNELS[name].dtype == dtype and KERNELS[name].cure and cure in (None, KERNELS[name].cure)
        ]
        return max(best, default=None)

    def cure_speedup(self, dtype: str, cure: str | None = None) -> tuple[float, str] | None:
        """How many times faster than eager float32 the fastest `dtype` cure kernel (of `cure`, where
        given) runs the same Linear-sized GEMM, as (ratio, kernel name); None when either was not
        calibrated."""
        best = self.best_cure_gflops(dtype, cure)
        baseline = self.cure_gflops.get(BASELINE_KERNEL)
        if best is None or not baseline:
            return None
        return best[0] / baseline, best[1]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["isa_flags"] = list(self.isa_flags)
        data["ridge_flops_per_byte"] = self.ridge_flops_per_byte
        data["cpu_class"] = self.cpu_class
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


def parse_isa_flags(cpuinfo: str) -> tuple[str, ...]:
    """The ISA_FLAGS the first processor in a /proc/cpuinfo text lists, in ISA_FLAGS order."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            present = set(value.split())
            return tuple(flag for flag in ISA_FLAGS if flag in present)
    return ()


# Classes torch's CPU capability caps x86 at, whatever /proc/cpuinfo lists: ATEN_CPU_CAPABILITY
# (with ONEDNN_MAX_CPU_ISA for oneDNN) restricts the kernels torch runs, which is the class a cure gets.
CAPABILITY_CAPS = {"AVX2": "avx2", "DEFAULT": "generic"}
X86_FLAGS = ("avx2", "avx512f")


def classify_cpu(isa_flags: tuple[str, ...], capability: str = "") -> str:
    """The CPU's effective class in a word ("avx2", "avx512_bf16", "amx"...): on x86 capped by
    torch's CPU capability (AVX2 under ATEN_CPU_CAPABILITY=avx2, even on an AVX-512 CPU), else from
    its flags, else from that capability (other OSes), else "generic"."""
    cap = CAPABILITY_CAPS.get(capability.upper()) if capability else None
    if cap is not None and any(flag in isa_flags for flag in X86_FLAGS):
        return cap
    for name, any_of in CPU_CLASSES:
        if any(flag in isa_flags for flag in any_of):
            return name
    if capability and capability.upper() != "DEFAULT":
        return capability.lower()
    return "generic"


def cpu_isa_flags() -> tuple[str, ...]:
    try:
        return parse_isa_flags(Path("/proc/cpuinfo").read_text())
    except OSError:
        return ()


def cpu_capability() -> str:
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return ""


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
        isa_flags=cpu_isa_flags(),
        cpu_capability=cpu_capability(),
    )
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        return dataclasses.replace(
            machine, device=f"cuda:{index}", device_name=props.name, memory_bytes=props.total_memory, cache_bytes={}
        )
    return machine
