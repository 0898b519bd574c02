"""The one place accel computes confidence intervals.

Every interval is a 95% interval by default. A seeded percentile bootstrap (the same resamples for
the same data, so a verdict is reproducible) of a statistic over one sample, or of a ratio of
medians over paired samples (whole pairs resampled, so drift shared by a pair cancels); an exact
order-statistic interval of a median (the gate, at small n), its group-sequential version whose
error is spent over the looks, and the spread between a stored baseline's runs.
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


# --- exact order-statistic intervals of a median -----------------------------------------------
def binomial_tail(n: int, k: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2): the chance that at most k of n values lie below the median."""
    if k < 0:
        return 0.0
    return sum(math.comb(n, i) for i in range(min(k, n) + 1)) / 2.0**n


def median_rank(n: int, confidence: float = CONFIDENCE) -> int:
    """The largest rank k whose order statistics (x_(k), x_(n-k+1)) cover the median with at least
    `confidence`, exactly and for any continuous distribution; 0 when even (min, max) cannot."""
    alpha = (1.0 - confidence) / 2.0
    k = 0
    while k + 1 <= (n + 1) // 2 and binomial_tail(n, k) <= alpha:
        k += 1
    return k


def order_interval(values: Sequence[float], rank: int) -> tuple[float, float]:
    """(x_(rank), x_(n-rank+1)), the sorted values' rank-th from each end; unbounded for rank 0."""
    data = np.sort(np.asarray(values, dtype=float))
    if rank < 1 or data.size == 0:
        return (-math.inf, math.inf)
    return float(data[rank - 1]), float(data[data.size - rank])


def median_order_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """An exact distribution-free interval of the median: the order statistics of median_rank.

    Unlike the percentile bootstrap (which covers about 88% at n=4 when asked for 95%) it holds
    its level at every n; below n=6 a 95% interval does not exist and it is unbounded."""
    return order_interval(values, median_rank(len(values), confidence))


# --- a group-sequential sign test: looks at several n with the error spent over them ---------
def _count_distribution_after(distribution: np.ndarray, added: int, p: float) -> np.ndarray:
    """Distribution of 'values above' after `added` more independent values, each above w.p. p."""
    out = distribution
    for _ in range(added):
        grown = np.zeros(out.size + 1)
        grown[:-1] += out * (1.0 - p)
        grown[1:] += out * p
        out = grown
    return out


def sequential_median_ranks(looks: Sequence[int], alpha: float, rho: float) -> tuple[int, ...]:
    """Order-statistic ranks k_j, one per look n_j, for a sign test that looks at each n_j in turn.

    At look j the interval of the median is (x_(k_j), x_(n_j-k_j+1)). Its lower end lies above a
    limit exactly when at least n_j-k_j+1 values do; when the true median is the limit each value
    is above with probability 1/2, so the chance of that happening at ANY look is computed exactly
    (a binomial walk, stopped where it crosses). Each k_j is the largest rank that keeps this
    cumulative chance within the error spent so far, alpha * (n_j / n_last) ** rho (a Kim-DeMets
    power spending function), so the error over all looks holds at `alpha` per side. A rank of 0
    means no decision is possible at that look.
    """
    if not looks or any(b <= a for a, b in zip(looks, looks[1:])) or looks[0] < 1:
        raise ValueError(f"looks must be increasing sample sizes >= 1, got {list(looks)}")
    ranks: list[int] = []
    alive = np.ones(1)  # distribution of the above-count over walks that have not crossed yet
    crossed = 0.0
    previous = 0
    for n in looks:
        alive = _count_distribution_after(alive, n - previous, 0.5)
        previous = n
        allowed = alpha * (n / looks[-1]) ** rho
        rank = 0
        for k in range((n + 1) // 2, 0, -1):  # the widest interval (smallest k) is tried last
            needed = n - k + 1  # values above the limit for the lower end to be above it
            if crossed + float(alive[needed:].sum()) <= allowed + 1e-12:
                rank = k
                break
        if rank:
            crossed += float(alive[n - rank + 1 :].sum())
            alive = alive.copy()
            alive[n - rank + 1 :] = 0.0
        ranks.append(rank)
    return tuple(ranks)


def sequential_crossing_probability(looks: Sequence[int], ranks: Sequence[int], p: float) -> float:
    """Exact chance that the lower interval end of some look lies above the limit, when each value
    lies above it with probability p (p = 1/2: the true median is the limit; the design's error)."""
    alive = np.ones(1)
    crossed = 0.0
    previous = 0
    for n, rank in zip(looks, ranks):
        alive = _count_distribution_after(alive, n - previous, p)
        previous = n
        if rank:
            crossed += float(alive[n - rank + 1 :].sum())
            alive = alive.copy()
            alive[n - rank + 1 :] = 0.0
    return crossed


# --- between-run spread: is one new run's value inside the spread of earlier runs? -----------
def student_t_quantile(probability: float, df: int) -> float:
    """The `probability` quantile of Student's t with `df` degrees of freedom (numerically: the
    density integrated by Simpson's rule, the quantile found by bisection; 1e-6 is plenty here)."""
    if df < 1 or not 0.0 < probability < 1.0:
        raise ValueError(f"need df >= 1 and 0 < probability < 1, got df={df}, probability={probability}")
    if probability < 0.5:
        return -student_t_quantile(1.0 - probability, df)
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x: float) -> float:
        grid = np.linspace(0.0, x, 2001)
        density = np.exp(log_norm - (df + 1) / 2 * np.log1p(grid**2 / df))
        step = grid[1] - grid[0]
        simpson = density[0] + density[-1] + 4 * density[1:-1:2].sum() + 2 * density[2:-1:2].sum()
        return 0.5 + float(simpson * step / 3.0)

    low, high = 0.0, 1.0
    while cdf(high) < probability:
        high *= 2.0
    while high - low > 1e-6 * max(1.0, high):
        mid = (low + high) / 2.0
        low, high = (mid, high) if cdf(mid) < probability else (low, mid)
    return (low + high) / 2.0


def new_run_interval(
    run_values: Sequence[float], new_value: float, floor_sd: float = 0.0, confidence: float = CONFIDENCE
) -> tuple[float, tuple[float, float], float]:
    """How far one new run's value lies from earlier runs' mean, with a prediction interval.

    `run_values` are one value per earlier run (e.g. log median latency of each CI job); their
    standard deviation is the between-run spread, never taken below `floor_sd` (what the runs' own
    within-run noise implies). The difference new - mean has variance sd^2 (1 + 1/K), and the
    interval uses Student's t with K-1 degrees of freedom (normal run values assumed). Returns
    (difference, interval, sd); with fewer than two runs the spread is unknown: infinite interval.
    """
    data = np.asarray(run_values, dtype=float)
    if data.size == 0:
        return (math.nan, (math.nan, math.nan), math.nan)
    difference = float(new_value - data.mean())
    if data.size < 2:
        return (difference, (-math.inf, math.inf), math.nan)
    sd = max(float(data.std(ddof=1)), floor_sd)
    half = student_t_quantile(1.0 - (1.0 - confidence) / 2.0, int(data.size) - 1) * sd * math.sqrt(1 + 1 / data.size)
    return (difference, (difference - half, difference + half), sd)
