"""emo_ray.stats on simulated data with known answers.

Calibration tests count how often a seeded simulation rejects (or covers) and compare with the
nominal rate. Their tolerance is 4 binomial standard errors of the simulated rate,
``4 * sqrt(p (1 - p) / reps)``, plus any stated approximation error of the method itself: wide
enough that a correct method passes with any seed (a 4-sigma miss has probability ~1e-4), narrow
enough that the plausible bugs (normal instead of t quantiles, unpaired instead of paired,
one-sided instead of two-sided) land outside it. Every simulation is seeded, so the outcome is
reproducible.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from emo_ray.stats import (
    HOLM,
    HOLM_NOTE,
    Interval,
    NoFit,
    PowerLawFit,
    bootstrap_power_law,
    fit_power_law,
    format_interval,
    holm,
    mcnemar_exact,
    mean_interval,
    min_detectable_accuracy_difference,
    min_detectable_difference,
    one_sample_t_test,
    paired_t_test,
    seeds_needed,
    significance_mark,
    variance_components,
    welch_test,
)


def tolerance(p: float, reps: int, z: float = 4.0) -> float:
    """z binomial standard errors of a rate p estimated from reps independent repetitions."""
    return z * math.sqrt(p * (1 - p) / reps)


# --------------------------------------------------------------------------- mean_interval


def test_mean_interval_matches_t_table():
    iv = mean_interval([1, 2, 3, 4, 5])
    # s = sqrt(2.5), sem = s / sqrt(5) = sqrt(0.5); t_{4, 0.975} = 2.776445 (printed tables)
    assert iv.mean == 3.0 and iv.n == 5
    assert iv.half_width == pytest.approx(2.776445105 * math.sqrt(0.5), rel=1e-8)
    assert (iv.low, iv.high) == pytest.approx((3 - iv.half_width, 3 + iv.half_width))


def test_mean_interval_covers_true_mean_at_nominal_rate():
    # 5 seeds: a normal quantile would cover only ~88%, outside the tolerance, so this checks t.
    rng, reps, truth = np.random.default_rng(11), 2000, 0.7
    seeds = rng.normal(truth, 0.02, size=(reps, 5))
    covered = np.mean([(iv.low <= truth <= iv.high) for iv in map(mean_interval, seeds)])
    assert abs(covered - 0.95) <= tolerance(0.95, reps)


def test_mean_interval_single_seed_is_nan_not_zero_width():
    iv = mean_interval([0.81])
    assert iv.mean == 0.81 and iv.n == 1
    assert math.isnan(iv.low) and math.isnan(iv.high) and math.isnan(iv.half_width)
    assert format_interval(iv) == "0.810 (n=1)"


@pytest.mark.parametrize("bad", [[1.0, float("nan"), 2.0], [1.0, float("inf")]])
def test_mean_interval_rejects_non_finite(bad):
    with pytest.raises(ValueError, match="non-finite"):
        mean_interval(bad)


def test_mean_interval_rejects_empty_and_bad_level():
    with pytest.raises(ValueError, match="at least 1"):
        mean_interval([])
    with pytest.raises(ValueError, match="level"):
        mean_interval([1.0, 2.0], level=95)


# --------------------------------------------------------------------------- mcnemar_exact


def test_mcnemar_exact_hand_computed():
    # 10 discordant items, all won by a: p = 2 * 0.5**10
    a = [True] * 10 + [True] * 3 + [False] * 2
    b = [False] * 10 + [True] * 3 + [False] * 2
    res = mcnemar_exact(a, b)
    assert res.p_value == pytest.approx(2 / 1024)
    assert res.diff == pytest.approx(10 / 15)
    assert res.discordant == (10, 0) and res.n_a == res.n_b == 15
    # 7 vs 2 discordant: p = 2 * P(X <= 2), X ~ Bin(9, 1/2) = 2 * (1 + 9 + 36) / 512
    a = [1] * 7 + [0] * 2 + [1] * 5
    b = [0] * 7 + [1] * 2 + [1] * 5
    res = mcnemar_exact(a, b)
    assert res.p_value == pytest.approx(92 / 512)
    assert res.diff == pytest.approx(5 / 14)


def test_mcnemar_exact_no_discordant_pairs_gives_one():
    res = mcnemar_exact([1, 0, 1], [1, 0, 1])
    assert res.p_value == 1.0 and res.diff == 0.0 and res.discordant == (0, 0)


def _paired_items(
    rng: np.random.Generator, reps: int, n: int, a_only: float, b_only: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``reps`` experiments of per-item correctness of two arms on ``n`` items, with the given
    probabilities of an item being right for a only / b only (drawn at once: vectorised)."""
    cat = rng.choice(3, size=(reps, n), p=[a_only, b_only, 1 - a_only - b_only])
    both = rng.random((reps, n)) < 0.6  # concordant items: both right or both wrong
    a = np.where(cat == 0, True, np.where(cat == 1, False, both))
    b = np.where(cat == 0, False, np.where(cat == 1, True, both))
    return list(zip(a, b))


