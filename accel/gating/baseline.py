"""Stored baselines: what `accel gate --baseline` compares against.

A baseline (schema `accel.baseline/1`) holds the per-replicate timings and peak memory of one
`accel bench` run, the machine-independent counts, and the environment fingerprint they were
measured in. It is written atomically and only on request (`accel bench --save-baseline`, or the
reviewed copy the gate proposes when counts dropped): a failed or warned gate run never replaces
it. Reading refuses, with a message saying which, a file that is not JSON (corrupt), JSON that is
not an accel baseline (foreign), and a baseline of another schema version (incompatible).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from pathlib import Path
from typing import Any

from accel.core.errors import BaselineError
from accel.core.io import write_json_atomic
from accel.gating.bench import BenchResult, Replicate, replicate_values

BASELINE_KIND = "accel.baseline"
BASELINE_VERSION = 1
BASELINE_SCHEMA = f"{BASELINE_KIND}/{BASELINE_VERSION}"


@dataclasses.dataclass(frozen=True)
class Baseline:
    target: str
    environment: dict[str, Any]
    replicates: tuple[Replicate, ...] = ()
    counts: dict[str, Any] | None = None
    created_utc: str = ""
    schema: str = BASELINE_SCHEMA

    def values(self, metric: str) -> list[float]:
        return replicate_values(self.replicates, metric)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "target": self.target,
            "created_utc": self.created_utc,
            "environment": self.environment,
            "counts": self.counts,
            "replicates": [r.to_dict() for r in self.replicates],
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "baseline") -> "Baseline":
        if not isinstance(data, dict) or not str(data.get("schema", "")).startswith(BASELINE_KIND + "/"):
            found = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise BaselineError(
                f"{where} is not an accel baseline (schema: {found!r}, expected {BASELINE_SCHEMA!r})",
                "pass a file written by accel bench --save-baseline",
            )
        if data["schema"] != BASELINE_SCHEMA:
            raise BaselineError(
                f"{where} has schema {data['schema']!r}; this accel reads {BASELINE_SCHEMA!r}",
                "re-create it with accel bench FILE --save-baseline PATH",
            )
        replicates = data.get("replicates")
        counts = data.get("counts")
        if (
            not isinstance(data.get("target"), str)
            or not isinstance(data.get("environment"), dict)
            or not isinstance(replicates, list)
            or not (counts is None or isinstance(counts, dict))
        ):
            raise BaselineError(
                f"{where} is corrupt: it needs target, environment, replicates and counts",
                "re-create it with accel bench FILE --save-baseline PATH",
            )
        try:
            parsed = tuple(Replicate.from_dict(r) for r in replicates)
        except (TypeError, ValueError) as exc:
            raise BaselineError(
                f"{where} is corrupt: a replicate is invalid ({exc})",
                "re-create it with accel bench FILE --save-baseline PATH",
            ) from exc
        if not parsed and not counts:
            raise BaselineError(
                f"{where} is corrupt: it holds neither replicates nor counts",
                "re-create it with accel bench FILE --save-baseline PATH",
            )
        return cls(
            target=data["target"],
            environment=data["environment"],
            replicates=parsed,
            counts=counts,
            created_utc=str(data.get("created_utc", "")),
        )


def from_bench(result: BenchResult) -> Baseline:
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return Baseline(
        target=result.target,
        environment=result.environment,
        replicates=result.replicates,
        counts=result.counts,
        created_utc=now,
    )


def save_baseline(path: str | os.PathLike, baseline: Baseline) -> Path:
    """Write a baseline atomically (a reader never sees half a file)."""
    target = Path(path)
    write_json_atomic(target, baseline.to_dict())
    return target


def load_baseline(path: str | os.PathLike) -> Baseline:
    file = Path(path)
    if not file.is_file():
        raise BaselineError(f"no baseline at {file}", "create one with accel bench FILE --save-baseline PATH")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BaselineError(
            f"{file} is corrupt: not valid JSON ({exc})",
            "restore it from version control or re-create it with accel bench --save-baseline",
        ) from exc
    return Baseline.from_dict(data, where=str(file))


def proposed_path(path: str | os.PathLike) -> Path:
    """Where the gate writes an updated baseline for review, next to the real one."""
    file = Path(path)
    return file.with_name(file.stem + ".proposed" + (file.suffix or ".json"))


def with_counts(baseline: Baseline, counts: dict[str, Any]) -> Baseline:
    """The same baseline with new counts: what a reviewer accepts after an intended drop."""
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return dataclasses.replace(baseline, counts=dict(counts), created_utc=now)
