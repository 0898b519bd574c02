"""What `accel profile` measured, as plain typed data: the passes return it, analyzers read it.

Nothing here measures or derives by guess; the helpers at the end combine measured numbers only.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from accel.core.measure import Measurement
from accel.profiling.costmodel import CostModel, RooflineSplit, split_roofline

# The loop's first steps run at the prompt's length, the length the cost model's call saw.
FIRST_STEPS = 3


@dataclasses.dataclass(frozen=True)
class LayerActivation:
    """One leaf layer's call: the bytes of its tensor inputs and outputs."""

    name: str
    input_bytes: int
    output_bytes: int
    input_shape: tuple[int, ...] = ()  # of its first tensor input

    @property
    def working_bytes(self) -> int:
        """Live while the layer runs: its input and its output."""
        return self.input_bytes + self.output_bytes


@dataclasses.dataclass(frozen=True)
class PatchCandidatePlan:
    """One way to run a CNN's leading stage patch by patch, as accel.profiling.patch_plan predicts it."""

    prefix_layers: int
    grid: int
    predicted_peak_bytes: int
    halo_extra_compute_share: float


@dataclasses.dataclass(frozen=True)
class PatchPlan:
    """The stage patch.inference would patch and its candidates, planned on the recorded call.

    `unpatched_peak_bytes` is the planner's estimate for the model as it is (each layer's input and
    output): predictions are ratios against it, applied to the measured peak.
    """

    module: str  # "" for the model itself, else its Sequential child
    stage_layers: int  # leaf layers in that Sequential
    local_layers: int  # the longest spatially local prefix of them
    stop_reason: str | None  # why the prefix ends there (None: all layers are local)
    first_layer: int  # index of the stage's first layer among the recorded leaf layers
    unpatched_peak_bytes: int
    candidates: tuple[PatchCandidatePlan, ...]

    @property
    def best(self) -> PatchCandidatePlan | None:
        return min(self.candidates, key=lambda c: (c.predicted_peak_bytes, c.grid), default=None)

    def reduction(self, candidate: PatchCandidatePlan) -> float:
        return self.unpatched_peak_bytes / candidate.predicted_peak_bytes if candidate.predicted_peak_bytes else 1.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class MemoryProfile:
    peak_bytes: int
    parameter_bytes: int
    layers: tuple[LayerActivation, ...]
    device_memory_bytes: int | None = None
    patch_plan: PatchPlan | None = None
    no_patch_plan_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "peak_bytes": self.peak_bytes,
            "parameter_bytes": self.parameter_bytes,
            "device_memory_bytes": self.device_memory_bytes,
            "layers": [dataclasses.asdict(layer) | {"working_bytes": layer.working_bytes} for layer in self.layers],
            "patch_plan": self.patch_plan.to_dict() if self.patch_plan is not None else None,
            "no_patch_plan_reason": self.no_patch_plan_reason,
        }


@dataclasses.dataclass(frozen=True)
class GenerationStep:
    position: int  # length of the sequence once this call's tokens are in (cache + tokens fed)
    seconds: float
    tokens: int = 0  # token positions the call was fed (per sequence; 0 where no token ids were seen)
    recomputed_tokens: int = 0  # of those, positions the previous call computed with the same tokens


