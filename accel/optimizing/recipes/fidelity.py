"""The fidelity guard: how far an optimized pipeline's outputs drift from the baseline's.

Outputs (tensors, numbers, tuples, dicts, lists of per-sample results) are flattened leaf by leaf
into one float vector; cosine similarity and the largest absolute difference are computed over it.
Leaves that are not numbers (strings, say) must match exactly. When the pipeline defines a metric
and the guard bounds its drop, the metric decides instead: the user said what quality means.
Metrics are taken as higher-is-better.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from accel.optimizing.recipes.schema import Guard

# Below this norm a vector counts as zero (cosine of two zero vectors is 1).
ZERO_NORM = 1e-30


@dataclasses.dataclass(frozen=True)
class Fidelity:
    cosine: float
    max_abs_error: float
    mismatched_leaves: int = 0
    shape_error: str | None = None
    metric_baseline: float | None = None
    metric_candidate: float | None = None

    @property
    def metric_drop(self) -> float | None:
        if self.metric_baseline is None or self.metric_candidate is None:
            return None
        scale = max(abs(self.metric_baseline), ZERO_NORM)
        return (self.metric_baseline - self.metric_candidate) / scale

    def failure(self, guard: Guard) -> str | None:
        """None when the guard passes, else why it does not."""
        if self.shape_error:
            return f"outputs differ in structure: {self.shape_error}"
        drop = self.metric_drop
        if drop is not None and guard.max_metric_drop is not None:
            if drop > guard.max_metric_drop:
                return (
                    f"metric dropped {drop * 100:.2f}% ({self.metric_baseline:.4g} -> {self.metric_candidate:.4g}), "
                    f"guard allows {guard.max_metric_drop * 100:.2f}%"
                )
            return None
        if self.mismatched_leaves:
            return f"{self.mismatched_leaves} non-numeric outputs differ from the baseline"
        if guard.min_cosine is not None and not self.cosine >= guard.min_cosine:
            return f"cosine {self.cosine:.5f} below the guard's {guard.min_cosine}"
        if guard.max_abs_error is not None and not self.max_abs_error <= guard.max_abs_error:
            return f"max abs error {self.max_abs_error:.3g} above the guard's {guard.max_abs_error:.3g}"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "cosine": self.cosine,
            "max_abs_error": self.max_abs_error,
            "mismatched_leaves": self.mismatched_leaves,
            "shape_error": self.shape_error,
            "metric_baseline": self.metric_baseline,
            "metric_candidate": self.metric_candidate,
            "metric_drop": self.metric_drop,
        }


class _ShapeMismatch(Exception):
    pass


def _leaves(value: Any, path: str, numbers: list[np.ndarray], others: list[tuple[str, Any]]) -> None:
    if isinstance(value, torch.Tensor):
        numbers.append(value.detach().to("cpu", torch.float64).reshape(-1).numpy())
    elif isinstance(value, np.ndarray):
        numbers.append(value.astype(np.float64).reshape(-1))
    elif isinstance(value, (bool, int, float)):
        numbers.append(np.asarray([float(value)]))
    elif isinstance(value, Mapping):
        for key in sorted(value, key=str):
            _leaves(value[key], f"{path}.{key}", numbers, others)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _leaves(item, f"{path}[{i}]", numbers, others)
    else:
        others.append((path, value))


def _shape_signature(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, Mapping):
        return {k: _shape_signature(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_shape_signature(v) for v in value]
    return type(value).__name__


def compare_outputs(reference: Any, candidate: Any) -> Fidelity:
    """Cosine and max abs error between two outputs of the same structure."""
    ref_numbers: list[np.ndarray] = []
    ref_others: list[tuple[str, Any]] = []
    cand_numbers: list[np.ndarray] = []
    cand_others: list[tuple[str, Any]] = []
    _leaves(reference, "output", ref_numbers, ref_others)
    _leaves(candidate, "output", cand_numbers, cand_others)
    ref_shape, cand_shape = _shape_signature(reference), _shape_signature(candidate)
    if ref_shape != cand_shape or len(ref_others) != len(cand_others):
        return Fidelity(
            cosine=math.nan, max_abs_error=math.inf, shape_error=f"{_short(ref_shape)} vs {_short(cand_shape)}"
        )
    a = np.concatenate(ref_numbers) if ref_numbers else np.zeros(0)
    b = np.concatenate(cand_numbers) if cand_numbers else np.zeros(0)
    finite = np.isfinite(a) & np.isfinite(b)
    same_nonfinite = bool(np.all((a == b) | finite | (np.isnan(a) & np.isnan(b))))
    a_f, b_f = a[finite], b[finite]
    norms = float(np.linalg.norm(a_f)) * float(np.linalg.norm(b_f))
    if a_f.size == 0 or norms < ZERO_NORM:
        cosine = 1.0 if np.allclose(a_f, b_f) else 0.0
    else:
        cosine = float(np.dot(a_f, b_f) / norms)
    max_abs = float(np.max(np.abs(a_f - b_f))) if a_f.size else 0.0
    if not same_nonfinite:
        max_abs = math.inf
    mismatched = sum(1 for (_, x), (_, y) in zip(ref_others, cand_others) if x != y)
    return Fidelity(cosine=cosine, max_abs_error=max_abs, mismatched_leaves=mismatched)


def _short(signature: Any, limit: int = 80) -> str:
    text = str(signature)
    return text if len(text) <= limit else text[:limit] + "..."