def test_mcnemar_exact_identical_arms_rarely_reject():
    # The exact test is conservative: its size is <= 5%; with ~100 discordant items it sits near
    # 3.5-4.5%. The lower bound fails a test that never rejects (e.g. p stuck at 1).
    rng, reps = np.random.default_rng(21), 1000
    p = np.array([mcnemar_exact(a, b).p_value for a, b in _paired_items(rng, reps, 400, 0.125, 0.125)])
    rate = np.mean(p < 0.05)
    assert rate <= 0.05 + tolerance(0.05, reps)
    assert rate >= 0.015


def test_min_detectable_accuracy_difference_has_stated_power():
    # Connor's normal approximation vs the exact test: allow 4 SE of the simulation plus 0.01.
    rng, reps, n, psi = np.random.default_rng(22), 1000, 400, 0.25
    delta = min_detectable_accuracy_difference(n, psi)
    assert 0 < delta < psi
    items = _paired_items(rng, reps, n, (psi + delta) / 2, (psi - delta) / 2)
    p = np.array([mcnemar_exact(a, b).p_value for a, b in items])
    assert abs(np.mean(p < 0.05) - 0.8) <= tolerance(0.8, reps) + 0.01


def test_min_detectable_accuracy_difference_undetectable_is_inf():
    assert min_detectable_accuracy_difference(10, 0.1) == math.inf


def test_mcnemar_rejects_bad_input():
    with pytest.raises(ValueError, match="length"):
        mcnemar_exact([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="booleans or 0/1"):
        mcnemar_exact([0.7, 1.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="non-finite"):
        mcnemar_exact([1.0, float("nan")], [1.0, 0.0])


# --------------------------------------------------------------------------- holm


def test_holm_hand_computed():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
    assert holm([0.02]) == [0.02] and holm([]) == []
    assert "Holm" in HOLM and "Holm" in HOLM_NOTE


def test_holm_rejects_invalid_p_values():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.2, 1.5])
    with pytest.raises(ValueError, match="non-finite"):
        holm([0.2, float("nan")])


# --------------------------------------------------------------------------- t-tests on seed values


def test_welch_matches_scipy_at_equal_n():
    rng = np.random.default_rng(60)
    a, b = rng.normal(0.5, 0.02, 3), rng.normal(0.48, 0.05, 3)
    res, ref = welch_test(a, b), sps.ttest_ind(a, b, equal_var=False)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-10) and res.df == pytest.approx(ref.df, rel=1e-10)
    assert res.diff == pytest.approx(a.mean() - b.mean()) and (res.n_a, res.n_b) == (3, 3)
    half = sps.t.ppf(0.975, ref.df) * res.se
    assert (res.low, res.high) == pytest.approx((res.diff - half, res.diff + half))
    assert "Satterthwaite" in res.method


def test_welch_unequal_n_uses_hsu_df():
    # 3 seeds against 5 pre-trained sampling runs: Welch's statistic, df = min(n) - 1 = 2.
    a, b = np.array([0.90, 0.93, 0.95]), np.array([0.50, 0.52, 0.51, 0.49, 0.53])
    res, ref = welch_test(a, b), sps.ttest_ind(a, b, equal_var=False)
    assert res.df == 2 and "Hsu" in res.method
    assert res.p_value == pytest.approx(2 * sps.t.sf(abs(ref.statistic), 2), rel=1e-10)
    assert res.p_value > ref.pvalue  # conservative next to Satterthwaite's df


