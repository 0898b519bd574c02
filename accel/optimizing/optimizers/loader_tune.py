"""`loader.tune`: choose num_workers, prefetch_factor, persistent_workers and pin_memory by measuring
end-to-end throughput (Pipeline.run over a slice of the source), never keeping a slower setting.

The rate model predicts the gain first: with per-sample prepare cost V (decode + transform, in the
workers), per-batch model cost F (in the main process) and W workers on C cores, a run costs about
max(V / min(W, C), F / batch) per sample, or V + F / batch without workers. C counts the cores the
baseline's profile found idle (other work holds the rest), and on a CPU the workers' V / C is the
model's time too. The measured gain is
what decides: the fastest setting is kept only when an interleaved comparison against the starting
setting shows it faster beyond noise; otherwise the start is kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from accel.core.measure import compare_interleaved, now
from accel.core.pipeline import Pipeline
from accel.optimizing.optimizers import Applied, Context, Optimizer, register
from accel.profiling.contention import idle_cores

# A setting must be at least 5% faster than the start (and its CI above 1) to replace it: about the
# run-to-run noise of an end-to-end run on a shared machine.
DEFAULT_MIN_GAIN = 1.05
DEFAULT_PREFETCH_FACTORS = (2, 4)
# The slice of the source each trial runs: enough batches for the workers to reach steady state.
TRIAL_BATCHES = 12
PROBE_SAMPLES = 4


@dataclasses.dataclass(frozen=True)
class LoaderTuneConfig:
    max_workers: int | None = None  # None: the machine's usable cores
    prefetch_factors: tuple[int, ...] = DEFAULT_PREFETCH_FACTORS
    rounds: int = 3
    min_gain: float = DEFAULT_MIN_GAIN

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefetch_factors", tuple(self.prefetch_factors))
        if self.max_workers is not None and self.max_workers < 0:
            raise ValueError(f"max_workers must be >= 0, got {self.max_workers}")
        if not self.prefetch_factors or any(p < 1 for p in self.prefetch_factors):
            raise ValueError(f"prefetch_factors must be ints >= 1, got {self.prefetch_factors}")
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.min_gain < 1.0:
            raise ValueError(f"min_gain must be >= 1.0, got {self.min_gain}")


@dataclasses.dataclass(frozen=True)
class Setting:
    num_workers: int
    prefetch_factor: int | None = None
    persistent_workers: bool = False
    pin_memory: bool = False

    def loader_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"pin_memory": True} if self.pin_memory else {}
        if self.num_workers > 0:
            if self.prefetch_factor is not None:
                options["prefetch_factor"] = self.prefetch_factor
            options["persistent_workers"] = self.persistent_workers
        return options

    def label(self) -> str:
        parts = [f"num_workers={self.num_workers}"]
        if self.num_workers and self.prefetch_factor:
            parts.append(f"prefetch_factor={self.prefetch_factor}")
        if self.pin_memory:
            parts.append("pin_memory")
        return ", ".join(parts)


@dataclasses.dataclass(frozen=True)
class TrialPoint:
    setting: Setting
    median_seconds: float


def setting_of(pipeline: Pipeline) -> Setting:
    options = pipeline.loader_options
    return Setting(
        pipeline.num_workers,
        options.get("prefetch_factor"),
        bool(options.get("persistent_workers", False)),
        bool(options.get("pin_memory", False)),
    )


def with_setting(pipeline: Pipeline, setting: Setting) -> Pipeline:
    return pipeline.replace(num_workers=setting.num_workers, loader_options=setting.loader_options())


def choose_setting(points: list[TrialPoint], start: Setting, min_gain: float) -> Setting:
    """The fastest setting if it beats the start by `min_gain`, else the start. Pure, so tested on
    recorded points: it can never return a setting measured slower than the start."""
    start_point = next((p for p in points if p.setting == start), None)
    if start_point is None:
        return start
    best = min(points, key=lambda p: p.median_seconds)
    if best.setting != start and best.median_seconds * min_gain <= start_point.median_seconds:
        return best.setting
    return start


def predicted_seconds_per_sample(
    setting: Setting, prepare_seconds: float, forward_seconds_per_sample: float, cores: int, contended: bool = False
) -> float:
    """Seconds a sample costs with `setting` on `cores` free cores. `contended`: the model runs on
    the same CPU cores as the workers, so the prepare work still takes core time from it."""
    if setting.num_workers == 0:
        return prepare_seconds + forward_seconds_per_sample
    overlapped = max(prepare_seconds / min(setting.num_workers, cores), forward_seconds_per_sample)
    return max(overlapped, forward_seconds_per_sample + prepare_seconds / cores) if contended else overlapped


def free_cores(context: Context) -> int:
    """The cores the workers can use: those the baseline's profile found idle under other work
    (accel.profiling.contention), else all the machine's."""
    return idle_cores(getattr(context.report, "extra", None) or {}, max(context.machine.cores, 1))


def _trial_pipeline(pipeline: Pipeline) -> Pipeline:
    if not pipeline.is_sequence or pipeline.batch_plan is not None:
        return pipeline
    count = min(len(pipeline.source), TRIAL_BATCHES * pipeline.batch_size)
    return pipeline.replace(source=[pipeline.source[i] for i in range(count)])


def _timed(fn: Callable[[], Any]) -> float:
    start = now()
    fn()
    return now() - start


