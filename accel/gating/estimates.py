"""The gate's estimates: a timed metric's change and its interval, from per-process samples.

Pure functions from samples to log changes (signed so + is worse) and their intervals; what the
numbers mean for a verdict is accel.gating.verdicts' business.

- Paired processes (`--against`): the median of the per-pair log ratios candidate/baseline, with an
  exact order-statistic interval at the rank the sequential design (accel.core.stats.
  sequential_median_ranks) allows at each planned look.
- Stored runs (`--baseline`): this run's log median minus the mean over the stored runs, with the
  prediction interval of the between-run spread (accel.core.stats.new_run_interval).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from accel.core.stats import median_rank, new_run_interval, order_interval, sequential_median_ranks

# Below 6 values no exact 95% interval of a median exists: even (min, max) of 5 covers 93.8%
# (1 - 2/2^5); of 6 it covers 96.9%.
MIN_SAMPLES = 6
# Where the adaptive loop starts and stops: 6 pairs decide clear cases; past 16 the interval
# narrows by sqrt(n) only, slower than CI machines drift. Pairs are added 2 at a time.
START_PAIRS = 6
MAX_PAIRS = 16
PAIR_STEP = 2
CONFIDENCE = 0.95
# Error per side over all looks (FAIL at a true change equal to the threshold; PASS likewise).
ALPHA_PER_SIDE = (1.0 - CONFIDENCE) / 2.0
# Kim-DeMets spending exponent: 0.25 spends enough at the first look (6 pairs) for a decision
# there (the smallest one-sided level 6 values reach is 1/64); a larger one would force 8 pairs.
SPENDING_RHO = 0.25
# The median absolute deviation times this is the standard deviation of normal data.
MAD_TO_SD = 1.4826


def planned_looks(start: int = START_PAIRS, most: int = MAX_PAIRS) -> tuple[int, ...]:
    """The pair counts at which the gate looks: start, start + 2, ... and the most."""
    looks = list(range(start, most + 1, PAIR_STEP))
    if looks[-1] != most:
        looks.append(most)
    return tuple(looks)


def look_rank(samples: int, looks: Sequence[int] | None) -> int:
    """The order-statistic rank for a look at `samples` pairs: the design's, or fixed-n 95%."""
    if not looks:
        return median_rank(samples, CONFIDENCE)
    ranks = sequential_median_ranks(tuple(looks), ALPHA_PER_SIDE, SPENDING_RHO)
    # Between or past planned looks the last one reached is used: with more values the same rank
    # is only more conservative.
    reached = [r for n, r in zip(looks, ranks) if n <= samples]
    return reached[-1] if reached else 0


def paired_log_change(
    baseline: Sequence[float], candidate: Sequence[float], direction: int = 1, looks: Sequence[int] | None = None
) -> tuple[float, tuple[float, float]]:
    """Median of per-pair log(candidate/baseline), signed so + is worse, with its exact interval."""
    a, b = as_positive(baseline), as_positive(candidate)
    if a.size != b.size:
        raise ValueError(f"paired samples need equal lengths, got {a.size} and {b.size}")
    logs = direction * (np.log(b) - np.log(a))
    if logs.size == 0:
        return math.nan, (math.nan, math.nan)
    return float(np.median(logs)), order_interval(logs, look_rank(int(logs.size), looks))


def spread(logs: np.ndarray) -> float:
    """A robust standard deviation (median absolute deviation, scaled): outliers do not inflate it."""
    if logs.size < 2:
        return math.nan
    return MAD_TO_SD * float(np.median(np.abs(logs - np.median(logs))))


def between_run_log_change(
    runs: Sequence[Sequence[float]], candidate: Sequence[float], direction: int = 1
) -> tuple[float, tuple[float, float], float]:
    """This run against stored runs: log(median now) - mean over runs of log(median then), signed so
    + is worse, with the prediction interval of the between-run spread, and that spread.

    The spread is never taken below what the processes' own noise implies for a run's median
    (1.2533 sd / sqrt(n), the standard error of a median of normal data)."""
    run_logs = [float(np.log(np.median(as_positive(r)))) for r in runs if len(r)]
    now = as_positive(candidate)
    if not run_logs or now.size == 0:
        return math.nan, (math.nan, math.nan), math.nan
    within = [spread(np.log(as_positive(r))) for r in (*runs, candidate) if len(r) >= 2]
    sizes = [len(r) for r in (*runs, candidate) if len(r) >= 2]
    floor = max((w * 1.2533 / math.sqrt(n) for w, n in zip(within, sizes) if not math.isnan(w)), default=0.0)
    difference, (low, high), sd = new_run_interval(run_logs, float(np.log(np.median(now))), floor_sd=floor)
    if direction < 0:
        difference, low, high = -difference, -high, -low
    return difference, (low, high), sd


def as_positive(values: Sequence[float]) -> np.ndarray:
    data = np.asarray(values, dtype=float)
    # A zero (e.g. no tensor memory at all) would make the log infinite: a byte or a
    # nanosecond is far below anything the gate resolves.
    return np.maximum(data, 1e-9)
