"""The one place accel computes confidence intervals.

Every interval is a 95% interval by default from a seeded percentile bootstrap (the same resamples
for the same data, so a verdict is reproducible): of a statistic over one sample, of a ratio of
medians over paired samples (whole pairs resampled, so drift shared by a pair cancels), and of a
difference of statistics over two independent samples (each side resampled alone).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


def percentile_interval(statistics: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    return float(np.quantile(statistics, alpha)), float(np.quantile(statistics, 1.0 - alpha))


def bootstrap_ci(
    values: Sequence[float],
    statistic: Callable[[np.ndarray], float] = np.median,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """A percentile bootstrap confidence interval of `statistic` over `values`."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return (math.nan, math.nan)
    if data.size == 1:
        return (float(data[0]), float(data[0]))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, data.size, size=(resamples, data.size))
    if statistic is np.median:
        stats = np.median(data[picks], axis=1)
    else:
        stats = np.apply_along_axis(statistic, 1, data[picks])
    return percentile_interval(stats, confidence)


def paired_ratio_ci(
    baseline: Sequence[float],
    candidate: Sequence[float],
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, tuple[float, float]]:
    """Ratio of medians (baseline / candidate) with a bootstrap CI that resamples whole pairs."""
    a = np.asarray(baseline, dtype=float)
    b = np.asarray(candidate, dtype=float)
    n = min(a.size, b.size)
    a, b = a[:n], b[:n]
    ratio = float(np.median(a) / np.median(b))
    if n < 2:
        return ratio, (ratio, ratio)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(resamples, n))
    ratios = np.median(a[picks], axis=1) / np.median(b[picks], axis=1)
    return ratio, percentile_interval(ratios, confidence)


def two_sample_ci(
    a: np.ndarray,
    b: np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Interval of `statistic(medians of a, medians of b)` with each side resampled on its own."""
    rng = np.random.default_rng(seed)
    med_a = np.median(a[rng.integers(0, a.size, size=(resamples, a.size))], axis=1)
    med_b = np.median(b[rng.integers(0, b.size, size=(resamples, b.size))], axis=1)
    return percentile_interval(statistic(med_a, med_b), confidence)