def test_welch_degenerate_arms():
    same = welch_test([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    assert same.p_value == 1.0 and (same.low, same.high) == (0.0, 0.0) and "identical" in same.method
    apart = welch_test([0.6, 0.6], [0.5, 0.5])
    assert math.isnan(apart.p_value) and "untestable" in apart.method
    with pytest.raises(ValueError, match="at least 2"):
        welch_test([0.5], [0.4, 0.6])


def test_one_sample_and_paired_t_match_scipy():
    a, b = np.array([0.61, 0.64, 0.58, 0.66]), np.array([0.60, 0.61, 0.59, 0.62])
    one = one_sample_t_test(a, 0.6)
    assert one.p_value == pytest.approx(sps.ttest_1samp(a, 0.6).pvalue) and one.df == 3 and one.n_b == 0
    paired = paired_t_test(a, b)
    assert paired.p_value == pytest.approx(sps.ttest_rel(a, b).pvalue) and paired.n_a == paired.n_b == 4
    assert "paired t-test" in paired.method
    with pytest.raises(ValueError, match="length"):
        paired_t_test(a, b[:3])


@pytest.mark.parametrize("ratio", [0.25, 1.0, 4.0, 16.0])
def test_welch_size_at_unequal_n_stays_below_alpha(ratio):
    # 3 noisy seed values against 5 quieter pre-trained runs (and the reverse): where
    # Satterthwaite's df is liberal (5.8 % at 0.05 with ratio ~6), Hsu's df keeps the size.
    rng, reps = np.random.default_rng(61), 3000
    p = np.array([welch_test(rng.normal(0, math.sqrt(ratio), 3), rng.normal(0, 1, 5)).p_value for _ in range(reps)])
    assert np.mean(p < 0.05) <= 0.05 + tolerance(0.05, reps)


# --------------------------------------------------------------------------- power


@pytest.mark.parametrize("n", [3, 5, 10])
def test_min_detectable_difference_has_stated_power(n):
    # Paired / one-sample: se = sd / sqrt(n), df = n - 1; two-sample: se = sd sqrt(2 / n), df = 2n - 2.
    rng, reps = np.random.default_rng(40 + n), 4000
    paired = min_detectable_difference(1 / math.sqrt(n), n - 1)
    p = sps.ttest_1samp(rng.normal(paired, 1.0, (reps, n)), 0.0, axis=1).pvalue
    assert abs(np.mean(p < 0.05) - 0.8) <= tolerance(0.8, reps)
    unpaired = min_detectable_difference(math.sqrt(2 / n), 2 * n - 2)
    p = sps.ttest_ind(rng.normal(unpaired, 1.0, (reps, n)), rng.normal(0, 1.0, (reps, n)), axis=1).pvalue
    assert abs(np.mean(p < 0.05) - 0.8) <= tolerance(0.8, reps)


def test_min_detectable_difference_scales_and_approaches_normal():
    # Linear in se; at large df the t-test approaches the z-test: (z_{.975} + z_{.8}) se.
    assert min_detectable_difference(2.0, 4) == pytest.approx(2 * min_detectable_difference(1.0, 4))
    assert min_detectable_difference(1.0, 5000) == pytest.approx(sps.norm.ppf(0.975) + sps.norm.ppf(0.8), rel=2e-3)
    assert min_detectable_difference(1.0, 2, alpha=0.001 / 12) > 30  # 3 vs 3 seeds at the paper's level: huge


def test_min_detectable_difference_rejects_bad_input():
    for kwargs in ({"se": 0.0, "df": 4}, {"se": 1.0, "df": 0}, {"se": 1.0, "df": 4, "power": 0.01}):
        with pytest.raises(ValueError):
            min_detectable_difference(**kwargs)


# --------------------------------------------------------------------------- variance and planning


def test_variance_components_hand_computed_and_pooled_over_arms():
    # Seeds [1,2,3], [4,5,6]: MSW = 4 / 4 = 1; MSB = 3 * (1.5^2 + 1.5^2) / 1 = 13.5; n0 = 3.
    vc = variance_components([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]])
    assert (vc.within, vc.between) == pytest.approx((1.0, (13.5 - 1.0) / 3))
    assert vc.share == pytest.approx(vc.between / (vc.between + 1.0)) and vc.n_seeds == 2 and vc.runs_per_seed == 3
    # A second arm shifted by 100 adds the same seed spread, not its objective's difference.
    pooled = variance_components([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], [[101.0, 102.0, 103.0], [104.0, 105.0, 106.0]]])
    assert (pooled.within, pooled.between) == pytest.approx((vc.within, vc.between))
    one = variance_components([[[0.5, 0.6, 0.7]]])
    assert math.isnan(one.between) and math.isnan(one.share) and one.within == pytest.approx(0.01)


