"""The uncertainty the table reports: mean ± sample std per experiment, and Welch's t interval for the
difference of two experiments' means.

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
from collections.abc import Sequence
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