@dataclasses.dataclass(frozen=True)
class GenerationProfile:
    """A generate loop's model calls; with `cached_*` where the loop was also run with the KV cache on."""

    steps: tuple[GenerationStep, ...]
    total_seconds: float
    parameter_bytes: int
    batch_size: int = 1
    cached_total_seconds: float | None = None
    cached_steps: tuple[GenerationStep, ...] = ()
    cache_outputs_equal: bool | None = None
    cache_note: str | None = None  # why the cache's gain was not measured, where it was not

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens (one per call, per sequence) per second of the loop."""
        return len(self.steps) * self.batch_size / self.total_seconds if self.total_seconds > 0 else 0.0

    @property
    def computed_tokens(self) -> int:
        return sum(s.tokens for s in self.steps) * self.batch_size

    @property
    def recomputed_tokens(self) -> int:
        return sum(s.recomputed_tokens for s in self.steps) * self.batch_size

    @property
    def recomputed_share(self) -> float:
        """Of the token positions the loop computed, the share an earlier call had computed already."""
        return self.recomputed_tokens / self.computed_tokens if self.computed_tokens else 0.0

    @property
    def cache_gain(self) -> float | None:
        """Measured share of the loop's time the KV cache saves (None where it was not measured)."""
        if self.cached_total_seconds is None or self.total_seconds <= 0:
            return None
        return max(1.0 - self.cached_total_seconds / self.total_seconds, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": [dataclasses.asdict(s) for s in self.steps],
            "total_seconds": self.total_seconds,
            "parameter_bytes": self.parameter_bytes,
            "batch_size": self.batch_size,
            "tokens_per_s": self.tokens_per_s,
            "computed_tokens": self.computed_tokens,
            "recomputed_tokens": self.recomputed_tokens,
            "recomputed_share": self.recomputed_share,
            "cached_total_seconds": self.cached_total_seconds,
            "cached_steps": [dataclasses.asdict(s) for s in self.cached_steps],
            "cache_gain": self.cache_gain,
            "cache_outputs_equal": self.cache_outputs_equal,
            "cache_note": self.cache_note,
        }


@dataclasses.dataclass(frozen=True)
class DtypeTiming:
    """The profiled model call, on the model as a dtype's cure runs it, at the call's real shapes.

    fp32 is the model as it is; bf16/fp16 the model cast whole (weights and floating inputs, as
    precision.* runs it); int8 its Linear layers dynamically quantized (quantize.int8_dynamic).
    All timed interleaved, with no profiler attached: median seconds per call.
    """

    dtype: str  # calibration name: fp32, bf16, fp16, int8
    call_seconds: float
    cpu_share: float | None = None  # share of their runnable time the rounds' threads ran; None: not metered

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class StageTiming:
    """Total seconds a stage took over `samples` samples in the stage pass."""

    name: str
    seconds: float
    samples: int

    @property
    def per_sample_seconds(self) -> float:
        return self.seconds / self.samples if self.samples else 0.0

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else float("inf")


@dataclasses.dataclass(frozen=True)
class EndToEnd:
    """The pipeline as it really runs: wall time, and the time blocked waiting for batches."""

    seconds: float
    samples: int
    batches: int
    wait_seconds: float
    compute_seconds: float
    num_workers: int
    batch_seconds: tuple[float, ...] = ()
    # Time from creating the iterator to the first batch when workers start (process start-up,
    # imports, the first prefetch): paid once per epoch, reported apart and not in `seconds`.
    startup_seconds: float = 0.0

    def __post_init__(self) -> None:
        if min(self.seconds, self.wait_seconds, self.compute_seconds, self.startup_seconds) < 0:
            raise ValueError("EndToEnd times must be >= 0 seconds")

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    @property
    def wait_share(self) -> float:
        return min(self.wait_seconds / self.seconds, 1.0) if self.seconds > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class BatchPadding:
    """Elements of a collated batch against the elements its samples really hold."""

    real_elements: int
    padded_elements: int
    sample_lengths: tuple[int, ...] = ()
    # "shapes" (the collated tensor against the samples'), "attention_mask" or "pad_runs"
    # (accel.profiling.padding_measure says how each is read).
    measured_from: str = "shapes"
    # Padding in columns that are padding in every sample of the batch (past its longest sample).
    trimmable_elements: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.trimmable_elements <= self.padded_elements - self.real_elements:
            raise ValueError(f"BatchPadding: trimmable_elements {self.trimmable_elements} is not padding")

    @property
    def padding_share(self) -> float:
        return 1.0 - self.real_elements / self.padded_elements if self.padded_elements else 0.0


