"""Statistics for comparing training objectives (mle, tailr, mixce, emo) across training seeds.

A claim "objective A beats B" is a claim about what training with A does, so it must hold over
the training seeds: three seeds are three replicates, however many sampling runs, prompts or
items each seed was scored on. Sampling runs, prompts and items nested in a seed are repeated
measurements of one trained network; pooling them with the seeds treats seed-to-seed variation as
if it were measurement noise, and a test on 15 (seed, run) pairs or 250 prompts then rejects far
more often than its alpha (29 % / 19 % at 0.05 in the simulations of issue 22). So the report
reduces each seed to one value and every test here works on those values:

* ``mean_interval``: seed mean with a Student-t interval, t(S-1) over S seed values;
* ``welch_test``: two arms of seed values (or the pre-trained model's sampling runs), Welch's t;
* ``one_sample_t_test`` / ``paired_t_test``: seed values against a fixed number (a deterministic
  pre-trained score), or per-prompt differences of two single checkpoints;
* ``mcnemar_exact``: per-item correctness of two single checkpoints (ICL with one seed);
* ``holm``: Holm-Bonferroni adjustment when one table makes several comparisons;
* ``min_detectable_difference`` (any t-test, from its se and df) and
  ``min_detectable_accuracy_difference`` (McNemar): what the test actually run can see;
* ``variance_components`` / ``seeds_needed``: how the variance splits between seeds and sampling
  runs, and how many seeds x sampling runs a stated difference needs (power planning);
* ``fit_power_law``: the scaling-law fit ``y = a * x**b`` with exact t intervals;
  ``bootstrap_power_law``: the same fit with intervals from resampling seeds within each x;
* ``significance_mark`` / ``format_interval``: how the numbers are printed.

Distributions come from ``scipy.stats``; only formulas a reader should check are written here.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
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
class Comparison:
    """Arm ``a`` against arm ``b``. ``diff`` is mean(a) - mean(b) (accuracy difference for
    McNemar); ``low``/``high`` its interval at ``level`` (nan when the test gives none);
    ``n_a``/``n_b`` the replicates per arm (pairs for a paired test: both equal); ``se`` and
    ``df`` the t-test's standard error and degrees of freedom, so that the MDD of exactly this
    test can be computed (nan for McNemar); ``discordant`` is ``(a right & b wrong, a wrong &
    b right)`` for McNemar, else None; ``method`` names the procedure."""

    diff: float
    p_value: float
    low: float
    high: float
    level: float
    method: str
    n_a: int
    n_b: int
    se: float = math.nan
    df: float = math.nan
    discordant: tuple[int, int] | None = None


@dataclass(frozen=True)
class VarianceComponents:
    """One-way random-effects split of a metric's variance: ``between`` seeds (sigma_s^2) and
    ``within`` a seed across its sampling runs (sigma_w^2, per run); ``share`` = between /
    (between + within). nan where the data cannot tell (one seed; one run per seed)."""

    between: float
    within: float
    share: float
    n_seeds: int
    runs_per_seed: float


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


# --------------------------------------------------------------------------- checkpoint tests


def mcnemar_exact(correct_a: ArrayLike, correct_b: ArrayLike) -> Comparison:
    """Exact McNemar test of two single checkpoints scored on the same items.

    Only discordant items carry information on which arm is better: under the null each is
    equally likely to favour ``a`` or ``b``, so the p-value is the two-sided binomial test
    (``scipy.stats.binomtest``, p=0.5) of ``a``'s wins among the discordant items. The exact
    test is conservative (its size is at most alpha). ``diff`` is accuracy(a) - accuracy(b).
    Items are not replicates of an objective: with one seed per arm this compares checkpoints.
    With no discordant item there is no evidence either way: p = 1.
    """
    a, b = _bool_1d(correct_a, "correct_a"), _bool_1d(correct_b, "correct_b")
    _same_length(a, b)
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    m = a_only + b_only
    p = 1.0 if m == 0 else float(stats.binomtest(a_only, m, 0.5).pvalue)
    diff = float(a.mean() - b.mean())
    return Comparison(diff, min(p, 1.0), math.nan, math.nan, math.nan,
                      "exact McNemar (two-sided binomial test on discordant items)", len(a), len(a), discordant=(a_only, b_only))


# --------------------------------------------------------------------------- t-tests on seed values


def _t_result(diff: float, se: float, df: float, level: float, method: str, n_a: int, n_b: int) -> Comparison:
    """Two-sided p-value and t interval ``diff ± t_{df} * se``. With ``se == 0`` (no spread at
    all) the t statistic is 0/0 for identical arms, which carry no evidence of a difference (p = 1,
    the interval the point 0), and undefined otherwise (p and interval nan)."""
    if not se > 0:
        if diff == 0:
            return Comparison(0.0, 1.0, 0.0, 0.0, level, method + " (identical arms)", n_a, n_b, se, df)
        return Comparison(diff, math.nan, math.nan, math.nan, level, method + " (no spread: untestable)", n_a, n_b, se, df)
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    p = float(2 * stats.t.sf(abs(diff) / se, df))
    return Comparison(diff, min(p, 1.0), diff - half, diff + half, level, method, n_a, n_b, se, df)


def welch_test(a: ArrayLike, b: ArrayLike, level: float = 0.95) -> Comparison:
    """Welch's t-test of mean(a) - mean(b) for two arms of independent replicates with their
    own variances: ``se = sqrt(s_a^2/n_a + s_b^2/n_b)``.

    Replicates are training seeds (one value each), or for the pre-trained model, which has no
    training seed, its sampling runs: their spread is what the variance of its mean needs.
    Degrees of freedom: Welch-Satterthwaite when ``n_a == n_b``; Hsu's ``min(n_a, n_b) - 1``
    otherwise. Satterthwaite's df is liberal when the smaller arm is the noisier one, which is
    exactly 3 seeds (seed + sampling variance) against 5 pre-trained sampling runs (sampling
    variance only): simulated, it rejects 5.8 % at alpha 0.05 with 75 % of the variance between
    seeds. Hsu's df makes the test conservative by construction (Mickey & Brown 1966); at equal
    n Satterthwaite is at or below nominal (3.5 % at 3 vs 3 seeds), so it keeps its power there.
    """
    _check_level(level)
    x, y = _finite_1d(a, "a", min_len=2), _finite_1d(b, "b", min_len=2)
    va, vb = float(x.var(ddof=1)) / len(x), float(y.var(ddof=1)) / len(y)
    if len(x) == len(y):
        df = (va + vb) ** 2 / (va ** 2 / (len(x) - 1) + vb ** 2 / (len(y) - 1)) if va + vb > 0 else len(x) - 1.0
        how = "Welch t-test (Satterthwaite df)"
    else:
        df, how = float(min(len(x), len(y)) - 1), "Welch t-test (Hsu df = min(n) - 1)"
    return _t_result(float(x.mean() - y.mean()), math.sqrt(va + vb), df, level, how, len(x), len(y))


def one_sample_t_test(values: ArrayLike, reference: float = 0.0, level: float = 0.95) -> Comparison:
    """t-test of mean(values) against a fixed number: ``t = (mean - reference) / (s / sqrt(n))``,
    df = n - 1. Used for seed values against a score without sampling noise (a deterministic
    ICL accuracy of the pre-trained model on the same items); ``n_b`` is 0."""
    _check_level(level)
    x = _finite_1d(values, "values", min_len=2)
    se = float(x.std(ddof=1)) / math.sqrt(len(x))
    return _t_result(float(x.mean()) - reference, se, len(x) - 1.0, level, "one-sample t-test vs a fixed score",
                     len(x), 0)


def paired_t_test(a: ArrayLike, b: ArrayLike, level: float = 0.95) -> Comparison:
    """Paired t-test of mean(a - b) over items both arms scored (prompts of two single
    checkpoints): the inference is about these two checkpoints, not their objectives."""
    x, y = _finite_1d(a, "a", min_len=2), _finite_1d(b, "b", min_len=2)
    _same_length(x, y)
    r = one_sample_t_test(x - y, 0.0, level)
    method = r.method.replace("one-sample t-test vs a fixed score", "paired t-test")
    return Comparison(r.diff, r.p_value, r.low, r.high, level, method, len(x), len(x), r.se, r.df)


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


def min_detectable_difference(se: float, df: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true difference a two-sided t-test with standard error ``se`` and ``df`` degrees
    of freedom detects with probability ``power`` at level ``alpha``.

    The test's statistic is noncentral t with noncentrality ``delta / se``; its power curve
    (``scipy.stats.nct``, both rejection tails) is inverted with ``brentq``, no normal
    approximation, so it stays right at 2-4 df. Pass the ``se`` and ``df`` of the test that was
    run (``Comparison.se``/``.df``) and the alpha it must reach (Holm-adjusted), so the MDD
    belongs to that test. The variance in ``se`` is the observed one, so the MDD is itself an
    estimate, as noisy as that variance at few seeds.
    """
    if not (math.isfinite(se) and se > 0):
        raise ValueError(f"se must be finite and > 0, got {se}")
    if not (math.isfinite(df) and df > 0):
        raise ValueError(f"df must be finite and > 0, got {df}")
    _check_level(alpha, "alpha")
    if not alpha < power < 1:
        raise ValueError(f"power must be in (alpha, 1) = ({alpha}, 1), got {power}")
    hi = 1.0
    while _t_power(hi, df, alpha) < power:  # power rises with nc; bracket the root
        hi *= 2
    nc = optimize.brentq(lambda c: _t_power(c, df, alpha) - power, 0.0, hi, xtol=1e-10)
    return float(nc * se)


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


