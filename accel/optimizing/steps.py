"""What a search did with each candidate: one Step per candidate, for the engine and the script
search alike, written to the `accel.optimize/1` JSON as `steps`."""

from __future__ import annotations

import dataclasses
from typing import Any

from accel.optimizing.decision import Cause, Verdict


@dataclasses.dataclass(frozen=True)
class Step:
    """What happened to one candidate."""

    optimizer: str
    params: dict[str, Any]
    rule: str
    verdict: Verdict
    reason: str
    speedup: float | None = None
    speedup_ci: tuple[float, float] | None = None
    memory_ratio: float | None = None
    fidelity: dict[str, Any] | None = None
    setup_seconds: float = 0.0
    first_call_seconds: float | None = None
    composed_with: tuple[str, ...] = ()
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Why a measured candidate was kept or reverted (its decision's cause), when it was measured.
    cause: Cause | None = None
    # The speed-up the profile predicted for this optimizer (1 / (1 - predicted saving)), when it did.
    predicted_speedup: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["verdict"] = Verdict(self.verdict).value
        data["speedup_ci"] = list(self.speedup_ci) if self.speedup_ci else None
        data["composed_with"] = list(self.composed_with)
        data["cause"] = Cause(self.cause).value if self.cause is not None else None
        return data
