"""What a test can see and what a design needs: minimum detectable differences, the split of a
metric's variance between seeds and sampling runs, and the seeds a stated difference needs."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from emo_ray.stats.checks import ArrayLike, _check_level, _finite_1d


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
