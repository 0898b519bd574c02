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

from accel.core.calibration import load_average


@dataclasses.dataclass(frozen=True)
class Contention:
    """The machine's load when a profile began, and the threads the profiled run uses."""

    load_average: float
    cores: int
    threads: int

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
    return None if load is None else Contention(load, max(cores, 1), max(threads, 1))


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
    profile found the other work alone holding every core (its extra["contention"]: load average at
    or above the cores); 0.0 elsewhere. There a team of T threads waits at each barrier for a member
    the scheduler set aside, and is predicted to run at one core's share of the team: 1 - 1 / T.
    It ranks the candidate in the search; the keep decision is the measurement's. (Beside four burners
    on two cores, one thread saved eager BERT-base 48% and OpenVINO's int8 BERT-base 16%; its fp32
    lost 16%. At a load of 1-2 on the same two cores, two threads won for each.)"""
    found = extra.get("contention")
    if not isinstance(found, dict):
        return 0.0
    try:
        load, cores, threads = float(found["load_average"]), int(found["cores"]), int(found["threads"])
    except (KeyError, TypeError, ValueError):
        return 0.0
    return 0.0 if load < cores or threads < 2 else 1.0 - 1.0 / threads


def idle_cores(extra: dict[str, Any], cores: int) -> int:
    """The cores a profile found idle (its extra["contention"]), else all `cores`."""
    found = extra.get("contention")
    if isinstance(found, dict) and isinstance(found.get("idle_cores"), int):
        return max(1, min(cores, found["idle_cores"]))
    return cores
