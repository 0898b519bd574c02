"""The ranks' results merged into one job: a JobTimeline, then the report's `ranks` section.

The report of a multi-rank job is an `accel.profile/1` report in mode "multirank": the findings of
the whole job (every rank's loop added up, as script mode sees one loop) plus the straggler finding,
`ranks` (one summary per rank) and `multirank` (where the data came from, how clocks were aligned).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from accel.core.errors import PipelineError
from accel.profiling.ranks import CollectiveCall, JobTimeline, RankStep, RankTimeline
from accel.profiling.report import Report

TORCHRUN_ALIGNMENT = "barrier, then all_gather of each rank's clock, after init_process_group"


def job_from_results(results: list[dict[str, Any]], script: Path) -> JobTimeline:
    """The job the ranks of a torchrun launch wrote; a script that never joined a group is an error."""
    if not any(r["initialized"] for r in results):
        raise PipelineError(
            f"{script.name} never initialized a process group, so its ranks ran alone and never met at a collective",
            "call torch.distributed.init_process_group() (gloo on CPU, nccl on GPUs) before the training loop; "
            "to profile one process, run accel profile without --nproc-per-node",
        )
    return JobTimeline(
        ranks=tuple(
            RankTimeline(
                rank=r["rank"],
                steps=tuple(RankStep(s, e, w, n) for s, e, w, n in r["steps"]),
                calls=tuple(CollectiveCall(name, a, d) for name, a, d in r["calls"]),
                host=r["host"],
                num_workers=r["num_workers"],
            )
            for r in results
        ),
        source="torchrun",
        clock_alignment=TORCHRUN_ALIGNMENT,
    )


def multirank_report(report: Report, job: JobTimeline, details: dict[str, Any]) -> Report:
    """The report with its mode, the per-rank summaries and the job's details in place of the job."""
    # The ranks' loops added up stand in for one loop only for the analyzers: the table shows ranks.
    extra = {k: v for k, v in report.extra.items() if k not in ("multirank", "end_to_end")}
    summaries = [t.summary() for t in job.ranks]
    extra["ranks"] = [s.to_dict() for s in summaries]
    extra["multirank"] = {
        "source": job.source,
        "world_size": job.world_size,
        "clock_alignment": job.clock_alignment,
        **details,
    }
    wall = max(s.seconds for s in summaries)
    samples_per_s = sum(s.samples for s in summaries) / wall if wall > 0 else 0.0
    return dataclasses.replace(report, mode="multirank", extra=extra, samples_per_s=samples_per_s)
