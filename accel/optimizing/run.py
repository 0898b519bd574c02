"""`accel.optimize`: load a pipeline, search a recipe's candidates, write the lock and the report.

Data flows one way: load -> (profile) -> engine -> lock + `accel.optimize/1` JSON. Rendering is the
CLI's job. A file that loads as a training script (no pipeline in it), or any .py file with
`as_script`, gets the DataLoader-settings search of accel.optimizing.script instead.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence, overload

from accel.core.calibration import calibrated_machine
from accel.core.errors import PipelineLoadError, RecipeError
from accel.core.io import copy_file_atomic, write_json_atomic
from accel.core.loading import Script, check_file, is_plain_script
from accel.core.machine import describe_machine
from accel.core.measure import now, thread_count
from accel.core.pipeline import Pipeline
from accel.core.profiler_notes import quietly
from accel.core.progress import stamped
from accel.optimizing.lock import LOCK_NAME, artifact_files, write_lock
from accel.optimizing.locking import build_lock
from accel.optimizing.recipes import Recipe, get_recipe

if TYPE_CHECKING:  # the engine imports every optimizer: only when optimize() runs
    from accel.optimizing.script import ScriptOptimizeResult
    from accel.optimizing.search.engine import EngineResult

OPTIMIZE_SCHEMA = "accel.optimize/1"
# Share of the budget the diagnosis may take when a recipe's rules need findings.
PROFILE_SHARE = 0.15
MAX_PROFILE_SECONDS = 20.0
# The smallest budget at which a recipe whose rules need no findings is profiled anyway, to order
# its candidates by the savings the profile predicts (the primary finding's cure first): below it,
# the diagnosis would take the time of a candidate.
MIN_BUDGET_TO_PROFILE_FOR_ORDER = 60.0

Progress = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class OptimizeResult:
    name: str
    recipe: str
    result: "EngineResult"
    lock_path: Path | None = None
    profile_primary: str | None = None
    profile_seconds: float = 0.0
    # optimizer -> the speed-up the profile's findings predict for it (1 / (1 - predicted saving))
    predicted_speedup: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def pipeline(self) -> Pipeline:
        """The optimized pipeline (the baseline when nothing helped)."""
        return self.result.pipeline

    @property
    def partial(self) -> bool:
        """Whether the search was interrupted (Ctrl-C, SIGTERM) before it finished."""
        return self.result.partial

    @property
    def steps(self) -> tuple:
        return self.result.steps

    @property
    def speedup(self) -> float:
        return self.result.speedup

    def __repr__(self) -> str:  # short: the engine result holds whole models
        r = self.result
        kept = [c.optimizer for c in r.choices]
        return (
            f"OptimizeResult(name={self.name!r}, recipe={self.recipe!r}, speedup={r.speedup:.2f}x, kept={kept}, "
            f"steps={len(r.steps)}, lock_path={str(self.lock_path) if self.lock_path else None!r})"
        )

    def to_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            "schema": OPTIMIZE_SCHEMA,
            "target": self.name,
            "recipe": self.recipe,
            "objective": r.target,
            "threads": r.threads,
            "baseline": r.baseline,
            "final": r.final,
            "speedup": r.speedup,
            "speedup_ci": list(r.speedup_ci),
            "memory_ratio": r.memory_ratio,
            "message": r.message,
            "kept": [c.optimizer for c in r.choices],
            "steps": [s.to_dict() for s in r.steps],
            "lock_path": str(self.lock_path) if self.lock_path else None,
            "profile": {"primary": self.profile_primary, "seconds": self.profile_seconds},
            "predicted_speedup": self.predicted_speedup,
            "elapsed_seconds": r.elapsed_seconds + self.profile_seconds,
            "partial": r.partial,
        }


@overload
def optimize(
    target: Pipeline,
    recipe: str | os.PathLike | Recipe = ...,
    *,
    out_dir: str | os.PathLike | None = ...,
    json_path: str | os.PathLike | None = ...,
    budget_seconds: float | None = ...,
    threads: int | None = ...,
    passes: int | None = ...,
    progress: Progress = ...,
    args: tuple[str, ...] = ...,
    as_script: Literal[False] = ...,
    only: Sequence[str] | None = ...,
    skip: Sequence[str] | None = ...,
) -> OptimizeResult: ...


@overload
def optimize(
    target: str | os.PathLike,
    recipe: str | os.PathLike | Recipe = ...,
    *,
    out_dir: str | os.PathLike | None = ...,
    json_path: str | os.PathLike | None = ...,
    budget_seconds: float | None = ...,
    threads: int | None = ...,
    passes: int | None = ...,
    progress: Progress = ...,
    args: tuple[str, ...] = ...,
    as_script: Literal[True],
    only: Sequence[str] | None = ...,
    skip: Sequence[str] | None = ...,
) -> "ScriptOptimizeResult": ...


@overload
def optimize(
    target: str | os.PathLike,
    recipe: str | os.PathLike | Recipe = ...,
    *,
    out_dir: str | os.PathLike | None = ...,
    json_path: str | os.PathLike | None = ...,
    budget_seconds: float | None = ...,
    threads: int | None = ...,
    passes: int | None = ...,
    progress: Progress = ...,
    args: tuple[str, ...] = ...,
    as_script: bool = ...,
    only: Sequence[str] | None = ...,
    skip: Sequence[str] | None = ...,
) -> "OptimizeResult | ScriptOptimizeResult": ...


@quietly
def optimize(
    target: str | os.PathLike | Pipeline,
    recipe: str | os.PathLike | Recipe = "default",
    *,
    out_dir: str | os.PathLike | None = None,
    json_path: str | os.PathLike | None = None,
    budget_seconds: float | None = None,
    threads: int | None = None,
    passes: int | None = None,
    progress: Progress = lambda message: None,
    args: tuple[str, ...] = (),
    as_script: bool = False,
    only: Sequence[str] | None = None,
    skip: Sequence[str] | None = None,
) -> "OptimizeResult | ScriptOptimizeResult":
    """Make a pipeline faster by measurement; with `out_dir`, write accel.lock.yaml and artifacts there.
    `passes`: how many passes the optimized pipeline will run, over which one-time costs (export,
    compile, cache prebuild) are counted [default: the recipe's keep.passes]. `only`, `skip`:
    optimizer names (each item may hold several, comma-separated) to try alone, or to leave out,
    of the recipe's candidates; an unknown name is an error listing the valid ones.

    The search ends within `budget_seconds` (the recipe's by default) plus a little: calibration,
    the diagnosis and every trial are inside it (see accel.optimizing.search.budgeting).

    A training script (a file that defines no pipeline, or any .py file with `as_script`) runs as
    `__main__` with `args`, and its DataLoader settings are searched (a ScriptOptimizeResult)."""
    from accel.optimizing.lock import load
    from accel.optimizing.optimizers import Context
    from accel.optimizing.search.engine import Selection, run_engine
    from accel.profiling.run import check_budget

    check_budget(budget_seconds)
    recipe = recipe if isinstance(recipe, Recipe) else get_recipe(recipe)
    selection = Selection.of(only, skip)
    script = None if isinstance(target, Pipeline) else script_target(Path(target), tuple(args), as_script)
    if script is not None:
        if selection.only or selection.skip:
            raise RecipeError(
                "--only and --skip pick a pipeline's optimizers; a training script's search tries DataLoader settings",
                "drop --only/--skip for a script",
            )
        from accel.optimizing.script import optimize_script

        found = optimize_script(
            script, recipe, out_dir=out_dir, budget_seconds=budget_seconds, threads=threads, progress=progress
        )
        if json_path is not None:
            write_json_atomic(json_path, found.to_dict())
        return found
    recipe = with_passes(recipe, passes)
    path = None if isinstance(target, Pipeline) else Path(target)
    loading = now()
    pipeline = target if isinstance(target, Pipeline) else load(Path(target))
    load_seconds = now() - loading
    budget = float(budget_seconds if budget_seconds is not None else recipe.budget_seconds)
    started = now()  # loading the pipeline is start-up; calibration and the diagnosis are in the budget
    progress = stamped(progress, started, budget)
    with thread_count(threads), tempfile.TemporaryDirectory(prefix="accel-optimize-") as workdir:
        # Calibrated at the thread count the candidates are timed at; the optimizers read it from the context.
        progress("calibrating the machine (once per machine and torch version)")
        machine = calibrated_machine(describe_machine())
        report, profile_seconds = (
            diagnose(pipeline, machine, budget, progress) if profiles(recipe, budget, selection) else (None, 0.0)
        )
        primary = report.primary if report is not None else None
        context = Context(
            machine=machine, workdir=Path(workdir), report=report, pipeline_path=path, load_seconds=load_seconds
        )
        result = run_engine(
            pipeline,
            recipe,
            context,
            budget_seconds=max(budget - (now() - started), 1.0),
            progress=progress,
            report=report,
            selection=selection,
        )
        lock_path = None
        if out_dir is not None and path is not None:
            lock_path = _write_lock(path, pipeline, result, Path(workdir), Path(out_dir))
    outcome = OptimizeResult(
        name=pipeline.name,
        recipe=recipe.name,
        result=result,
        lock_path=lock_path,
        profile_primary=primary,
        profile_seconds=profile_seconds,
        predicted_speedup=predicted_speedups(report),
    )
    if json_path is not None:
        write_json_atomic(json_path, outcome.to_dict())
    return outcome


def _write_lock(path: Path, pipeline: Pipeline, result: "EngineResult", workdir: Path, out: Path) -> Path:
    """The lock in `out`, with the artifacts its entries need copied there from `workdir`."""
    out.mkdir(parents=True, exist_ok=True)
    for name in artifact_files(workdir, result.lock_entries()):  # an ONNX file's external weights too
        copy_file_atomic(workdir / name, out / name)  # a symlink planted in out/ is replaced, not written through
    return write_lock(out / LOCK_NAME, build_lock(path, result, pipeline=pipeline, folder=out))


def script_target(path: Path, args: tuple[str, ...], as_script: bool) -> Script | None:
    """The Script to tune when the file is one (read from its syntax tree, never imported), else None."""
    file = check_file(path)
    if as_script and file.suffix != ".py":
        raise PipelineLoadError(f"{file} is not a Python script", "--script runs a .py file as __main__")
    if as_script or (file.suffix == ".py" and is_plain_script(file)):
        return Script(path=file, args=args)
    if args:
        raise PipelineLoadError(
            f"arguments after -- are for a script, and {file} defines a pipeline",
            "drop them, or pass --script to run the file as a training script",
        )
    return None


def with_passes(recipe: Recipe, passes: int | None) -> Recipe:
    """The recipe with its one-time costs spread over `passes` passes, when given."""
    if passes is None:
        return recipe
    if passes < 1:
        raise RecipeError(f"passes must be >= 1, got {passes}", "pass the number of runs the pipeline will serve")
    return dataclasses.replace(recipe, keep=dataclasses.replace(recipe.keep, passes=passes))


def diagnose(pipeline: Pipeline, machine: Any, budget: float, progress: Progress) -> tuple[Any, float]:
    """The baseline's profile, within its share of the budget, and the seconds it took."""
    from accel.profiling.run import profile_pipeline

    progress("diagnosing (accel profile)")
    began = now()
    report = profile_pipeline(
        pipeline, machine=machine, budget_seconds=min(MAX_PROFILE_SECONDS, budget * PROFILE_SHARE), progress=progress
    )
    return report, now() - began


def profiles(recipe: Recipe, budget: float, selection: Any) -> bool:
    """Whether the search starts with a diagnosis: when a rule needs findings, or (unless the recipe
    keeps its own order or --only names a single candidate) to order the candidates by what the
    profile predicts, where the budget is large enough for both."""
    if recipe.needs_profile:
        return True
    if recipe.order != "by_prediction" or len(selection.only) == 1:
        return False
    return budget >= MIN_BUDGET_TO_PROFILE_FOR_ORDER


def predicted_speedups(report: Any) -> dict[str, float]:
    """Per optimizer, the largest speed-up a finding predicts for it: 1 / (1 - predicted saving)."""
    from accel.optimizing.search.budgeting import predicted_savings

    return {cure: 1.0 / max(1.0 - saving, 1e-9) for cure, saving in predicted_savings(report).items()}
