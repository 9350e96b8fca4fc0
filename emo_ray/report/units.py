"""The replicate behind every test of the report: one value per training seed.

A claim "objective A beats B" is about what training with A does, so it must hold over training
seeds; the sampling runs, prompts and items of one seed are repeated measurements of one network.
Each arm of a comparison is therefore reduced to its seed values first (MAUVE: the mean over the
seed's sampling runs; oracle perplexity: ``sum NLL / sum tokens`` over the seed's generations;
ICL: the seed's task accuracy), and the tests of ``emo_ray.stats`` run on those (issue 22).
The pre-trained model has no training seed: its replicates are its sampling runs (their spread
is what the variance of its mean is made of), or, for a score without sampling (ICL accuracy on
fixed items), one fixed number.
With one seed per arm nothing can be said about objectives; the report still compares the two
checkpoints (McNemar on items, paired t over prompts, Welch over sampling runs) under the label
"checkpoint", and such a test marks no cell.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from emo_ray import stats

SEED, RUN, FIXED = "training seed", "sampling run", "fixed score"
OBJECTIVE, CHECKPOINT = "objective", "checkpoint"
LEVEL = 0.95
POWER = 0.8


@dataclass
class Arm:
    """One side of a comparison: ``values`` one per replicate of ``unit``; ``runs`` the sampling-run
    values of each seed (fine-tuned generation metrics, for variance components), else empty."""

    values: np.ndarray
    unit: str
    runs: list[np.ndarray] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))


def seed_arm(scores: pd.DataFrame) -> Arm:
    """Per-sampling-run scores (columns run_id, value) of fine-tuned runs: one run = one training
    seed, its value the mean over its sampling runs."""
    runs = [g["value"].to_numpy(float) for _, g in scores.groupby("run_id", sort=True)]
    return Arm(np.array([r.mean() for r in runs]), SEED, runs)


def runs_arm(scores: pd.DataFrame) -> Arm:
    """The pre-trained model's sampling runs as its replicates (one evaluation, no training seed)."""
    values = scores["value"].to_numpy(float)
    return Arm(values, RUN, [values])


def interval(arm: Arm | None) -> stats.Interval | None:
    """Mean with a t(n-1) interval over the arm's replicates (seeds; pre-trained: sampling runs)."""
    return None if arm is None or arm.n == 0 else stats.mean_interval(arm.values, LEVEL)


def objective_test(a: Arm, b: Arm) -> tuple[stats.Comparison | None, str]:
    """Seed values of ``a`` against ``b``'s replicates: Welch (seeds or pre-trained sampling
    runs), one-sample t against a fixed pre-trained score; None and the reason when an arm has
    too few replicates to estimate its variance."""
    if a.unit != SEED:
        raise ValueError(f"the tested arm must hold training seeds, got {a.unit}")
    if a.n < 2 or (b.unit == SEED and b.n < 2):
        return None, f"{a.n} vs {b.n} training seed(s): a test of objectives needs >= 2 seeds per arm"
    if b.unit == FIXED:
        return stats.one_sample_t_test(a.values, float(b.values[0]), LEVEL), ""
    if b.n < 2:
        return None, f"{b.n} {b.unit}(s) in the pre-trained arm: its variance needs >= 2"
    return stats.welch_test(a.values, b.values, LEVEL), ""


def scope(a: Arm, b: Arm) -> str | None:
    """``objective`` when both arms have replicates of an objective (>= 2 seeds; the pre-trained
    arm counts as is), ``checkpoint`` when the tested arm has one seed and the other one seed or
    none, None for a mix (one seed against several: neither claim can be tested)."""
    if a.n >= 2 and (b.unit != SEED or b.n >= 2):
        return OBJECTIVE
    if a.n == 1 and (b.unit != SEED or b.n == 1):
        return CHECKPOINT
    return None


def compare(a: Arm, b: Arm, checkpoint_test) -> tuple[stats.Comparison | None, str, str]:
    """The test the arms support: of objectives on seed values, else ``checkpoint_test()`` (a
    callable returning ``(Comparison | None, reason)``) for two single checkpoints."""
    which = scope(a, b)
    if which == OBJECTIVE:
        return (*objective_test(a, b), which)
    if which == CHECKPOINT:
        return (*checkpoint_test(), which)
    return None, f"{a.n} vs {b.n} training seed(s): neither a test of objectives (>= 2 seeds per arm) nor of " \
                 "two single checkpoints", OBJECTIVE


def test_row(table: str, cell: dict, column: str, versus: str, test: stats.Comparison | None, reason: str,
             unit_scope: str, headroom: float = math.nan) -> dict:
    """One comparison as a flat record (a row of comparisons.csv)."""
    t = test
    return {"table": table, **cell, "column": column, "versus": versus, "scope": unit_scope,
            "diff": t.diff if t else math.nan, "low": t.low if t else math.nan, "high": t.high if t else math.nan,
            "p_value": t.p_value if t else math.nan, "n_a": t.n_a if t else 0, "n_b": t.n_b if t else 0,
            "se": t.se if t else math.nan, "df": t.df if t else math.nan,
            "discordant_rate": sum(t.discordant) / t.n_a if t and t.discordant else math.nan,
            "method": t.method if t else reason, "headroom": headroom}


def finalize(tests: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Holm within each scope of the table (objective claims, checkpoint claims); ``alpha_test``
    = alpha / m, the level a comparison must reach when nothing else in its family is rejected
    (Holm's first step), at which its MDD is computed, with the test's own se and df (McNemar:
    its n and discordant rate); ``significant`` for objective claims only (they make the marks);
    ``verdict`` in words, "cannot detect" when the MDD exceeds the headroom."""
    tests = tests.copy()
    if tests.empty:
        return tests.assign(p_holm=[], alpha_test=[], mdd=[], significant=[], verdict=[])
    tests["p_holm"], tests["alpha_test"] = math.nan, math.nan
    for _, g in tests[tests["p_value"].notna()].groupby("scope"):
        tests.loc[g.index, "p_holm"] = stats.holm(g["p_value"].to_numpy(float))
        tests.loc[g.index, "alpha_test"] = alpha / len(g)
    tests["mdd"] = [_mdd(r) for r in tests.to_dict("records")]
    tests["significant"] = [(r["scope"] == OBJECTIVE) and bool(stats.significance_mark(r["p_holm"], alpha))
                            for r in tests.to_dict("records")]
    tests["verdict"] = [_verdict(r, alpha) for r in tests.to_dict("records")]
    return tests


def _mdd(r: dict) -> float:
    if not r["alpha_test"] > 0:
        return math.nan
    if r["se"] > 0:
        return stats.min_detectable_difference(r["se"], r["df"], alpha=r["alpha_test"], power=POWER)
    if r["discordant_rate"] > 0:
        return stats.min_detectable_accuracy_difference(r["n_a"], r["discordant_rate"], r["alpha_test"], POWER)
    return math.nan


def _verdict(r: dict, alpha: float) -> str:
    if pd.isna(r["p_holm"]):
        return "not tested"
    who = "objective" if r["scope"] == OBJECTIVE else "checkpoint"
    if r["p_holm"] < alpha:
        return f"{who} {'higher' if r['diff'] > 0 else 'lower'}"
    if r["mdd"] > r["headroom"]:  # nan compares False: no headroom known, no claim either way
        return "cannot detect (MDD > headroom)"
    return "not significant"
