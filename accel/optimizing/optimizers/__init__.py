"""Optimizers: one module per optimization, each registered by name.

An optimizer is an object with
- `name`, `description`, `Config` (a frozen dataclass of its parameters, validated in __post_init__),
  `target` ("latency", "throughput" or "memory": what it tries to improve);
- `applicable(pipeline, context) -> str | None`: None when it applies, else the reason it does not;
- `apply(pipeline, config, context) -> Applied`: a NEW pipeline (the input is never mutated), the
  JSON-able state the lock file records, and the one-time cost it paid (export, calibration...);
- `restore(pipeline, config, state, lock_dir) -> Pipeline`: re-apply from a lock entry in production
  (by default `apply` again; optimizers with artifacts load them from `lock_dir` instead).

State kept across passes (an in-memory cache) must be resettable: a pipeline-level callable
(forward_wrapper, decode, transform, collate, batch_plan) with a `reset_state()` method is reset by
the optimize engine before each timed throughput pass, so a pass is measured cold. (Additive.)

Every module in this package is imported here, which registers it in OPTIMIZERS.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
import pkgutil
from pathlib import Path
from typing import Any, ClassVar, Iterable

from accel.core.errors import AccelError, RecipeError
from accel.core.machine import Machine
from accel.core.pipeline import Pipeline
from accel.core.registry import Registry


@dataclasses.dataclass(frozen=True)
class Context:
    """What an optimizer may look at: the machine, the baseline's profile, where to put artifacts."""

    machine: Machine
    workdir: Path
    report: Any = None  # accel.profiling.report.Report of the baseline, when one was made
    pipeline_path: Path | None = None
    # Seconds the pipeline file took to load (build its model): what each fresh process pays again.
    load_seconds: float | None = None


@dataclasses.dataclass(frozen=True)
class Applied:
    pipeline: Pipeline
    state: dict[str, Any] = dataclasses.field(default_factory=dict)
    setup_seconds: float = 0.0
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)
    # What re-applying the lock costs each time a process starts (an ONNX session built from the
    # saved file), when less than `setup_seconds` (the export is paid once, at optimize time).
    # None: all of the setup recurs (a compile, a cache filled again).
    recurring_seconds: float | None = None

    @property
    def per_process_seconds(self) -> float:
        return self.setup_seconds if self.recurring_seconds is None else self.recurring_seconds


class NotApplicable(AccelError):
    """Raised by `apply` when only the applied result shows that the optimizer does not apply to
    this pipeline (an export that holds at the example's shape only): a search reports the
    candidate as not applicable, with this message as the reason, instead of as failed."""


@dataclasses.dataclass(frozen=True)
class NoConfig:
    """For optimizers without parameters."""


