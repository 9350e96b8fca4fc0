"""The scaling-law fit ``y = a * x**b``: exact t intervals, or intervals from resampling seeds."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from emo_ray.stats.checks import ArrayLike, _check_level, _finite_1d, _same_length


@dataclass(frozen=True)
class PowerLawFit:
    """``y = a * x**b`` fitted in log-log space; ``r2`` is on the log scale, where the fit is
    made; ``a_low``..``b_high`` are t intervals at ``level`` with ``n - 2`` df."""

    a: float
    b: float
    r2: float
    a_low: float
    a_high: float
    b_low: float
    b_high: float
    n: int
    level: float


@dataclass(frozen=True)
class NoFit:
    """No power law was fitted; ``reason`` says why, in words a report can print."""

    reason: str


# --------------------------------------------------------------------------- scaling laws


def fit_power_law(x: ArrayLike, y: ArrayLike, level: float = 0.95) -> PowerLawFit | NoFit:
    """``y = a * x**b`` by ordinary least squares on ``log y = log a + b log x``.

    Pass one point per training seed (several seeds at each x): they are the replicates, and the
    residual variance then includes the seed spread. Fitted only with >= 3 distinct x (two x
    always fit a line exactly, so there would be nothing to judge the law by) and all x, y > 0;
    otherwise ``NoFit`` says which.
    Intervals: ``estimate ± t_{n-2} * se`` for log a and b (textbook OLS standard errors,
    ``scipy.stats.linregress``), exponentiated for a. Under the log-log linear model with
    independent normal errors they are exact at any n, which a residual bootstrap is not (it
    covers ~60 % at 3 points: it uses normal-like quantiles and shrunken residuals).
    """
    _check_level(level)
    xa, ya = _finite_1d(x, "x"), _finite_1d(y, "y")
    _same_length(xa, ya)
    distinct = len(np.unique(xa))
    if distinct < 3:
        return NoFit(f"{distinct} distinct x value(s); a power law needs >= 3")
    nonpos = int((xa <= 0).sum() + (ya <= 0).sum())
    if nonpos:
        return NoFit(f"{nonpos} value(s) <= 0; a log-log fit needs all x, y > 0")
    lx, ly = np.log(xa), np.log(ya)
    reg = stats.linregress(lx, ly)
    n = len(lx)
    ss_tot = float(((ly - ly.mean()) ** 2).sum())
    r2 = float(reg.rvalue ** 2) if ss_tot > 0 else 1.0
    t = float(stats.t.ppf(0.5 + level / 2, n - 2))
    la, b = float(reg.intercept), float(reg.slope)
    la_half, b_half = t * float(reg.intercept_stderr), t * float(reg.stderr)
    return PowerLawFit(math.exp(la), b, r2, math.exp(la - la_half), math.exp(la + la_half), b - b_half, b + b_half,
                       n, level)


def _log_log_slope(lx: np.ndarray, ly: np.ndarray) -> tuple[float, float]:
    """OLS ``(log a, b)`` of ``ly = log a + b lx``."""
    b = float(np.cov(lx, ly, ddof=1)[0, 1] / lx.var(ddof=1))
    return float(ly.mean() - b * lx.mean()), b


def bootstrap_power_law(x: ArrayLike, y: ArrayLike, level: float = 0.95, n_boot: int = 2000,
                        seed: int = 0) -> PowerLawFit | NoFit:
    """``y = a * x**b`` as ``fit_power_law`` (same estimate, same ``r2``), with percentile
    bootstrap intervals on ``a`` and ``b`` from resampling the seeds within each x.

    The x values are the design (data volumes, model sizes), fixed by the sweep; what varies from
    one sweep to the next is which training seeds land at each x. So each replicate draws, at
    every x, as many points as it has, with replacement from its own points (a stratified
    bootstrap), and refits. Unlike the t intervals this assumes no normal errors on the log scale,
    only exchangeable seeds at each x; with few seeds per x it is narrower than the t interval
    (a resample of n seeds has (n-1)/n of their variance), so it needs >= 2 points at every x and
    is best read beside ``fit_power_law``'s. ``seed`` fixes the resampling (reproducible reports).
    """
    fit = fit_power_law(x, y, level)
    if isinstance(fit, NoFit):
        return fit
    if n_boot < 100:
        raise ValueError(f"n_boot must be >= 100 for percentile intervals, got {n_boot}")
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    groups = [np.flatnonzero(lx == v) for v in np.unique(lx)]
    single = [float(np.exp(lx[g[0]])) for g in groups if len(g) < 2]
    if single:
        return NoFit(f"1 point at x = {', '.join(f'{v:g}' for v in single)}; resampling seeds within each x "
                     "needs >= 2 per x")
    rng = np.random.default_rng(seed)
    estimates = np.empty((n_boot, 2))
    for i in range(n_boot):
        pick = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
        estimates[i] = _log_log_slope(lx[pick], ly[pick])
    tail = 100 * (1 - level) / 2
    la_low, la_high = np.percentile(estimates[:, 0], [tail, 100 - tail])
    b_low, b_high = np.percentile(estimates[:, 1], [tail, 100 - tail])
    return PowerLawFit(fit.a, fit.b, fit.r2, math.exp(la_low), math.exp(la_high), float(b_low), float(b_high),
                       fit.n, level)
