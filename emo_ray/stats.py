"""Statistics for comparing training objectives (mle, tailr, mixce, emo) across seeds and items.

A table of seed means says little unless it carries its uncertainty and the tests behind any
"objective A beats B" claim. This module holds the few procedures the reports need, as pure
functions over numpy arrays (or lists) that return floats or small frozen records:

* ``mean_interval``: seed mean with a Student-t interval (few seeds, so t rather than normal);
* ``mcnemar_exact``: paired per-item correctness (ICL accuracy) of two objectives;
* ``paired_bootstrap``: paired continuous scores (MAUVE, oracle perplexity per prompt or run);
* ``two_sample_test``: the same for two independent samples with nothing to pair on (the
  sampling runs of a fine-tuned model against those of the pre-trained model);
* ``holm``: Holm-Bonferroni adjustment when one table makes several comparisons;
* ``min_detectable_difference`` / ``min_detectable_accuracy_difference``: what a design can see;
* ``fit_power_law``: the scaling-law fit ``y = a * x**b`` with bootstrap intervals, or a reason
  why no fit was made;
* ``significance_mark`` / ``format_interval``: how the numbers are printed.

Distributions come from ``scipy.stats``; only step-down bookkeeping (Holm) and the residual
bootstrap of a straight-line fit are written here.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

ArrayLike = Sequence[float] | Sequence[bool] | np.ndarray

HOLM = "Holm-Bonferroni"
# What a report prints under a table whose p-values went through ``holm``.
HOLM_NOTE = "p-values adjusted with Holm-Bonferroni step-down (family-wise error rate)"


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


@dataclass(frozen=True)
class PairedTest:
    """Result of a comparison of arm ``a`` against arm ``b``: paired (McNemar, paired bootstrap;
    ``n`` pairs) or, from ``two_sample_test``, unpaired (``n`` observations in both arms).

    ``diff`` is ``stat(a) - stat(b)`` (accuracy difference for McNemar); ``low``/``high`` its
    interval at ``level`` (all three nan when the test does not produce one); ``method`` names the procedure so a report
    can say how ``p_value`` was obtained. ``discordant`` is ``(a right & b wrong, a wrong & b
    right)`` for McNemar, else None.
    """

    diff: float
    p_value: float
    n: int
    low: float
    high: float
    level: float
    method: str
    discordant: tuple[int, int] | None = None


@dataclass(frozen=True)
class PowerLawFit:
    """``y = a * x**b`` fitted in log-log space; ``r2`` is on the log scale, where the fit is
    made; ``a_low``..``b_high`` are bootstrap percentile intervals at ``level``."""

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


# --------------------------------------------------------------------------- input checks


def _finite_1d(values: ArrayLike, name: str, min_len: int = 1) -> np.ndarray:
    """``values`` as a 1-D float array; ValueError naming the problem (shape, length, nan/inf)."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence, got shape {arr.shape}")
    if len(arr) < min_len:
        raise ValueError(f"{name}: needs at least {min_len} value(s), got {len(arr)}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if len(bad):
        raise ValueError(f"{name}: {len(bad)} non-finite value(s) (nan/inf) at positions {bad[:10].tolist()}")
    return arr


def _bool_1d(values: ArrayLike, name: str) -> np.ndarray:
    """Per-item correctness as a bool array; only True/False or 0/1 are accepted, because a
    score like 0.7 passed here by mistake would silently become True."""
    arr = _finite_1d(values, name)
    if not np.isin(arr, (0.0, 1.0)).all():
        raise ValueError(f"{name}: correctness must be booleans or 0/1, got other values")
    return arr.astype(bool)


def _same_length(a: np.ndarray, b: np.ndarray) -> None:
    if len(a) != len(b):
        raise ValueError(f"paired arms differ in length: {len(a)} vs {len(b)}; "
                         "both must score the same items (or seeds) in the same order")


def _check_level(level: float, name: str = "level") -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {level}")


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


# --------------------------------------------------------------------------- paired tests


def mcnemar_exact(correct_a: ArrayLike, correct_b: ArrayLike) -> PairedTest:
    """Exact McNemar test of two objectives scored on the same items.

    Only discordant items carry information on which arm is better: under the null each is
    equally likely to favour ``a`` or ``b``, so the p-value is the two-sided binomial test
    (``scipy.stats.binomtest``, p=0.5) of ``a``'s wins among the discordant items. The exact
    test is conservative (its size is at most alpha). ``diff`` is accuracy(a) - accuracy(b).
    With no discordant item there is no evidence either way: p = 1.
    """
    a, b = _bool_1d(correct_a, "correct_a"), _bool_1d(correct_b, "correct_b")
    _same_length(a, b)
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    m = a_only + b_only
    p = 1.0 if m == 0 else float(stats.binomtest(a_only, m, 0.5).pvalue)
    diff = float(a.mean() - b.mean())
    return PairedTest(diff, min(p, 1.0), len(a), math.nan, math.nan, math.nan,
                      "exact McNemar (two-sided binomial test on discordant items)", (a_only, b_only))


def paired_bootstrap(
    a: ArrayLike,
    b: ArrayLike,
    n_boot: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
    stat: Callable[..., np.ndarray] = np.mean,
    method: str = "BCa",
    n_perm: int | None = None,
) -> PairedTest:
    """Paired comparison of continuous scores (MAUVE, oracle perplexity) per prompt or per run.

    * ``diff = stat(a) - stat(b)``; ``stat`` must accept ``axis=`` (np.mean, np.median do).
    * Interval: ``scipy.stats.bootstrap(paired=True)`` resampling whole pairs, BCa by default
      (MAUVE and perplexity are skewed; BCa corrects bias and skew). When every pair has the
      same difference BCa is undefined, and the percentile interval (a single point, which is
      what resampling such data shows) is reported instead; ``method`` records which was used.
    * p-value: paired sign-flip randomisation test, ``scipy.stats.permutation_test`` with
      ``permutation_type='samples'`` (the two scores of a pair are swapped at random). Under the
      null that the arms are exchangeable within pairs it has the stated size even for few
      pairs, which a p-value read off the centred bootstrap distribution does not; it is exact
      (all 2**n flips) when 2**n <= n_perm, otherwise Monte Carlo with the +1 correction, so it
      is never 0 and never below ~2 / (n_perm + 1): ``n_perm`` (default ``n_boot``) sets that
      resolution, which Holm over many comparisons at the paper's p < 0.001 needs to be fine
      (resampled in batches of 10,000, so memory stays ~10,000 x n floats). Interval and p-value come from different resamplings and can disagree at the
      margin.
    """
    _check_level(level)
    x, y = _finite_1d(a, "a", min_len=2), _finite_1d(b, "b", min_len=2)
    _same_length(x, y)

    def diff_stat(u: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
        return stat(u, axis=axis) - stat(v, axis=axis)

    diff = float(diff_stat(x, y))
    rng = np.random.default_rng(seed)
    used = method
    if np.ptp(x - y) == 0.0:
        used = "percentile"  # BCa's acceleration divides by the jackknife spread, which is 0 here
    low, high, p = _resample(x, y, diff_stat, True, used, n_boot, n_perm or n_boot, level, rng)
    return PairedTest(diff, p, len(x), low, high, level, f"paired sign-flip permutation test; {used} bootstrap interval")


def _resample(x: np.ndarray, y: np.ndarray, diff_stat: Callable[..., np.ndarray], paired: bool, method: str,
              n_boot: int, n_perm: int, level: float, rng: np.random.Generator) -> tuple[float, float, float]:
    """Bootstrap interval and two-sided permutation p-value of ``diff_stat(x, y)``: paired
    (resample pairs; swap within pairs) or independent (resample each arm; re-split the pool)."""
    boot = stats.bootstrap((x, y), diff_stat, n_resamples=n_boot, paired=paired, vectorized=True,
                           confidence_level=level, method=method, rng=rng)
    perm = stats.permutation_test((x, y), diff_stat, permutation_type="samples" if paired else "independent",
                                  vectorized=True, n_resamples=n_perm, alternative="two-sided", rng=rng,
                                  batch=10_000)
    return float(boot.confidence_interval.low), float(boot.confidence_interval.high), min(float(perm.pvalue), 1.0)


def two_sample_test(
    a: ArrayLike,
    b: ArrayLike,
    n_boot: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
    n_perm: int | None = None,
) -> PairedTest:
    """Difference of the means of two independent samples, for scores with nothing to pair on:
    the 3 seeds x 5 sampling runs of a fine-tuned model against the 5 sampling runs of the
    pre-trained model share no training seed, and repeating the pre-trained runs to fill pairs
    would count them three times.

    * ``diff = mean(a) - mean(b)``; ``n`` in the result is ``len(a) + len(b)``.
    * Interval: ``scipy.stats.bootstrap(paired=False)``, each arm resampled on its own, BCa
      (percentile when both arms are constant, where BCa is undefined).
    * p-value: two-sample randomisation test, ``scipy.stats.permutation_test`` with
      ``permutation_type='independent'`` (the pooled scores re-split at random into arms of the
      original sizes). Exact (every split) when C(n_a + n_b, n_a) <= ``n_perm`` (15 vs 5 runs:
      15,504 splits, smallest two-sided p = 2/15,504), else Monte Carlo; never 0.
    """
    _check_level(level)
    x, y = _finite_1d(a, "a", min_len=2), _finite_1d(b, "b", min_len=2)

    def diff_stat(u: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean(u, axis=axis) - np.mean(v, axis=axis)

    diff = float(diff_stat(x, y))
    rng = np.random.default_rng(seed)
    used = "percentile" if np.ptp(x) == 0.0 and np.ptp(y) == 0.0 else "BCa"
    low, high, p = _resample(x, y, diff_stat, False, used, n_boot, n_perm or n_boot, level, rng)
    return PairedTest(diff, p, len(x) + len(y), low, high, level, f"two-sample permutation test; {used} bootstrap interval")


# --------------------------------------------------------------------------- multiplicity


def holm(p_values: ArrayLike) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order.

    Sorted ascending, the i-th smallest (0-based) of m p-values becomes ``(m - i) * p``, made
    monotone by a running maximum and capped at 1. Rejecting adjusted p < alpha controls the
    family-wise error rate at alpha, uniformly more powerful than plain Bonferroni.
    Name the correction in reports with ``HOLM`` / ``HOLM_NOTE``.
    """
    p = _finite_1d(p_values, "holm", min_len=0)
    if ((p < 0) | (p > 1)).any():
        raise ValueError("holm: p-values must lie in [0, 1]")
    m = len(p)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted.tolist()


# --------------------------------------------------------------------------- design / power


def _t_power(nc: float, df: float, alpha: float) -> float:
    """Power of the two-sided t-test at noncentrality ``nc`` (both rejection tails)."""
    crit = stats.t.ppf(1 - alpha / 2, df)
    lower = float(stats.nct.cdf(-crit, df, nc))
    # scipy's nct can return nan far in the lower tail (seen at df=1, nc=8), where the true
    # value is below alpha/2 * 1e-6 and negligible next to the upper tail.
    return float(stats.nct.sf(crit, df, nc)) + (0.0 if math.isnan(lower) else lower)


def min_detectable_difference(
    sd: float, n: int, alpha: float = 0.05, power: float = 0.8, paired: bool = True, n_b: int | None = None
) -> float:
    """Smallest true mean difference a two-sided t-test detects with probability ``power``.

    ``paired=True``: one-sample t-test on n paired differences (same seed for both objectives),
    ``sd`` is the sd of those differences, df = n-1, noncentrality ``delta * sqrt(n) / sd``.
    ``paired=False``: two-sample equal-variance t-test with n observations in one arm and ``n_b``
    (default n) in the other, ``sd`` the pooled per-arm sd, df = n + n_b - 2, noncentrality
    ``delta / (sd * sqrt(1/n + 1/n_b))``.
    The power curve of the noncentral t (``scipy.stats.nct``) is inverted with ``brentq``; no
    normal approximation, so it stays right at 3-5 seeds.
    """
    if not (math.isfinite(sd) and sd > 0):
        raise ValueError(f"sd must be finite and > 0, got {sd}")
    _check_level(alpha, "alpha")
    if not alpha < power < 1:
        raise ValueError(f"power must be in (alpha, 1) = ({alpha}, 1), got {power}")
    if n < 2:
        raise ValueError(f"n must be >= 2 for a t-test, got {n}")
    if n_b is not None and (paired or n_b < 1):
        raise ValueError(f"n_b is the second arm of an unpaired test and must be >= 1, got {n_b} (paired={paired})")
    n_b = n if n_b is None else n_b
    df = n - 1 if paired else n + n_b - 2
    hi = 1.0
    while _t_power(hi, df, alpha) < power:  # power rises with nc; bracket the root
        hi *= 2
    nc = optimize.brentq(lambda c: _t_power(c, df, alpha) - power, 0.0, hi, xtol=1e-10)
    scale = sd / math.sqrt(n) if paired else sd * math.sqrt(1 / n + 1 / n_b)
    return float(nc * scale)


def min_detectable_accuracy_difference(
    n_items: int, discordant_rate: float, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Smallest accuracy difference McNemar's test detects on ``n_items`` paired items.

    Normal approximation of Connor (1987): with discordant proportion ``psi`` and accuracy
    difference ``delta`` (= p(a only) - p(b only)), ``sqrt(n) * delta = z_{1-alpha/2} sqrt(psi)
    + z_power sqrt(psi - delta**2)``, solved for delta with brentq. It is approximate (the exact
    test used by ``mcnemar_exact`` is a little conservative) and needs ~20+ expected discordant
    items to be trusted. ``delta`` cannot exceed ``psi``; if even ``delta = psi`` is not
    detectable, returns ``inf``.
    """
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    if not 0 < discordant_rate <= 1:
        raise ValueError(f"discordant_rate must be in (0, 1], got {discordant_rate}")
    _check_level(alpha, "alpha")
    if not 0.5 <= power < 1:
        raise ValueError(f"power must be in [0.5, 1) for this approximation, got {power}")
    za, zb = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    psi, root_n = discordant_rate, math.sqrt(n_items)

    def gap(delta: float) -> float:
        return root_n * delta - za * math.sqrt(psi) - zb * math.sqrt(max(psi - delta * delta, 0.0))

    if gap(psi) < 0:
        return math.inf
    return float(optimize.brentq(gap, 0.0, psi, xtol=1e-12))


# --------------------------------------------------------------------------- scaling laws


def _line_fits(lx: np.ndarray, ly: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares (intercept, slope) of each row of ``ly`` on the fixed design ``lx``."""
    dx = lx - lx.mean()
    slope = (ly - ly.mean(axis=-1, keepdims=True)) @ dx / (dx @ dx)
    return ly.mean(axis=-1) - slope * lx.mean(), slope


def fit_power_law(
    x: ArrayLike, y: ArrayLike, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> PowerLawFit | NoFit:
    """``y = a * x**b`` by least squares on ``log y = log a + b log x`` (``scipy.stats.linregress``).

    Fitted only with >= 3 distinct x (two points always fit a line exactly, so there would be
    nothing to judge the law by) and all x, y > 0 (logs); otherwise ``NoFit`` says which.
    Intervals: residual bootstrap with x fixed (scaling curves have few, designed x values, so
    resampling points would often leave < 2 distinct x). Residuals are leverage-adjusted and
    centred (Davison & Hinkley 1997, Alg. 6.2) so their spread is not understated; percentile
    intervals of log a and b, exponentiated for a. With few points these intervals are
    somewhat narrow (normal rather than t quantiles in effect).
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
    fitted = reg.intercept + reg.slope * lx
    ss_res, ss_tot = float(((ly - fitted) ** 2).sum()), float(((ly - ly.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0

    n = len(lx)
    leverage = 1 / n + (lx - lx.mean()) ** 2 / ((lx - lx.mean()) ** 2).sum()
    resid = (ly - fitted) / np.sqrt(1 - leverage)  # leverage < 1 since >= 3 distinct x
    resid -= resid.mean()
    rng = np.random.default_rng(seed)
    ly_boot = fitted + rng.choice(resid, size=(n_boot, n), replace=True)
    log_a, b = _line_fits(lx, ly_boot)
    q = [50 * (1 - level), 50 * (1 + level)]
    (la_lo, la_hi), (b_lo, b_hi) = np.percentile(log_a, q), np.percentile(b, q)
    return PowerLawFit(float(math.exp(reg.intercept)), float(reg.slope), r2, float(math.exp(la_lo)),
                       float(math.exp(la_hi)), float(b_lo), float(b_hi), n, level)


# --------------------------------------------------------------------------- printing


def significance_mark(p: float, alpha: float = 0.001) -> str:
    """``"*"`` when ``p < alpha`` (the paper marks p < 0.001), else ``""`` (also for nan)."""
    return "*" if p < alpha else ""


def format_interval(interval: Interval, digits: int = 3) -> str:
    """``"0.875 ± 0.012"`` (mean ± half width); a single seed prints as ``"0.875 (n=1)"``."""
    if math.isnan(interval.half_width):
        return f"{interval.mean:.{digits}f} (n={interval.n})"
    return f"{interval.mean:.{digits}f} ± {interval.half_width:.{digits}f}"
