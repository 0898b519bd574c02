"""The fidelity guard: how far an optimized pipeline's outputs drift from the baseline's.

Outputs are compared sample by sample and leaf by leaf, never flattened into one vector (a shared
offset in logits dominates a flattened norm, so labels flip while one cosine stays at 0.99999, and a
small output beside a large one can be zeroed unseen). A leaf is a tensor, array or number found by
walking tuples, lists, mappings (transformers' `ModelOutput` is one) and dataclasses. Per leaf:

- structure: the same leaf paths, per-sample shapes and kinds (integer/bool, float, other) as the
  baseline, else a failure that names the first difference;
- non-finite values (NaN, inf) where the baseline is finite: always a failure;
- integer and bool leaves, and non-numeric ones (strings): must match exactly;
- float leaves, per sample: the centered cosine (each vector minus its own mean, so a common offset
  counts for nothing) and the relative L2 error ||a - b|| / ||a|| (for single numbers, where a
  cosine says nothing);
- leaves that look like class scores (a key naming logits/scores/probs, or one 1-D score vector per
  sample of at most MAX_CLASSES classes): top-1 agreement over samples (and positions).

The worst sample of each measure is kept so the failure says where. A metric, when the pipeline
has one, is checked in addition to all of this, and a non-finite metric is a failure.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, cast

import numpy as np

from accel.core.outputs import Leaf, leaves, without_numbers  # noqa: F401 - without_numbers: part of this module's API
from accel.optimizing.recipes.schema import Guard

# Why a candidate cannot be judged when the baseline's outputs hold no number to compare.
NOTHING_NUMERIC = (
    "the model's outputs hold no number to compare (None, a string, or only NaN/inf): "
    "the guard cannot check a candidate; return the model's tensors"
)
# Below this norm a vector counts as zero (cosine of two zero vectors is 1).
ZERO_NORM = 1e-30
# A per-sample 1-D float output of 2..MAX_CLASSES values is taken as class scores (ImageNet has 1000).
MAX_CLASSES = 1000
# Keys under which a model returns class scores (transformers: `logits`).
SCORE_KEYS = ("logit", "score", "prob")
# A leaf named as features is never class scores, whatever its shape: BERT's pooler_output at
# batch 1 is 768 tanh values, and its argmax flips between near-equal ones under any rounding.
FEATURE_KEYS = ("hidden", "pooler", "embed", "state", "feature", "attention", "past", "cache")


@dataclasses.dataclass(frozen=True)
class Fidelity:
    """The worst of each measure over all compared samples, and where it was found."""

    samples: int = 0
    cosine: float = 1.0  # lowest per-sample centered cosine of any float leaf
    cosine_at: str | None = None
    relative_error: float = 0.0  # highest per-sample relative L2 error of any float leaf
    relative_error_at: str | None = None
    max_abs_error: float = 0.0
    top1_agreement: float | None = None  # lowest share of agreeing argmax over class-score leaves
    top1_at: str | None = None
    nonfinite: str | None = None  # where the candidate is NaN/inf and the baseline is not
    exact_mismatch: str | None = None  # where an integer, bool or non-numeric leaf differs
    shape_error: str | None = None
    metric_baseline: float | None = None
    metric_candidate: float | None = None
    note: str | None = None  # why validation could not be done (no held-out samples)

    @property
    def metric_drop(self) -> float | None:
        if self.metric_baseline is None or self.metric_candidate is None:
            return None
        scale = max(abs(self.metric_baseline), ZERO_NORM)
        return (self.metric_baseline - self.metric_candidate) / scale

    def failure(self, guard: Guard) -> str | None:
        """None when the guard passes, else why it does not (the first check that fails)."""
        if self.note:
            return self.note
        if self.shape_error:
            return f"outputs differ in structure: {self.shape_error}"
        if self.nonfinite:
            return f"non-finite outputs where the baseline is finite: {self.nonfinite}"
        if self.exact_mismatch:
            return f"exact outputs differ: {self.exact_mismatch}"
        if self.metric_baseline is not None and (
            self.metric_candidate is None or not math.isfinite(self.metric_candidate)
        ):
            return f"the metric is {self.metric_candidate} (baseline {self.metric_baseline:.4g})"
        drop = self.metric_drop
        if drop is not None and guard.max_metric_drop is not None and drop > guard.max_metric_drop:
            return (
                f"metric dropped {drop * 100:.2f}% ({self.metric_baseline:.4g} -> {self.metric_candidate:.4g}), "
                f"guard allows {guard.max_metric_drop * 100:.2f}%"
            )
        of = f"(worst of {self.samples} samples)"
        if guard.min_cosine is not None and not self.cosine >= guard.min_cosine:
            return f"centered cosine {self.cosine:.5f} at {self.cosine_at}, below the guard's {guard.min_cosine} {of}"
        if guard.max_relative_error is not None and not self.relative_error <= guard.max_relative_error:
            return (
                f"relative error {self.relative_error:.3g} at {self.relative_error_at}, above the guard's "
                f"{guard.max_relative_error} {of}"
            )
        if (
            guard.min_top1_agreement is not None
            and self.top1_agreement is not None
            and not self.top1_agreement >= guard.min_top1_agreement
        ):
            return (
                f"top-1 agreement {self.top1_agreement * 100:.1f}% on {self.top1_at}, below the guard's "
                f"{guard.min_top1_agreement * 100:.1f}% ({self.samples} samples)"
            )
        if guard.max_abs_error is not None and not self.max_abs_error <= guard.max_abs_error:
            return f"max abs error {self.max_abs_error:.3g} above the guard's {guard.max_abs_error:.3g}"
        return None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["metric_drop"] = self.metric_drop
        return data


def looks_like_class_scores(path: str, shape: tuple[int, ...]) -> bool:
    if not shape or shape[-1] < 2:
        return False
    last_key = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    if any(word in last_key for word in SCORE_KEYS):
        return True
    if any(word in last_key for word in FEATURE_KEYS):
        return False
    return len(shape) == 1 and shape[-1] <= MAX_CLASSES


# --- comparison ------------------------------------------------------------------------------------
class _Worst:
    """Running worst values over samples."""

    def __init__(self) -> None:
        self.cosine, self.cosine_at = 1.0, cast("str | None", None)
        self.relative, self.relative_at = 0.0, cast("str | None", None)
        self.max_abs = 0.0
        self.top1: dict[str, list[int]] = {}  # leaf path -> [agreeing, total]
        self.nonfinite: str | None = None
        self.exact: str | None = None
        self.numbers = 0  # the baseline's values to compare: exact ones, and finite floats

    def fidelity(self, samples: int) -> Fidelity:
        top1, top1_at = None, None
        for path, (agree, total) in self.top1.items():
            share = agree / total if total else 1.0
            if top1 is None or share < top1:
                top1, top1_at = share, path
        if samples and not self.numbers:  # None, a string, only NaN: a cosine of 1 would claim a match
            return Fidelity(samples=samples, cosine=math.nan, nonfinite=self.nonfinite, note=NOTHING_NUMERIC)
        return Fidelity(
            samples=samples,
            cosine=self.cosine,
            cosine_at=self.cosine_at,
            relative_error=self.relative,
            relative_error_at=self.relative_at,
            max_abs_error=self.max_abs,
            top1_agreement=top1,
            top1_at=top1_at,
            nonfinite=self.nonfinite,
            exact_mismatch=self.exact,
        )


def compare_samples(pairs: list[tuple[str, Any, Any]]) -> Fidelity:
    """Compare (label, baseline, candidate) samples; the worst sample of each measure is reported."""
    worst = _Worst()
    for label, reference, candidate in pairs:
        ref, cand = leaves(reference), leaves(candidate)
        problem = _structure_difference(ref, cand)
        if problem:
            return Fidelity(
                samples=len(pairs), cosine=math.nan, max_abs_error=math.inf, shape_error=f"{label}: {problem}"
            )
        for path, leaf in ref.items():
            _compare_leaf(f"{label}, {path}", path, leaf, cand[path], worst)
    return worst.fidelity(len(pairs))


def compare_outputs(reference: Any, candidate: Any) -> Fidelity:
    """Compare two outputs as one sample (see compare_samples for a batch split into samples)."""
    return compare_samples([("sample 0", reference, candidate)])


def _structure_difference(ref: dict[str, Leaf], cand: dict[str, Leaf]) -> str | None:
    if ref.keys() != cand.keys():
        missing = sorted(set(ref) - set(cand))
        extra = sorted(set(cand) - set(ref))
        return f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
    for path, leaf in ref.items():
        other = cand[path]
        if leaf.kind != other.kind:
            return f"{path} is {other.kind}, the baseline's is {leaf.kind}"
        if leaf.shape != other.shape:
            return f"{path} has shape {list(other.shape)}, the baseline's {list(leaf.shape)}"
    return None


def _compare_leaf(where: str, path: str, ref: Leaf, cand: Leaf, worst: _Worst) -> None:
    if ref.kind == "exact":
        worst.numbers += ref.value.size
        if worst.exact is None and not np.array_equal(ref.value, cand.value):
            changed = int(np.sum(ref.value != cand.value))
            worst.exact = f"{where}: {changed} of {ref.value.size} values changed"
        return
    if ref.kind != "float":
        if worst.exact is None and not _same_object(ref.value, cand.value):
            worst.exact = f"{where}: {_short(ref.value)} became {_short(cand.value)}"
        return
    a = ref.value.astype(np.float64).reshape(-1)
    b = cand.value.astype(np.float64).reshape(-1)
    a_finite, b_finite = np.isfinite(a), np.isfinite(b)
    broken = a_finite & ~b_finite
    if worst.nonfinite is None and (np.any(broken) or not _same_nonfinite(a[~a_finite], b[~a_finite])):
        worst.nonfinite = f"{where}: {int(np.sum(broken))} of {a.size} values NaN/inf"
    finite = a_finite & b_finite
    worst.numbers += int(np.sum(a_finite))
    a, b = a[finite], b[finite]
    if a.size == 0:
        return
    difference = a - b
    worst.max_abs = max(worst.max_abs, float(np.max(np.abs(difference))))
    norm_a = float(np.linalg.norm(a))
    relative = (
        float(np.linalg.norm(difference)) / norm_a if norm_a > ZERO_NORM else float(np.linalg.norm(b) > ZERO_NORM)
    )
    if relative > worst.relative:
        worst.relative, worst.relative_at = relative, where
    if a.size >= 2:
        cosine = _centered_cosine(a, b)
        if cosine < worst.cosine:
            worst.cosine, worst.cosine_at = cosine, where
    if looks_like_class_scores(path, ref.shape) and ref.value.size == cand.value.size:
        scores_a = ref.value.reshape(-1, ref.shape[-1])
        scores_b = cand.value.reshape(-1, ref.shape[-1])
        tally = worst.top1.setdefault(path, [0, 0])
        tally[0] += int(np.sum(np.argmax(scores_a, axis=-1) == np.argmax(scores_b, axis=-1)))
        tally[1] += scores_a.shape[0]


def _centered_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a_c, b_c = a - a.mean(), b - b.mean()
    norm_a, norm_b = float(np.linalg.norm(a_c)), float(np.linalg.norm(b_c))
    if norm_a < ZERO_NORM and norm_b < ZERO_NORM:
        return 1.0
    if norm_a < ZERO_NORM or norm_b < ZERO_NORM:
        return 0.0
    return float(np.dot(a_c, b_c) / (norm_a * norm_b))


def _same_nonfinite(a: np.ndarray, b: np.ndarray) -> bool:
    """Where the baseline is NaN or inf, the candidate must be the same NaN or inf."""
    return bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def _same_object(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - an object whose == does not answer a bool: compare reprs
        return repr(a) == repr(b)


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