@dataclasses.dataclass
class ProfileData:
    """Everything measured about one target; analyzers read it, nothing here is derived by guess."""

    target: str
    mode: str = "pipeline"  # pipeline | script | onnx
    batch_size: int = 1
    num_workers: int = 0
    cores: int = 1
    stages: list[StageTiming] = dataclasses.field(default_factory=list)
    end_to_end: EndToEnd | None = None
    sample_hashes: list[str] = dataclasses.field(default_factory=list)
    padding: list[BatchPadding] = dataclasses.field(default_factory=list)
    model_latency: Measurement | None = None
    source_is_sequence: bool = True
    # Filled by the hardware passes (accel.profiling.hardware), where they ran.
    ops: CostModel | None = None
    memory: MemoryProfile | None = None
    generation: GenerationProfile | None = None
    dtype_timings: tuple[DtypeTiming, ...] = ()
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def stage(self, name: str) -> StageTiming | None:
        return next((s for s in self.stages if s.name == name), None)


def model_time_share(data: ProfileData) -> float:
    """The share of steady-state end-to-end time spent in the model (postprocess taken out)."""
    e2e = data.end_to_end
    if e2e is None or e2e.seconds <= 0:
        return 0.0
    compute_share = min(e2e.compute_seconds / e2e.seconds, 1.0)
    model, post = data.stage("model"), data.stage("postprocess")
    if model is not None and post is not None and model.seconds + post.seconds > 0:
        compute_share *= model.seconds / (model.seconds + post.seconds)
    return compute_share


def share_of_model_time(data: ProfileData, seconds_per_call: float) -> float:
    """What `seconds_per_call` (a part of the cost model's one call) is of the model's time.

    In a generate loop the cost model saw one call at the prompt's length, timed apart from the
    loop, while the loop makes many calls at growing lengths. A cost per call (dispatch, weight
    reads) is taken as the same fraction of the loop's first steps (the calls of that length,
    timed in the loop) and weighed by the number of calls over the loop's time.
    """
    call = data.ops.call_seconds if data.ops is not None else 0.0
    if call <= 0:
        return 0.0
    fraction = min(seconds_per_call / call, 1.0)
    generation = data.generation
    if isinstance(generation, GenerationProfile) and generation.total_seconds > 0 and generation.steps:
        first_steps = sorted(s.seconds for s in generation.steps[:FIRST_STEPS])
        first = first_steps[len(first_steps) // 2]
        return min(fraction * first * len(generation.steps) / generation.total_seconds, 1.0)
    return fraction


@dataclasses.dataclass(frozen=True)
class RooflineShare:
    """One side of a model call's roofline split, the share of the model's time it holds, and its peak."""

    cost: CostModel
    split: RooflineSplit
    share: float
    peak: float  # the machine's calibrated peak for that side: GFLOP/s for compute, GB/s for memory


def roofline_share(
    data: ProfileData, side: Literal["compute", "memory"], peak: float | None, min_share: float
) -> RooflineShare | None:
    """The compute- or memory-bound side of the model call, or None when there is nothing to name.

    None when no cost model was built, the machine's peak for that side (GFLOP/s or GB/s) is not
    calibrated, the call took no time, or that side's ops hold less than `min_share` of the model's
    time while the cost pass's times agree (CostModel.timing_disagreement).
    """
    cost = data.ops
    if not isinstance(cost, CostModel) or not peak or cost.call_seconds <= 0:
        return None
    split = split_roofline(cost)
    seconds = split.compute_seconds if side == "compute" else split.memory_seconds
    share = share_of_model_time(data, seconds)
    # Below `min_share` there is nothing to name, unless the op and call times disagree: then the
    # share itself is noise, and the analyzer says "too noisy to decide" rather than nothing.
    if seconds <= 0 or (share < min_share and not cost.timing_disagreement):
        return None
    return RooflineShare(cost=cost, split=split, share=share, peak=peak)