def test_variance_components_recover_simulated_truth():
    rng, reps, between, within = np.random.default_rng(62), 1000, 0.5, 1.0
    est = [variance_components([list(rng.normal(0, math.sqrt(between), (10, 1)) + rng.normal(0, 1, (10, 5)))])
           for _ in range(reps)]
    assert np.mean([e.within for e in est]) == pytest.approx(within, abs=0.02)
    assert np.mean([e.between for e in est]) == pytest.approx(between, abs=0.05)  # truncation at 0 is rare here


def _welch_power(rng, reps, seeds, runs, delta, between, within, alpha):
    """Simulated power of Welch on seed means of two arms of seeds x runs, true difference delta."""
    def arm(shift):
        return shift + rng.normal(0, math.sqrt(between), (reps, seeds)) \
            + rng.normal(0, math.sqrt(within), (reps, seeds, runs)).mean(axis=2)
    p = sps.ttest_ind(arm(delta), arm(0.0), axis=1, equal_var=False).pvalue
    return np.mean(p < alpha)


def test_seeds_needed_reaches_the_stated_power_and_no_fewer_do():
    rng, reps, between, within, delta = np.random.default_rng(63), 4000, 0.0004, 0.002, 0.05
    s = seeds_needed(delta, between, within, runs_per_seed=5, alpha=0.05)
    assert s is not None and s >= 3
    assert _welch_power(rng, reps, s, 5, delta, between, within, 0.05) >= 0.8 - tolerance(0.8, reps)
    assert _welch_power(rng, reps, s - 1, 5, delta, between, within, 0.05) < 0.8
    # Sampling runs cannot buy down the seed variance: with it all between seeds, K does not matter.
    assert seeds_needed(delta, 0.001, 0.0, 1) == seeds_needed(delta, 0.001, 0.0, 20)
    assert seeds_needed(delta, between, within, 20) <= s <= seeds_needed(delta, between, within, 1)
    assert seeds_needed(1e-4, 1.0, 1.0, 5, max_seeds=50) is None
    with pytest.raises(ValueError, match="delta"):
        seeds_needed(0.0, 1.0, 1.0, 5)


# --------------------------------------------------------------------------- power law


def test_power_law_noiseless_recovers_exactly():
    x = np.array([1e8, 3e8, 1e9, 3e9])
    fit = fit_power_law(x, 2.0 * x ** -0.1)
    assert isinstance(fit, PowerLawFit)
    assert (fit.a, fit.b, fit.r2) == pytest.approx((2.0, -0.1, 1.0))
    assert (fit.a_low, fit.a_high, fit.b_low, fit.b_high) == pytest.approx((2.0, 2.0, -0.1, -0.1))


@pytest.mark.parametrize("points,seeds", [(3, 1), (3, 3), (4, 2), (5, 3)])
def test_power_law_intervals_cover_at_few_points(points, seeds):
    # Figure 1's design: 3-5 model sizes (or data volumes), one point per training seed. The
    # residual bootstrap covered ~60 % at 3 points; the t intervals are exact under the model.
    rng, reps, a, b = np.random.default_rng(50 + points * seeds), 2000, 3.0, -0.2
    x = np.repeat(np.logspace(7, 10, points), seeds)
    ys = a * x ** b * np.exp(rng.normal(0, 0.05, (reps, len(x))))
    fits = [fit_power_law(x, y) for y in ys]
    for cover in (np.mean([f.a_low <= a <= f.a_high for f in fits]), np.mean([f.b_low <= b <= f.b_high for f in fits])):
        assert abs(cover - 0.95) <= tolerance(0.95, reps)
    assert fits[0].n == points * seeds