@register
class LoaderTune(Optimizer):
    name = "loader.tune"
    cures = ("data_loading", "input_decoding", "straggler")
    description = "Measure DataLoader settings (workers, prefetch, pinning) end to end; keep the fastest beyond noise."
    Config = LoaderTuneConfig

    def applicable(self, pipeline: Pipeline, context: Context) -> str | None:
        if not pipeline.has_source:
            return "the pipeline has no source: there is no loader to tune"
        return None

    def candidates(self, start: Setting, config: LoaderTuneConfig, context: Context) -> list[Setting]:
        cores = context.machine.cores
        top = cores if config.max_workers is None else min(config.max_workers, cores)
        pin = context.machine.is_cuda
        settings = [start]
        for workers in range(0, top + 1):
            # persistent_workers stays off: Pipeline.run builds a new DataLoader per run, so workers
            # kept alive between epochs of one loader would never be reused.
            setting = Setting(workers, config.prefetch_factors[0] if workers else None, False, pin)
            if setting not in settings:
                settings.append(setting)
        return settings

    def apply(self, pipeline: Pipeline, config: LoaderTuneConfig, context: Context) -> Applied:
        trial = _trial_pipeline(pipeline)
        start = setting_of(pipeline)
        cores = max(context.machine.cores, 1)
        settings = self.candidates(start, config, context)
        began = now()
        points = self._measure(trial, settings, config.rounds)
        best = min(points, key=lambda p: p.median_seconds).setting
        if best.num_workers > 0:  # then the prefetch depth at the best worker count
            more = [dataclasses.replace(best, prefetch_factor=p) for p in config.prefetch_factors[1:]]
            if more:
                points += self._measure(trial, [best] + more, config.rounds)[1:]
        chosen = choose_setting(points, start, config.min_gain)
        confirmed = None
        why_unchanged = None
        if chosen == start:
            why_unchanged = (
                f"no other setting measured faster than {start.label()} by more than the {config.min_gain}x "
                f"it must gain (of {len(points)} trials on {cores} cores)"
            )
        if chosen != start:
            comparison = compare_interleaved(
                with_setting(trial, start).run,
                with_setting(trial, chosen).run,
                warmup=1,
                min_rounds=3,
                budget_seconds=10.0,
            )
            confirmed = comparison.speedup
            if comparison.speedup_ci[0] <= 1.0:
                why_unchanged = (
                    f"{chosen.label()} looked faster, but re-timed against {start.label()} its interval reaches "
                    f"{comparison.speedup_ci[0]:.2f}x"
                )
                chosen = start
        setup = now() - began
        prepare = self._prepare_seconds(pipeline)
        forward = self._forward_seconds_per_sample(pipeline)
        idle, contended = free_cores(context), not context.machine.is_cuda
        start_time = next(p.median_seconds for p in points if p.setting == start)
        chosen_time = min(p.median_seconds for p in points if p.setting == chosen)
        notes = {
            "start": start.label(),
            "chosen": chosen.label(),
            "predicted_gain": (
                predicted_seconds_per_sample(start, prepare, forward, idle, contended)
                / predicted_seconds_per_sample(chosen, prepare, forward, idle, contended)
            ),
            "predicted_gain_at_most_workers": (
                predicted_seconds_per_sample(start, prepare, forward, idle, contended)
                / predicted_seconds_per_sample(settings[-1], prepare, forward, idle, contended)
            ),
            "measured_gain": start_time / chosen_time,
            "confirmed_speedup": confirmed,
            "prepare_seconds_per_sample": prepare,
            "forward_seconds_per_sample": forward,
            "cores": cores,
            "idle_cores": idle,
            "trials": [{"setting": p.setting.label(), "median_seconds": p.median_seconds} for p in points],
        }
        if why_unchanged:
            notes["reason"] = why_unchanged
        state = dataclasses.asdict(chosen)
        return Applied(with_setting(pipeline, chosen), state=state, setup_seconds=setup, notes=notes)

    def restore(self, pipeline: Pipeline, config: LoaderTuneConfig, state: dict[str, Any], lock_dir: Any) -> Pipeline:
        setting = Setting(**state)
        if setting.pin_memory and not torch.cuda.is_available():
            setting = dataclasses.replace(setting, pin_memory=False)
        return with_setting(pipeline, setting)

    @staticmethod
    def _measure(trial: Pipeline, settings: list[Setting], rounds: int) -> list[TrialPoint]:
        runs = [with_setting(trial, s) for s in settings]
        for run in runs:  # warm-up: first worker start, page cache, lazy imports
            run.run()
        times: list[list[float]] = [[] for _ in settings]
        for _ in range(rounds):
            for i, run in enumerate(runs):
                times[i].append(_timed(run.run))
        return [TrialPoint(s, sorted(t)[len(t) // 2]) for s, t in zip(settings, times)]

    @staticmethod
    def _prepare_seconds(pipeline: Pipeline) -> float:
        if not pipeline.is_sequence or len(pipeline.source) == 0:
            return 0.0
        samples = [pipeline.source[i] for i in range(min(PROBE_SAMPLES, len(pipeline.source)))]
        return _timed(lambda: [pipeline.prepare(raw) for raw in samples]) / len(samples)

    @staticmethod
    def _forward_seconds_per_sample(pipeline: Pipeline) -> float:
        from accel.core.pipeline import batch_length

        batch = pipeline.example_batch()
        with torch.inference_mode():
            pipeline.forward(batch)
            seconds = _timed(lambda: pipeline.forward(batch))
        return seconds / max(batch_length(batch), 1)
