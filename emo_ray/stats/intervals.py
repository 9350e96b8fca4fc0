"""A seed mean with its Student-t interval, and how intervals and significance are printed."""
from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats

from emo_ray.stats.checks import ArrayLike, _check_level, _finite_1d


@dataclass(frozen=True)
class Interval:
    """A mean with a two-sided interval; ``low``, ``high`` and ``half_width`` are nan when the
    data cannot support one (a single seed), never a zero-width interval."""

    mean: float
    low: float
    high: float
    n: int
    half_width: float
    level: float


# --------------------------------------------------------------------------- seed means


def mean_interval(values: ArrayLike, level: float = 0.95) -> Interval:
    """Mean over training seeds with a Student-t interval ``mean ± t_{n-1} * s / sqrt(n)``.

    Seeds are few (3-5), where the normal quantile would understate the spread noticeably
    (1.96 vs 2.78 at n=5), hence t. With n=1 there is no spread estimate, so the interval is
    nan rather than a misleading zero width.
    """
    _check_level(level)
    x = _finite_1d(values, "mean_interval")
    n, mean = len(x), float(x.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, math.nan, level)
    sem = float(x.std(ddof=1)) / math.sqrt(n)
    half = float(stats.t.ppf(0.5 + level / 2, df=n - 1)) * sem
    return Interval(mean, mean - half, mean + half, n, half, level)


# --------------------------------------------------------------------------- printing


def significance_mark(p: float, alpha: float = 0.001) -> str:
    """``"*"`` when ``p < alpha`` (the paper marks p < 0.001), else ``""`` (also for nan)."""
    return "*" if p < alpha else ""


def format_interval(interval: Interval, digits: int = 3) -> str:
    """``"0.875 ± 0.012"`` (mean ± half width); a single seed prints as ``"0.875 (n=1)"``."""
    if math.isnan(interval.half_width):
        return f"{interval.mean:.{digits}f} (n={interval.n})"
    return f"{interval.mean:.{digits}f} ± {interval.half_width:.{digits}f}"
