"""Stored baselines: what `accel gate --baseline` compares against.

A baseline (schema `accel.baseline/2`) holds several runs (each the per-replicate timings
and peak memory of one `accel bench` invocation: `--runs K` takes K in a row, `--merge` appends
this job's run to a baseline kept over CI history, the last MAX_RUNS kept), the machine-independent
counts with the torch version and device they were counted with (`counts_fingerprint`), and the
environment fingerprint the timings were measured in. The spread between runs is what a stored
timing verdict is judged against: the spread between CI jobs, not between processes of one job.

It is written atomically and only on request (`accel bench --save-baseline`, or the reviewed copy
the gate proposes when counts dropped): a failed or warned gate run never replaces it. Reading
accepts version 1 (one run) and refuses, with a message saying which, a file that is not JSON
(corrupt), JSON that is not an accel baseline (foreign), and an unknown schema version.
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
from accel.gating.bench import BenchResult, replicate_values
from accel.gating.replicate import Replicate

BASELINE_KIND = "accel.baseline"
BASELINE_VERSION = 2
BASELINE_SCHEMA = f"{BASELINE_KIND}/{BASELINE_VERSION}"
READABLE_SCHEMAS = (f"{BASELINE_KIND}/1", BASELINE_SCHEMA)
# Runs a merged baseline keeps (newest last): about a month of daily CI jobs, recent enough to
# describe the runners as they are now.
MAX_RUNS = 20
# What counts depend on: op decompositions and attention backends change with torch and device.
COUNTS_FINGERPRINT = ("torch_version", "device", "gpu")


def counts_fingerprint(environment: dict[str, Any]) -> dict[str, Any]:
    return {key: environment.get(key) for key in COUNTS_FINGERPRINT if environment.get(key) is not None}


@dataclasses.dataclass(frozen=True)
class Baseline:
    target: str
    environment: dict[str, Any]
    runs: tuple[tuple[Replicate, ...], ...] = ()
    counts: dict[str, Any] | None = None
    created_utc: str = ""
    counts_fingerprint: dict[str, Any] = dataclasses.field(default_factory=dict)
    schema: str = BASELINE_SCHEMA

    @property
    def replicates(self) -> tuple[Replicate, ...]:
        return tuple(r for run in self.runs for r in run)

    def values(self, metric: str) -> list[float]:
        return replicate_values(self.replicates, metric)

    def run_values(self, metric: str) -> list[list[float]]:
        """Per run, the per-replicate values of a timed metric."""
        return [replicate_values(run, metric) for run in self.runs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "target": self.target,
            "created_utc": self.created_utc,
            "environment": self.environment,
            "counts": self.counts,
            "counts_fingerprint": self.counts_fingerprint,
            "runs": [[r.to_dict() for r in run] for run in self.runs],
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "baseline") -> "Baseline":
        if not isinstance(data, dict) or not str(data.get("schema", "")).startswith(BASELINE_KIND + "/"):
            found = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise BaselineError(
                f"{where} is not an accel baseline (schema: {found!r}, expected {BASELINE_SCHEMA!r})",
                "pass a file written by accel bench --save-baseline",
            )
        if data["schema"] not in READABLE_SCHEMAS:
            raise BaselineError(
                f"{where} has schema {data['schema']!r}; this accel reads {' and '.join(READABLE_SCHEMAS)}",
                "re-create it with accel bench FILE --save-baseline PATH",
            )
        version_one = data["schema"] != BASELINE_SCHEMA
        runs = [data.get("replicates")] if version_one else data.get("runs")
        counts = data.get("counts")
        if (
            not isinstance(data.get("target"), str)
            or not isinstance(data.get("environment"), dict)
            or not isinstance(runs, list)
            or not all(isinstance(run, list) for run in runs)
            or not (counts is None or isinstance(counts, dict))
        ):
            raise BaselineError(
                f"{where} is corrupt: it needs target, environment, runs and counts",
                "re-create it with accel bench FILE --save-baseline PATH",
            )
        try:
            parsed = tuple(tuple(Replicate.from_dict(r) for r in run) for run in runs if run)
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
        fingerprint = data.get("counts_fingerprint")
        return cls(
            target=data["target"],
            environment=data["environment"],
            runs=parsed,
            counts=counts,
            created_utc=str(data.get("created_utc", "")),
            # Version 1 kept no fingerprint of its own: its environment says where it counted.
            counts_fingerprint=dict(fingerprint)
            if isinstance(fingerprint, dict)
            else counts_fingerprint(data["environment"]),
        )


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def from_bench(*results: BenchResult) -> Baseline:
    """A baseline of one or more bench runs (the same file, one after another)."""
    if not results:
        raise ValueError("from_bench needs at least one BenchResult")
    last = results[-1]
    return Baseline(
        target=last.target,
        environment=last.environment,
        runs=tuple(r.replicates for r in results if r.replicates),
        counts=last.counts,
        created_utc=_utc_now(),
        counts_fingerprint=counts_fingerprint(last.environment) if last.counts else {},
    )


def merged(stored: Baseline, new: Baseline, max_runs: int = MAX_RUNS) -> Baseline:
    """`stored` with the runs of `new` appended (the newest `max_runs` kept).

    Runs from another environment, or counts that changed, are refused: both mean the baseline
    should be re-created after review, not silently extended."""
    from accel.gating.replicate import environment_mismatch

    mismatch = environment_mismatch(stored.environment, new.environment)
    if mismatch:
        raise BaselineError(
            f"cannot merge runs from another environment into the baseline ({'; '.join(mismatch)})",
            "re-baseline: accel bench FILE --save-baseline PATH --runs 3 (without --merge)",
        )
    if stored.counts and new.counts and stored.counts != new.counts:
        changed = sorted(k for k in set(stored.counts) | set(new.counts) if stored.counts.get(k) != new.counts.get(k))
        raise BaselineError(
            f"cannot merge: the counts differ from the baseline's ({', '.join(changed)})",
            "gate the change first (accel gate FILE --baseline PATH), then re-create the baseline",
        )
    return dataclasses.replace(
        stored,
        runs=(stored.runs + new.runs)[-max_runs:],
        counts=stored.counts or new.counts,
        counts_fingerprint=stored.counts_fingerprint or new.counts_fingerprint,
        created_utc=_utc_now(),
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


def with_counts(baseline: Baseline, counts: dict[str, Any], environment: dict[str, Any] | None = None) -> Baseline:
    """The same baseline with new counts: what a reviewer accepts after an intended drop."""
    fingerprint = counts_fingerprint(environment) if environment else baseline.counts_fingerprint
    return dataclasses.replace(baseline, counts=dict(counts), counts_fingerprint=fingerprint, created_utc=_utc_now())
