"""Contention: when other work holds the machine's cores, the profile's times describe the queue for
a core, not the model (Whisper measured 56.9 s a batch under load at the default thread count, 1.68 s
at one thread).

The 1-minute load average is read as the profile starts, before its own threads add to it: it is the
other work. When that plus the run's threads exceeds the cores, the profile says so in a note, with the
numbers and what to do. The cores left idle by the other work are what more DataLoader workers can
really use: the loader's rate model (accel.profiling.rates) predicts from them, not from all cores.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from accel.core.calibration import busy_cores, load_average


@dataclasses.dataclass(frozen=True)
class Contention:
    """The machine's load when a profile began, and the threads the profiled run uses."""

    load_average: float
    cores: int
    threads: int
    # The cores other work kept busy over a short window as the profile began (core.calibration.busy_cores;
    # None without /proc/stat): the load now, where the 1-minute average lags.
    busy_cores: float | None = None

    def __post_init__(self) -> None:
        if self.cores < 1 or self.threads < 1 or self.load_average < 0:
            raise ValueError(f"Contention: cores {self.cores} and threads {self.threads} >= 1, load >= 0")

    @property
    def idle_cores(self) -> int:
        """Cores the other work leaves free (at least one: the run itself gets a core some of the time)."""
        return max(1, min(self.cores, round(self.cores - self.load_average)))

    @property
    def oversubscribed(self) -> bool:
        return self.load_average + self.threads > self.cores

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "idle_cores": self.idle_cores, "oversubscribed": self.oversubscribed}


def contention_now(cores: int, threads: int) -> Contention | None:
    """The load now, for a run of `threads` threads on `cores` cores; None where the OS has no load average."""
    load = load_average()
    return None if load is None else Contention(load, max(cores, 1), max(threads, 1), busy_cores())


def oversubscription_note(contention: Contention) -> str | None:
    """The note a profile carries when its threads had to queue for cores, or None."""
    if not contention.oversubscribed:
        return None
    fewer = max(1, contention.idle_cores)
    return (
        f"the machine is oversubscribed: load average {contention.load_average:.1f} from other work plus this "
        f"run's {contention.threads} thread{'s' if contention.threads != 1 else ''} on {contention.cores} cores, so "
        f"the times include waiting for a core; run with fewer threads (--threads {fewer} or OMP_NUM_THREADS={fewer}) "
        "or on a quieter machine"
    )


def fewer_threads_saving(extra: dict[str, Any]) -> float:
    """The share of a call that fewer intra-op threads (runtime.threads) is predicted to save where a
    profile found other work holding cores its team needs (its extra["contention"]); 0.0 elsewhere.
    The other work is the cores measured busy as the profile began, else the 1-minute load average.
    A team of T threads on I idle cores (at least one) waits at each barrier for a member the
    scheduler set aside, and is predicted to run at the idle cores' share of it: 1 - I / T, once
    the team is short of half a core or more. It ranks the candidate in the search; the keep
    decision is the measurement's. (Beside four burners on two cores, one thread saved eager
    BERT-base 48% and OpenVINO's int8 BERT-base 9-16%; its fp32 lost 16%, ORT's fused int8 19%.)"""
    found = extra.get("contention")
    if not isinstance(found, dict):
        return 0.0
    try:
        busy = found.get("busy_cores")
        other = float(found["load_average"] if busy is None else busy)
        cores, threads = int(found["cores"]), int(found["threads"])
    except (KeyError, TypeError, ValueError):
        return 0.0
    idle = max(1.0, cores - other)
    return 0.0 if idle >= threads - 0.5 else 1.0 - idle / threads


def idle_cores(extra: dict[str, Any], cores: int) -> int:
    """The cores a profile found idle (its extra["contention"]), else all `cores`."""
    found = extra.get("contention")
    if isinstance(found, dict) and isinstance(found.get("idle_cores"), int):
        return max(1, min(cores, found["idle_cores"]))
    return cores