class Optimizer(abc.ABC):
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Config: ClassVar[type] = NoConfig
    # Optimizers sharing a slot are alternatives (say, every way of replacing the model): the engine
    # keeps at most one per slot and composes slots in SLOT_ORDER. "" means a slot of its own name.
    # (Added for the recipe engine; optional, additive.)
    slot: ClassVar[str] = ""
    # A setting that holds for a whole process (malloc's thresholds): one process cannot hold it for
    # one side of an A/B only, so it is timed in fresh processes (accel.optimizing.fresh).
    process_wide: ClassVar[bool] = False
    # The finding kinds it cures: the analyzers' recommendations are checked against it (accel.optimizing.cures).
    cures: ClassVar[tuple[str, ...]] = ()
    # The distributions (pip names) whose version its lock entries depend on: a lock made under
    # another version of one says so when loaded (torch's is always checked).
    runtime_packages: ClassVar[tuple[str, ...]] = ()
    # The optimizer whose change this one makes with more on top (onnx.fusions_int8 quantizes what
    # onnx.int8_dynamic does, on a graph with fused attention): the engine tries it just before its
    # base, which follows only when it is not kept (say, no subgraph fused).
    extends: ClassVar[str] = ""
    # Its one-time cost (apply: an export, a quantization pass, a compile), as the engine predicts
    # it before trying: predicted_setup_calls calls of the baseline plus predicted_setup_seconds. A
    # candidate whose predicted trial does not fit the budget left is skipped (recipes.budgeting).
    predicted_setup_calls: ClassVar[float] = 1.0
    predicted_setup_seconds: ClassVar[float] = 0.0
    # How far from float32 it takes the arithmetic of the layers it changes, one of NUMERICS. Once a
    # candidate failed the guard at every rung it tried, the engine tries the others at its level
    # or coarser after the rest (accel.optimizing.search.budgeting.after_guard_failure).
    numerics: ClassVar[str] = "float32"
    # A setting of whatever the model slot keeps (runtime.spinning on an ORT session): once the model
    # slot keeps a candidate it applies to, the engine tries it next, on what was kept
    # (accel.optimizing.search.budgeting.tuners_first), unless the profile found the cores short.
    tunes_kept: ClassVar[bool] = False

    def applicable(self, pipeline: Pipeline, context: Context) -> str | None:
        return None

    @abc.abstractmethod
    def apply(self, pipeline: Pipeline, config: Any, context: Context) -> Applied:
        """Return a new pipeline with the optimization applied; never mutate `pipeline`."""

    def restore(self, pipeline: Pipeline, config: Any, state: dict[str, Any], lock_dir: Path) -> Pipeline:
        context = Context(machine=_machine(), workdir=lock_dir)
        return self.apply(pipeline, config, context).pipeline

    def resolved(self, config: Any) -> Any:
        """The config as this process would run it, for the engine to tell two recipe lines that
        ask for the same thing apart from two that do not (runtime.threads' "half" is "1" on two
        cores). Default: the config itself."""
        return config

    def safer_variants(self, config: Any, machine: Machine) -> list[Any]:
        """Configs to try, in order, when `config` failed the guard (never for speed): a quantizer's
        reduced range, per-channel weights... Each is a measured, guarded candidate of its own.
        Default: none."""
        return []


def _machine() -> Machine:
    from accel.core.machine import describe_machine

    return describe_machine()


OPTIMIZERS: Registry[Optimizer] = Registry("optimizer")

# Optimizer.numerics, finest first: an 8-bit weight or activation loses more than a 16-bit float,
# a 4-bit weight more than either.
NUMERICS = ("float32", "float16", "int8", "int4")

# The order in which the engine composes slots: what replaces the model first, then what changes
# how batches are formed around it; any other slot after these, by name.
SLOT_ORDER = ("model", "batching")


def slot_of(optimizer: Optimizer) -> str:
    return optimizer.slot or optimizer.name


def process_wide_among(names: Iterable[str]) -> set[str]:
    """The optimizers among `names` whose setting holds for a whole process."""
    return {name for name in names if OPTIMIZERS.get(name).process_wide}


def register(cls: type[Optimizer]) -> type[Optimizer]:
    """Class decorator: register one instance under the class's `name`."""
    OPTIMIZERS.add(cls.name, cls())
    return cls


def make_config(optimizer: Optimizer, params: dict[str, Any] | None, where: str = "") -> Any:
    """Build an optimizer's Config from recipe parameters; unknown or bad keys are recipe errors."""
    params = dict(params or {})
    fields = {f.name for f in dataclasses.fields(optimizer.Config)}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise RecipeError(
            f"{where}optimizer '{optimizer.name}' has no parameter {', '.join(repr(u) for u in unknown)}",
            f"valid parameters: {', '.join(sorted(fields)) or 'none'}",
        )
    try:
        return optimizer.Config(**params)
    except (TypeError, ValueError) as exc:
        given = ", ".join(f"{k}={v!r}" for k, v in params.items())
        raise RecipeError(f"{where}optimizer '{optimizer.name}' ({given}): {exc}", "fix the parameter's value") from exc


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
