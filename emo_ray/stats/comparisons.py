"""Two arms compared: t-tests on seed values, exact McNemar on the items of two single checkpoints,
and the Holm-Bonferroni adjustment of a table's family of comparisons."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from emo_ray.stats.checks import ArrayLike, _bool_1d, _check_level, _finite_1d, _same_length

HOLM = "Holm-Bonferroni"
# What a report prints under a table whose p-values went through ``holm``.
HOLM_NOTE = "p-values adjusted with Holm-Bonferroni step-down (family-wise error rate)"


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
