"""What a search did with each candidate: one Step per candidate, for the engine and the script
search alike, written to the `accel.optimize/1` JSON as `steps`."""

from __future__ import annotations

import dataclasses
from typing import Any

from accel.optimizing.decision import Verdict


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

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["verdict"] = Verdict(self.verdict).value
        data["speedup_ci"] = list(self.speedup_ci) if self.speedup_ci else None
        data["composed_with"] = list(self.composed_with)
        return data