# --------------------------------------------------------------------------- variance and planning


def variance_components(arms: Sequence[Sequence[ArrayLike]]) -> VarianceComponents:
    """Between-seed and within-seed (sampling-run) variance from sampling runs nested in seeds,
    pooled over ``arms`` (each a list of per-seed arrays of sampling-run values; each arm keeps
    its own mean, so objective differences do not count as seed variance).

    One-way random-effects ANOVA (method of moments): ``MSW = SSW / (N - S)``, ``MSB = SSB /
    (S - g)`` with S seeds over g arms, ``sigma_w^2 = MSW``, ``sigma_s^2 = max(0, (MSB - MSW) /
    n0)`` with ``n0 = (N - sum n_i^2 / N_arm) / (S - g)`` summed per arm (n0 = K runs per seed when
    balanced). A seed mean over K runs then has variance ``sigma_s^2 + sigma_w^2 / K``: the seed
    share says how much of it more sampling runs cannot remove.
    """
    ssb = ssw = n0_num = 0.0
    n_seeds = n_obs = n_arms = 0
    for arm in arms:
        groups = [_finite_1d(g, "sampling runs of a seed") for g in arm]
        if not groups:
            continue
        sizes = np.array([len(g) for g in groups], float)
        means = np.array([g.mean() for g in groups])
        grand = float(np.concatenate(groups).mean())
        ssb += float((sizes * (means - grand) ** 2).sum())
        ssw += float(sum(((g - g.mean()) ** 2).sum() for g in groups))
        n0_num += sizes.sum() - (sizes ** 2).sum() / sizes.sum()
        n_seeds, n_obs, n_arms = n_seeds + len(groups), n_obs + int(sizes.sum()), n_arms + 1
    if n_seeds == 0:
        raise ValueError("variance_components: no seed with any value")
    within = ssw / (n_obs - n_seeds) if n_obs > n_seeds else math.nan
    if n_seeds > n_arms:
        msb, n0 = ssb / (n_seeds - n_arms), n0_num / (n_seeds - n_arms)
        # One run per seed: the seed values' variance is all there is (between + within, unsplit).
        between = max(0.0, (msb - within) / n0) if math.isfinite(within) else msb
    else:
        between = math.nan
    total = between + within
    share = between / total if math.isfinite(total) and total > 0 else math.nan
    return VarianceComponents(float(between), float(within), float(share), n_seeds, n_obs / n_seeds)