def test_power_law_no_fit_reasons():
    fit = fit_power_law([1e8, 1e8, 1e9], [0.5, 0.6, 0.7])
    assert isinstance(fit, NoFit) and fit.reason == "2 distinct x value(s); a power law needs >= 3"
    fit = fit_power_law([1.0, 2.0, 3.0], [0.5, 0.0, 0.7])
    assert isinstance(fit, NoFit) and "> 0" in fit.reason


def test_power_law_rejects_bad_input():
    with pytest.raises(ValueError, match="length"):
        fit_power_law([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="non-finite"):
        fit_power_law([1.0, 2.0, 3.0], [1.0, float("nan"), 2.0])

def test_bootstrap_power_law_noiseless_and_same_estimate_as_ols():
    x = np.repeat([4e3, 1.6e4, 6.4e4, 2.56e5], 3)
    exact = bootstrap_power_law(x, 5.0 * x ** -0.08, n_boot=200)
    assert isinstance(exact, PowerLawFit)
    assert (exact.a_low, exact.a_high, exact.b_low, exact.b_high) == pytest.approx((5.0, 5.0, -0.08, -0.08))
    y = 5.0 * x ** -0.08 * np.exp(np.random.default_rng(3).normal(0, 0.02, len(x)))
    boot, ols = bootstrap_power_law(y=y, x=x, n_boot=300), fit_power_law(x, y)
    assert (boot.a, boot.b, boot.r2, boot.n) == pytest.approx((ols.a, ols.b, ols.r2, ols.n))
    assert boot.b_low < boot.b < boot.b_high and boot.a_low < boot.a < boot.a_high
    assert bootstrap_power_law(x, y, n_boot=300) == boot  # the resampling is seeded: same report twice


def test_bootstrap_power_law_covers_b_with_five_seeds_per_x():
    # Stratified percentile bootstrap: with n seeds per x a resample keeps (n-1)/n of their
    # variance, so it under-covers slightly at few seeds; at 5 seeds per x it stays near 0.95.
    rng, reps, a, b = np.random.default_rng(7), 300, 4.0, -0.1
    x = np.repeat(np.logspace(3.5, 5.5, 4), 5)
    ys = a * x ** b * np.exp(rng.normal(0, 0.05, (reps, len(x))))
    fits = [bootstrap_power_law(x, y, n_boot=300, seed=i) for i, y in enumerate(ys)]
    cover = np.mean([f.b_low <= b <= f.b_high for f in fits])
    assert 0.85 <= cover <= 0.99, cover


def test_bootstrap_power_law_reasons_and_bad_input():
    fit = bootstrap_power_law([1e3, 1e3, 4e3, 4e3], [1.0, 1.1, 0.9, 0.95])
    assert isinstance(fit, NoFit) and fit.reason == "2 distinct x value(s); a power law needs >= 3"
    fit = bootstrap_power_law([1e3, 1e3, 4e3, 4e3, 1.6e4], [1.0, 1.1, 0.9, 0.95, 0.8])
    assert isinstance(fit, NoFit) and fit.reason.startswith("1 point at x = 16000;")
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_power_law([1.0, 1.0, 2.0, 2.0, 3.0, 3.0], [1.0, 1.1, 2.0, 2.1, 3.0, 3.1], n_boot=10)


# --------------------------------------------------------------------------- printing


def test_significance_mark_and_format():
    assert significance_mark(0.0009) == "*"
    assert significance_mark(0.001) == "" and significance_mark(0.2) == ""
    assert significance_mark(float("nan")) == ""
    assert significance_mark(0.01, alpha=0.05) == "*"
    assert format_interval(Interval(0.875, 0.863, 0.887, 3, 0.012, 0.95)) == "0.875 ± 0.012"
