"""Where replication is needed and how much: variance components per arm, the headroom a metric
leaves, and how many seeds x sampling runs a stated difference needs (issue 22, "Metric validity").

* Variance components: sampling runs are nested in training seeds, so a seed mean over K runs has
  variance ``sigma_s^2 + sigma_w^2 / K``; the share ``sigma_s^2 / (sigma_s^2 + sigma_w^2)`` says
  how much of it no number of sampling runs can remove (``stats.variance_components``).
* Headroom (MAUVE): the human-vs-human score (``eval/gen/<corpus>/human_mauve``, logged by the
  evaluation) is the ceiling; ceiling minus the baseline's score is the largest gain any model
  could show. A comparison whose MDD exceeds it "cannot detect", which is not "no difference".
* Planning: ``stats.seeds_needed`` for a stated difference at the table's Holm level and at 0.05.
  Prompts are not planned for MAUVE: its level and its ceiling move with the number of texts
  (its histogram has n/10 buckets), so a variance that scales as 1/prompts would be unfounded.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from emo_ray import stats
from emo_ray.report.units import LEVEL, POWER, Arm
from emo_ray.tracking import keys

PLAN_RUNS = (1, 5, 20)
"""Sampling runs per seed the plan is printed for (20 approximates 'as many as you like')."""
CPU_SEEDS = 5
"""Seeds per arm a CPU sweep can afford: table1-cpu's 3 seeds x 4 objectives x 2 corpora took
4 h (docs/results.md), so 5 seeds is ~7 h, the ~8 CPU-hour budget of issue 22."""
PAPER_DELTA_MAUVE = 0.10
"""The paper's MAUVE gain of EMO over MLE on WikiText-2 with GPT-2 (Table 1: 87.5 vs 77.5; 6.2
points averaged over domains), marked there at p < 0.001 from 3 seeds x 5 sampling runs: the
default difference to plan for. It is in mauve-text's auto-bucket units at ~930 texts a side;
other MAUVE settings need their own (``delta_mauve``)."""


def human_ceiling(runs: pd.DataFrame, corpus: str) -> float:
    """Mean human-vs-human MAUVE over the runs that logged it for ``corpus``; nan when none did."""
    col = keys.eval_name(keys.gen_corpus_key(corpus, "human_mauve"))
    vals = runs[col].dropna() if col in runs.columns else pd.Series(dtype=float)
    return float(vals.mean()) if len(vals) else math.nan


def variance_row(column: str, label: str, arm: Arm) -> dict:
    """Variance components of one arm (fine-tuned: seeds x runs; pre-trained: runs only)."""
    vc = stats.variance_components([arm.runs])
    return {"column": column, "arm": label, "seeds": vc.n_seeds if arm.unit != "sampling run" else 0,
            "runs_per_seed": vc.runs_per_seed, "between": vc.between, "within": vc.within, "seed_share": vc.share}


def plan_row(column: str, arms: list[Arm], delta: float, alpha_test: float, headroom: float) -> dict | None:
    """Seeds per arm needed for ``delta`` with K sampling runs per seed (``PLAN_RUNS``), from the
    variance components pooled over the fine-tuned arms with >= 2 seeds; None without them."""
    usable = [a.runs for a in arms if len(a.runs) >= 2]
    if not usable:
        return None
    vc = stats.variance_components(usable)
    if not (vc.between >= 0 and vc.within >= 0 and vc.between + vc.within > 0):
        return None
    row = {"column": column, "delta": delta, "between": vc.between, "within": vc.within, "alpha_test": alpha_test,
           "headroom": headroom}
    for k in PLAN_RUNS:
        row[f"seeds_K{k}"] = stats.seeds_needed(delta, vc.between, vc.within, k, alpha_test, POWER)
        row[f"seeds_K{k}_a05"] = stats.seeds_needed(delta, vc.between, vc.within, k, 0.05, POWER)
    return row


def _n(s) -> str:
    return "> 1000" if s is None or (isinstance(s, float) and math.isnan(s)) else str(int(s))


def _g(x: float) -> str:
    return "—" if np.isnan(x) else f"{x:.3g}"


def variance_markdown(rows: pd.DataFrame, md_table) -> str:
    body = [[r["column"], r["arm"], r["seeds"] or "— (no seed)", f"{r['runs_per_seed']:g}", _g(r["between"]),
             _g(r["within"]), "—" if np.isnan(r["seed_share"]) else f"{r['seed_share']:.0%}"]
            for r in rows.to_dict("records")]
    return md_table(["column", "arm", "seeds", "runs / seed", "σ²_seed", "σ²_run", "seed share"], body)


def plan_markdown(rows: pd.DataFrame, alpha: float, md_table) -> tuple[str, list[str]]:
    """The plan table and the notes it implies (out of reach at CPU seed counts; delta above the
    headroom)."""
    heads = ["column", "Δ", "σ²_seed", "σ²_run"] + [f"seeds, K={k} (α_Holm)" for k in PLAN_RUNS] \
        + [f"seeds, K={k} (α=0.05)" for k in PLAN_RUNS]
    body, notes = [], []
    for r in rows.to_dict("records"):
        body.append([r["column"], f"{r['delta']:g}", f"{r['between']:.3g}", f"{r['within']:.3g}",
                     *[_n(r[f"seeds_K{k}"]) for k in PLAN_RUNS], *[_n(r[f"seeds_K{k}_a05"]) for k in PLAN_RUNS]])
        best = r[f"seeds_K{PLAN_RUNS[-1]}"]
        if best is None or (isinstance(best, float) and math.isnan(best)) or best > CPU_SEEDS:
            notes.append(f"{r['column']}: Δ = {r['delta']:g} at p < {alpha:g} (Holm level {r['alpha_test']:.2g}) needs "
                         f"{_n(best)} seeds per arm even with {PLAN_RUNS[-1]} sampling runs each, more than the "
                         f"{CPU_SEEDS} a CPU sweep affords: marks at this alpha cannot be earned here; read the "
                         f"{LEVEL:.0%} intervals of the differences instead")
        if r["delta"] > r["headroom"]:
            notes.append(f"{r['column']}: Δ = {r['delta']:g} exceeds the headroom {r['headroom']:.3g} (human ceiling "
                         "minus the baseline): no model can gain that much in these units")
    return md_table(heads, body), notes