def seeds_needed(delta: float, between: float, within: float, runs_per_seed: int, alpha: float = 0.05,
                 power: float = 0.8, max_seeds: int = 1000) -> int | None:
    """Smallest number of training seeds per arm for which two arms of S seeds x K sampling runs
    detect a true difference ``delta`` with ``power`` at two-sided ``alpha`` (Welch at equal n,
    planned with equal variances: ``se = sqrt(2 v / S)``, df = 2S - 2, ``v = sigma_s^2 +
    sigma_w^2 / K``); None when even ``max_seeds`` does not suffice.

    Why seeds x runs and not runs alone: as K grows ``v`` falls to ``sigma_s^2``, never below,
    so with a seed share near 1 extra sampling runs buy nothing and only seeds help.
    """
    if not (math.isfinite(delta) and delta > 0):
        raise ValueError(f"delta must be finite and > 0, got {delta}")
    if not (between >= 0 and within >= 0 and between + within > 0):
        raise ValueError(f"variances must be >= 0 and not both 0, got between={between}, within={within}")
    if runs_per_seed < 1:
        raise ValueError(f"runs_per_seed must be >= 1, got {runs_per_seed}")
    _check_level(alpha, "alpha")
    v = between + within / runs_per_seed
    for s in range(2, max_seeds + 1):
        if _t_power(delta / math.sqrt(2 * v / s), 2 * s - 2, alpha) >= power:
            return s
    return None


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


# --------------------------------------------------------------------------- printing


def significance_mark(p: float, alpha: float = 0.001) -> str:
    """``"*"`` when ``p < alpha`` (the paper marks p < 0.001), else ``""`` (also for nan)."""
    return "*" if p < alpha else ""


def format_interval(interval: Interval, digits: int = 3) -> str:
    """``"0.875 ± 0.012"`` (mean ± half width); a single seed prints as ``"0.875 (n=1)"``."""
    if math.isnan(interval.half_width):
        return f"{interval.mean:.{digits}f} (n={interval.n})"
    return f"{interval.mean:.{digits}f} ± {interval.half_width:.{digits}f}"
