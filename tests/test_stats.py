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
    fit_power_law,
    format_interval,
    holm,
    mcnemar_exact,
    mean_interval,
    min_detectable_accuracy_difference,
    min_detectable_difference,
    paired_bootstrap,
    significance_mark,
    two_sample_test,
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
    assert res.discordant == (10, 0) and res.n == 15
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


# --------------------------------------------------------------------------- paired_bootstrap


def test_paired_bootstrap_exact_sign_flip_p_value():
    # 5 pairs all favouring a: the observed split is the most extreme of the 2**5 sign flips,
    # so the exact two-sided p-value is 2 / 32 (permutation_test enumerates all 32 flips).
    a, b = np.array([3.0, 4.0, 5.5, 6.0, 7.0]), np.array([2.0, 3.5, 4.0, 5.0, 6.5])
    res = paired_bootstrap(a, b, n_boot=1000)
    assert res.p_value == pytest.approx(2 / 32)
    assert res.diff == pytest.approx(np.mean(a - b))
    assert res.low <= res.diff <= res.high


def test_paired_bootstrap_uses_the_pairing():
    # Prompts differ a lot (sd 10) but a beats b on every prompt by ~0.5: only a paired method
    # sees it; an unpaired one would have an interval ~+-4 wide and p ~ 0.8.
    rng = np.random.default_rng(31)
    base = rng.normal(50, 10, 40)
    a, b = base + 0.5 + rng.normal(0, 0.2, 40), base + rng.normal(0, 0.2, 40)
    res = paired_bootstrap(a, b)  # default n_boot=10_000
    assert res.p_value < 1e-3 and significance_mark(res.p_value) == "*"
    assert 0.3 < res.low < 0.5 < res.high < 0.7


def test_paired_bootstrap_identical_arms_reject_at_nominal_rate():
    rng, reps = np.random.default_rng(32), 400
    p = np.array([paired_bootstrap(*rng.normal(0, 1, (2, 25)), n_boot=500, seed=i).p_value
                  for i in range(reps)])
    assert abs(np.mean(p < 0.05) - 0.05) <= tolerance(0.05, reps)


def test_paired_bootstrap_interval_covers_planted_difference():
    # Skewed scores (gamma, like perplexities) with a planted mean shift of 0.5.
    rng, reps, shift = np.random.default_rng(33), 300, 0.5
    covered = []
    for i in range(reps):
        a = rng.gamma(2.0, 1.0, 30)
        res = paired_bootstrap(a, a - shift + rng.normal(0, 1, 30), n_boot=500, seed=i)
        covered.append(res.low <= shift <= res.high)
    assert abs(np.mean(covered) - 0.95) <= tolerance(0.95, reps)


def test_paired_bootstrap_median_and_degenerate():
    a, b = np.array([1.0, 2.0, 10.0, 3.0]), np.array([0.0, 0.0, 0.0, 0.0])
    assert paired_bootstrap(a, b, stat=np.median, n_boot=500).diff == pytest.approx(2.5)
    # Every pair differs by exactly 1: BCa is undefined, the percentile interval is the point.
    res = paired_bootstrap([1.0, 2.0, 3.0], [0.0, 1.0, 2.0], n_boot=500)
    assert (res.low, res.high) == pytest.approx((1.0, 1.0)) and "percentile" in res.method


