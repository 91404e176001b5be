"""The uncertainty the table reports: mean ± sample std per experiment; the paired t interval of the mean
difference where the runs are pairs by design (same seed, common random numbers: ``pipeline.report.pairing``),
else Welch's t interval for the difference of two experiments' means; and how many seeds would resolve a
change.

Paired t (e.g. NIST/SEMATECH e-Handbook 7.3.1; scipy ``ttest_rel``): for the n per-seed differences d_i with
mean d̄ and sample std s_d, CI = d̄ ± t(0.975, n-1) · s_d/√n. Where the two arms' errors correlate across
seeds (same init, same data stream), s_d is far below the arms' own spread and the interval narrows.

Welch's interval (Welch 1947; e.g. NIST/SEMATECH e-Handbook 7.3.1) does not assume equal variances, and its
Welch-Satterthwaite degrees of freedom shrink with few seeds, so the interval widens honestly where a study
has 2 or 3 seeds per experiment. scipy computes it (``ttest_ind(equal_var=False)``): for means m_a, m_b,
sample variances s_a², s_b², sizes n_a, n_b,

    se² = s_a²/n_a + s_b²/n_b,   df = se⁴ / ((s_a²/n_a)²/(n_a-1) + (s_b²/n_b)²/(n_b-1)),
    CI  = (m_a - m_b) ± t(0.975, df) · se.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scipy import stats as scipy_stats

CONFIDENCE = 0.95
MIN_SEEDS = 3  # fewer runs per experiment: the table says so


@dataclass(frozen=True)
class Summary:
    """Values over seeds: mean, sample standard deviation (None for a single run), count."""

    mean: float
    std: float | None
    n: int


@dataclass(frozen=True)
class Interval:
    """A confidence interval [low, high] and the degrees of freedom behind it."""

    low: float
    high: float
    df: float

    def as_list(self) -> list[float]:
        return [self.low, self.high]


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        raise ValueError("summarize needs at least one value")
    std = statistics.stdev(values) if len(values) > 1 else None
    return Summary(statistics.fmean(values), std, len(values))


def welch_interval(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Interval | None:
    """Welch's t interval for mean(a) - mean(b); None when either group has fewer than 2 values (no spread to
    estimate). Two groups without any spread give the zero-width interval at the difference."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1) (got {confidence})")
    if len(a) < 2 or len(b) < 2:
        return None
    delta = statistics.fmean(a) - statistics.fmean(b)
    if statistics.variance(a) == 0.0 and statistics.variance(b) == 0.0:
        return Interval(delta, delta, math.inf)  # scipy would give nan: no spread, no uncertainty to show
    welch = scipy_stats.ttest_ind(a, b, equal_var=False)
    interval = welch.confidence_interval(confidence)
    return Interval(float(interval.low), float(interval.high), float(welch.df))


def paired_interval(
    a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
) -> Interval | None:
    """The paired t interval of mean(a_i - b_i) (a_i, b_i: the same seed); None for fewer than 2 pairs.
    Differences without any spread give the zero-width interval at the difference."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1) (got {confidence})")
    if len(a) != len(b):
        raise ValueError(f"paired_interval needs as many values in a as in b (got {len(a)} and {len(b)})")
    if len(a) < 2:
        return None
    differences = [x - y for x, y in zip(a, b, strict=True)]
    if statistics.variance(differences) == 0.0:
        mean = statistics.fmean(differences)
        return Interval(mean, mean, float(len(a) - 1))
    paired = scipy_stats.ttest_rel(a, b)
    interval = paired.confidence_interval(confidence)
    return Interval(float(interval.low), float(interval.high), float(paired.df))


def correlation(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Pearson's r of the pairs; None for fewer than 2 pairs or an arm without spread."""
    if len(a) < 2 or statistics.pvariance(a) == 0.0 or statistics.pvariance(b) == 0.0:
        return None
    return float(statistics.correlation(a, b))


MAX_SEEDS_NEEDED = 1000  # beyond this the table says "> 1000": the change is too small for the spread


def _smallest_n(half_width: Callable[[int], float], target: float) -> int | None:
    """The smallest n in [2, MAX_SEEDS_NEEDED] whose half-width falls below |target|; None if none does."""
    if target == 0.0 or math.isnan(target):
        return None
    for n in range(2, MAX_SEEDS_NEEDED + 1):
        if half_width(n) < abs(target):
            return n
    return None


def seeds_needed_paired(sd_difference: float, target: float, confidence: float = CONFIDENCE) -> int | None:
    """Pairs (seeds per arm) n whose paired interval's half-width t(q, n-1)·s_d/√n is below |target|, at the
    observed std of the differences s_d; None: none up to MAX_SEEDS_NEEDED (or no change to resolve)."""
    quantile = 0.5 + confidence / 2
    return _smallest_n(lambda n: scipy_stats.t.ppf(quantile, n - 1) * sd_difference / math.sqrt(n), target)


def seeds_needed_welch(sd_a: float, sd_b: float, target: float, confidence: float = CONFIDENCE) -> int | None:
    """Seeds per arm n whose Welch interval's half-width is below |target| at the observed stds (both arms
    with n runs: se² = (s_a² + s_b²)/n, df = (n-1)(s_a² + s_b²)² / (s_a⁴ + s_b⁴))."""
    quantile = 0.5 + confidence / 2
    var_sum, fourth = sd_a**2 + sd_b**2, sd_a**4 + sd_b**4

    def half_width(n: int) -> float:
        if var_sum == 0.0:
            return 0.0
        df = (n - 1) * var_sum**2 / fourth
        return scipy_stats.t.ppf(quantile, df) * math.sqrt(var_sum / n)

    return _smallest_n(half_width, target)
