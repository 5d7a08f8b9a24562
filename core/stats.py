"""The statistics every report uses: mean intervals, paired bootstrap lifts, McNemar's test.

One place, so "95 % interval" means the same computation in `adapt`, the eval harness, the gate and
the memory's utility statistics.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence


def t95(df: int) -> float:
    """Two-sided 95 % Student t quantile for `df` degrees of freedom (nan for df ≤ 0)."""
    if df <= 0:
        return math.nan
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t-interval (0 for a single value, nan for none)."""
    if not values:
        return (math.nan, math.nan)
    m = statistics.fmean(values)
    if len(values) < 2:
        return (m, 0.0)
    return (m, t95(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values)))


def interval_from_sums(n: int, total: float, total_sq: float, z: float,
                       bounds: tuple[float, float]) -> tuple[float, float]:
    """Normal-approximation interval of a mean kept as running sums (count, sum, sum of squares),
    clipped to `bounds`. Fewer than two observations give the whole range (nothing is known)."""
    lo_bound, hi_bound = bounds
    if n < 2:
        return lo_bound, hi_bound
    mean = total / n
    var = max(total_sq - n * mean * mean, 0.0) / (n - 1)
    half = z * math.sqrt(var / n)
    return max(lo_bound, mean - half), min(hi_bound, mean + half)


def paired_ci(base: Sequence[float], new: Sequence[float], rng: random.Random,
              resamples: int = 4000, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(new − base), resampling items (paired)."""
    diffs = [a - b for a, b in zip(new, base, strict=True)]
    if not diffs:
        return (0.0, 0.0)
    n = len(diffs)
    means = sorted(sum(rng.choices(diffs, k=n)) / n for _ in range(resamples))
    lo = means[int((1 - level) / 2 * (resamples - 1))]
    hi = means[int((1 + level) / 2 * (resamples - 1))]
    return (round(lo, 6), round(hi, 6))


def mcnemar_p(base: Sequence[float], new: Sequence[float]) -> float:
    """Exact two-sided McNemar p-value for paired binary outcomes (scores rounded at 0.5).

    Only the discordant items count: b = solved before but not after, c = the reverse; under no
    effect c ~ Binomial(b + c, 1/2). 1.0 when no item changed.
    """
    pairs = [(x >= 0.5, y >= 0.5) for x, y in zip(base, new, strict=True)]
    b = sum(1 for x, y in pairs if x and not y)
    c = sum(1 for x, y in pairs if y and not x)
    if b + c == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(c, b + c, 0.5).pvalue)
