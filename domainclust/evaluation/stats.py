"""Summaries over repeats: mean with a 95 % t-interval, paired differences, and the verdict.

A claim that pretraining helped rests on the paired difference to the strongest baseline (same
shots in every repeat): `helped` when its whole 95 % interval lies above zero, `did not help`
when it lies below, `inconclusive` when it spans zero or there are too few repeats to tell.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

HELPED, DID_NOT_HELP, INCONCLUSIVE = "helped", "did not help", "inconclusive"


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int


def mean_ci(values: list[float] | np.ndarray, *, level: float = 0.95) -> Interval:
    """Mean and its two-sided t-interval; a single value gives an unbounded interval."""
    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean())
    if len(v) < 2:
        return Interval(mean=mean, low=float("-inf"), high=float("inf"), n=len(v))
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return Interval(mean=mean, low=mean - half, high=mean + half, n=len(v))


def verdict(difference: Interval) -> str:
    """helped / did not help / inconclusive from the interval of a paired difference."""
    if difference.low > 0:
        return HELPED
    if difference.high < 0:
        return DID_NOT_HELP
    return INCONCLUSIVE