def test_paired_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="length"):
        paired_bootstrap([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least 2"):
        paired_bootstrap([1.0], [2.0])
    with pytest.raises(ValueError, match="non-finite"):
        paired_bootstrap([1.0, float("inf")], [1.0, 2.0])


# --------------------------------------------------------------------------- two_sample_test


def test_two_sample_test_exact_p_value():
    # Every a above every b: of the C(8, 3) = 56 re-splits of the pooled scores the observed one
    # is the most extreme, and its mirror the most extreme the other way: exact two-sided 2 / 56.
    a, b = np.array([5.0, 6.0, 7.0, 8.0, 9.0]), np.array([1.0, 2.0, 3.0])
    res = two_sample_test(a, b, n_boot=1000)
    assert res.p_value == pytest.approx(2 / 56)
    assert res.diff == pytest.approx(5.0) and res.n == 8
    assert res.low <= res.diff <= res.high and "two-sample permutation" in res.method


def test_two_sample_test_identical_arms_reject_at_nominal_rate():
    # The sweep's shape: 15 fine-tuned sampling runs against 5 pre-trained ones.
    rng, reps = np.random.default_rng(34), 400
    p = np.array([two_sample_test(rng.normal(0, 1, 15), rng.normal(0, 1, 5), n_boot=200, n_perm=500, seed=i).p_value
                  for i in range(reps)])
    assert abs(np.mean(p < 0.05) - 0.05) <= tolerance(0.05, reps)


def test_two_sample_test_detects_the_mdd_at_its_stated_power():
    # Planted difference = the unequal-arm MDD (alpha 0.05, power 0.8): the permutation test finds
    # it about 80% of the time (it matches the t-test's power on normal data; +0.03 for that).
    rng, reps = np.random.default_rng(35), 300
    shift = min_detectable_difference(1.0, 15, paired=False, n_b=5)
    p = np.array([two_sample_test(rng.normal(shift, 1, 15), rng.normal(0, 1, 5), n_boot=200, n_perm=500, seed=i).p_value
                  for i in range(reps)])
    assert abs(np.mean(p < 0.05) - 0.8) <= tolerance(0.8, reps) + 0.03


def test_two_sample_test_interval_covers_planted_difference():
    # Skewed scores with a planted mean shift; BCa over two independent arms of 30 and 20.
    rng, reps, shift = np.random.default_rng(36), 300, 0.5
    covered = [(lambda r: r.low <= shift <= r.high)(
        two_sample_test(rng.gamma(2.0, 1.0, 30) + shift, rng.gamma(2.0, 1.0, 20), n_boot=500, n_perm=100, seed=i))
        for i in range(reps)]
    # Bootstrap intervals from 20-30 skewed observations undercover (0.92 over 1,500 repetitions
    # of this design, BCa and percentile alike); allow 0.03 for that.
    assert abs(np.mean(covered) - 0.95) <= tolerance(0.95, reps) + 0.03


def test_two_sample_test_constant_arms_and_bad_input():
    res = two_sample_test([1.0, 1.0, 1.0], [0.0, 0.0], n_boot=200)
    assert (res.low, res.high) == pytest.approx((1.0, 1.0)) and "percentile" in res.method
    assert res.p_value == pytest.approx(2 / 10)  # C(5, 2) = 10 splits, the observed and its mirror extreme
    with pytest.raises(ValueError, match="at least 2"):
        two_sample_test([1.0], [2.0, 3.0])
    with pytest.raises(ValueError, match="non-finite"):
        two_sample_test([1.0, float("nan")], [1.0, 2.0])


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


# --------------------------------------------------------------------------- power


@pytest.mark.parametrize("n", [3, 5, 10])
def test_min_detectable_difference_has_stated_power(n):
    rng, reps = np.random.default_rng(40 + n), 4000
    paired = min_detectable_difference(1.0, n)
    p = sps.ttest_1samp(rng.normal(paired, 1.0, (reps, n)), 0.0, axis=1).pvalue
    assert abs(np.mean(p < 0.05) - 0.8) <= tolerance(0.8, reps)
    unpaired = min_detectable_difference(1.0, n, paired=False)
    p = sps.ttest_ind(rng.normal(unpaired, 1.0, (reps, n)), rng.normal(0, 1.0, (reps, n)), axis=1).pvalue
    assert abs(np.mean(p < 0.05) - 0.8) <= tolerance(0.8, reps)


def test_min_detectable_difference_unequal_arms_has_stated_power():
    rng, reps = np.random.default_rng(44), 4000
    mdd = min_detectable_difference(1.0, 15, paired=False, n_b=5)
    assert min_detectable_difference(1.0, 5, paired=False) > mdd > min_detectable_difference(1.0, 15, paired=False)
    p = sps.ttest_ind(rng.normal(mdd, 1.0, (reps, 15)), rng.normal(0, 1.0, (reps, 5)), axis=1).pvalue
    assert abs(np.mean(p < 0.05) - 0.8) <= tolerance(0.8, reps)
    assert min_detectable_difference(1.0, 6, paired=False, n_b=6) == min_detectable_difference(1.0, 6, paired=False)
    with pytest.raises(ValueError, match="n_b"):
        min_detectable_difference(1.0, 6, n_b=6)  # paired: there is no second arm size


def test_min_detectable_difference_scales_and_approaches_normal():
    # Linear in sd; at large n the t-test approaches the z-test: (z_{.975} + z_{.8}) sd / sqrt(n).
    assert min_detectable_difference(2.0, 5) == pytest.approx(2 * min_detectable_difference(1.0, 5))
    z = (sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) / math.sqrt(2000)
    assert min_detectable_difference(1.0, 2000) == pytest.approx(z, rel=2e-3)
    assert min_detectable_difference(1.0, 2) > 10  # one df: huge, but finite


def test_min_detectable_difference_rejects_bad_input():
    for kwargs in ({"sd": 0.0, "n": 5}, {"sd": 1.0, "n": 1}, {"sd": 1.0, "n": 5, "power": 0.01}):
        with pytest.raises(ValueError):
            min_detectable_difference(**kwargs)


# --------------------------------------------------------------------------- power law


def test_power_law_noiseless_recovers_exactly():
    x = np.array([1e8, 3e8, 1e9, 3e9])
    fit = fit_power_law(x, 2.0 * x ** -0.1)
    assert isinstance(fit, PowerLawFit)
    assert (fit.a, fit.b, fit.r2) == pytest.approx((2.0, -0.1, 1.0))
    assert fit.a_low == pytest.approx(2.0) and fit.a_high == pytest.approx(2.0)
    assert fit.b_low == pytest.approx(-0.1) and fit.b_high == pytest.approx(-0.1)


def test_power_law_noisy_recovers_and_intervals_cover():
    # Residual-bootstrap percentile intervals behave like normal-quantile intervals, so with 10
    # points (8 residual df) they cover a little under 95% (~91%); 0.85 is ~3.5 SE below that.
    rng, reps, a, b = np.random.default_rng(50), 300, 3.0, -0.2
    x = np.logspace(7, 10, 10)
    ys = a * x**b * np.exp(rng.normal(0, 0.05, (reps, 10)))
    fits = [fit_power_law(x, y, n_boot=1000, seed=i) for i, y in enumerate(ys)]
    assert all(isinstance(f, PowerLawFit) for f in fits)
    assert np.median([f.b for f in fits]) == pytest.approx(b, abs=0.005)
    assert np.median([f.a for f in fits]) == pytest.approx(a, rel=0.05)
    cover_a = np.mean([f.a_low <= a <= f.a_high for f in fits])
    cover_b = np.mean([f.b_low <= b <= f.b_high for f in fits])
    for cover in (cover_a, cover_b):
        assert 0.85 <= cover <= 0.95 + tolerance(0.95, reps)


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


# --------------------------------------------------------------------------- printing


def test_significance_mark_and_format():
    assert significance_mark(0.0009) == "*"
    assert significance_mark(0.001) == "" and significance_mark(0.2) == ""
    assert significance_mark(float("nan")) == ""
    assert significance_mark(0.01, alpha=0.05) == "*"
    assert format_interval(Interval(0.875, 0.863, 0.887, 3, 0.012, 0.95)) == "0.875 ± 0.012"
