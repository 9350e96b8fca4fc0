"""The paper's tables as data: values with 95% intervals over training seeds, tests against MLE
and against the pre-trained model on seed values (``report.units``), Holm correction across a
table's comparisons, marks at ``alpha``, MDD and headroom, variance components and power
planning (``report.planning``).

Every cell keeps the best hyperparameter set of its (domain, model, data volume, objective),
chosen by its seed-mean score as ``emo_ray.sweep.aggregate`` does (paper 4.2.2); the kept set is
printed next to the objective. Pure functions of the collected runs and an artifact loader.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from emo_ray import stats
import emo_ray.report.planning as planning
import emo_ray.report.units as units
from emo_ray.report.collect import sampling_scores
from emo_ray.report.units import LEVEL, Arm

BASELINE = "mle"
PRETRAINED_ROW = "pre-trained"
MARK_VS_BASELINE = "*"
MARK_VS_PRETRAINED = "†"
CELL = ["domain", "model", "tokens", "objective"]


@dataclass
class Table:
    """One rendered table: ``frame`` is its CSV (one row per cell, numbers unrounded),
    ``markdown`` its printed form, ``tests`` its comparisons, ``notes`` what is missing and why,
    ``extra`` further Markdown sections (variance components, power planning)."""

    name: str
    title: str
    frame: pd.DataFrame
    markdown: str
    tests: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    extra: list[tuple[str, str]] = field(default_factory=list)
    variance: pd.DataFrame = field(default_factory=pd.DataFrame)
    plan: pd.DataFrame = field(default_factory=pd.DataFrame)


# --------------------------------------------------------------------------- helpers


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def interval(values) -> stats.Interval | None:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], float)
    return stats.mean_interval(v, LEVEL) if len(v) else None


def fmt(iv: stats.Interval | None, digits: int = 3) -> str:
    return "—" if iv is None else stats.format_interval(iv, digits)


def best_hparams(runs: pd.DataFrame, score: pd.Series, higher: bool) -> pd.DataFrame:
    """The runs of the best hyperparameter set per cell, by the seed mean of ``score`` (indexed
    like ``runs``); cells without any score keep all their runs of the first set."""
    r = runs.assign(_score=score)
    means = r.groupby([*CELL, "hparams"], dropna=False)["_score"].mean().reset_index()
    means = means.sort_values("_score", ascending=not higher, kind="stable", na_position="last")
    best = means.groupby(CELL, dropna=False).first().reset_index()[[*CELL, "hparams"]]
    return r.merge(best, on=[*CELL, "hparams"]).drop(columns="_score")


def finish(name: str, title: str, frame: pd.DataFrame, tests: list[dict], alpha: float, notes: list[str],
           arms: dict, deltas: dict[str, float]) -> Table:
    """Holm, MDD and verdicts; variance components of every arm with sampling runs; the power plan
    for every column with a stated difference (``deltas``: column -> difference). The caller
    renders ``markdown`` from the finished tests (the marks)."""
    tests = units.finalize(pd.DataFrame(tests), alpha)
    var_rows = [planning.variance_row(col, label, a) for (col, label), a in arms.items() if a.runs]
    n_obj = int(((tests["scope"] == units.OBJECTIVE) & tests["p_value"].notna()).sum()) if not tests.empty else 0
    plan_rows = []
    for col, delta in deltas.items():
        tuned = [a for (c, label), a in arms.items() if c == col and a.unit == units.SEED]
        row = planning.plan_row(col, tuned, delta, alpha / max(n_obj, 1), _column_headroom(tests, col))
        if row:
            plan_rows.append(row)
    t = Table(name, title, frame, "", tests, notes + _test_notes(tests),
              variance=pd.DataFrame(var_rows), plan=pd.DataFrame(plan_rows))
    if var_rows:
        t.extra.append(("Variance between training seeds", planning.variance_markdown(t.variance, md_table)))
    if plan_rows:
        plan_md, plan_notes = planning.plan_markdown(t.plan, alpha, md_table)
        t.extra.append(("Power planning (power 0.8)", plan_md))
        t.notes += plan_notes
    return t


def _column_headroom(tests: pd.DataFrame, column: str) -> float:
    """The smallest headroom of a column's comparisons against MLE; nan when none is known."""
    h = tests[(tests.column == column) & (tests.versus == BASELINE)]["headroom"].dropna() if not tests.empty else []
    return float(h.min()) if len(h) else math.nan


def _test_notes(tests: pd.DataFrame) -> list[str]:
    if tests.empty:
        return ["no comparison: the table has no MLE row or no other objective, and no pre-trained row"]
    notes = []
    if (tests["scope"] == units.CHECKPOINT).any():
        notes.append("one training seed per arm: the tests compare two checkpoints (McNemar on items, paired t over "
                     "prompts, Welch over sampling runs), not objectives, and mark no cell")
    if tests["verdict"].str.startswith("cannot detect").any():
        notes.append("cannot detect: the MDD of the test exceeds the headroom (ceiling minus the baseline's score); "
                     "such a comparison could not have shown a difference, which is not evidence of none")
    for reason, g in tests[tests["p_value"].isna()].groupby("method"):
        notes.append(f"{len(g)} comparison(s) not tested: {reason}")
    return notes


# --------------------------------------------------------------------------- generation (tables 1, 2)


def generation_long(runs: pd.DataFrame, pretrained: bool = False) -> pd.DataFrame:
    """Per-sampling-run scores joined with their trial fields: of the fine-tuned runs, or with
    ``pretrained`` of the pre-trained evaluations (objective ``pre-trained``, tokens 0)."""
    sel = runs[runs["pretrained"] == pretrained]
    if pretrained:
        sel = sel.assign(objective=PRETRAINED_ROW, tokens=0)
    return sampling_scores(sel).merge(sel[["run_id", *CELL, "hparams", "seed"]], on="run_id")


def _gen_best(long: pd.DataFrame) -> pd.DataFrame:
    """Per (domain, corpus, decoder) column: the runs of the best set by seed-mean MAUVE."""
    parts = []
    for _, g in long.groupby(["domain", "corpus", "decoder"]):
        per_run = g[g.metric == "mauve"].groupby("run_id")["value"].mean()
        runs = g.drop_duplicates("run_id")[["run_id", *CELL, "hparams", "seed"]].reset_index(drop=True)
        keep = best_hparams(runs, runs["run_id"].map(per_run), True)
        parts.append(g[g.run_id.isin(keep.run_id)])
    return pd.concat(parts) if parts else long


def _column_label(domain: str, corpus: str, decoder: str, several_decoders: bool) -> str:
    label = corpus if domain in ("", corpus) else f"{corpus} (tuned on {domain})"
    return f"{label} / {decoder}" if several_decoders else label


def _row_label(row: dict, several_cells: bool, hparams: str) -> str:
    obj = row["objective"] + (f" ({hparams})" if hparams else "")
    if row["objective"] == PRETRAINED_ROW:
        return f"{obj} [{row['model']}]" if several_cells else obj
    return f"{obj} [{row['model']}, {row['tokens']:,} tok]" if several_cells else obj


def mauve_arm(g: pd.DataFrame) -> Arm:
    """Seed values (mean over each seed's sampling runs); the pre-trained model's sampling runs."""
    return units.runs_arm(g) if (g["objective"] == PRETRAINED_ROW).all() else units.seed_arm(g)


def _runs_welch(a: Arm, b: Arm):
    """Two single checkpoints: Welch over their sampling runs (the sampling noise of each)."""
    x, y = a.runs[0], b.runs[0]
    if len(x) < 2 or len(y) < 2:
        return None, f"{len(x)} vs {len(y)} sampling run(s): Welch needs >= 2 per checkpoint"
    return stats.welch_test(x, y, LEVEL), ""


def _same_column(frame: pd.DataFrame, row: dict, objective: str) -> pd.DataFrame:
    keep = (frame.domain == row["domain"]) & (frame.corpus == row["corpus"]) & (frame.decoder == row["decoder"]) \
        & (frame.model == row["model"]) & (frame.objective == objective)
    return frame[keep & (frame.tokens == row["tokens"])] if objective != PRETRAINED_ROW else frame[keep]


def _headroom(ceiling: float, baseline: Arm) -> float:
    return ceiling - baseline.mean if math.isfinite(ceiling) else math.nan


def table1_mauve(runs: pd.DataFrame, alpha: float, delta: float = planning.PAPER_DELTA_MAUVE) -> Table:
    """Table 1: MAUVE per corpus (domain) x objective: mean and 95% t interval over training seeds
    (seed value = mean over its sampling runs), the pre-trained model as a row (over its sampling
    runs); Welch tests on seed values vs MLE and vs the pre-trained model; headroom from the
    human-vs-human ceiling."""
    title = "Table 1: MAUVE per corpus and objective"
    long = generation_long(runs)
    long = long[long.metric == "mauve"]
    if long.empty:
        return Table("table1_mauve", title, pd.DataFrame(), "*No child run logged per-sampling-run MAUVE "
                     "(`eval/gen/<corpus>/<decoder>/seed<s>/mauve`): the sweep ran no generation evaluation.*",
                     pd.DataFrame(), ["no MAUVE scores"])
    best = _gen_best(long)
    pre = generation_long(runs, pretrained=True)
    pre = pre[pre.metric == "mauve"]
    several_dec = best["decoder"].nunique() > 1
    several_cells = best[["model", "tokens"]].drop_duplicates().shape[0] > 1
    both = pd.concat([best, pre])
    frame_rows, tests, arms, notes = [], [], {}, []
    for key, g in both.groupby(["domain", "corpus", "decoder", "model", "tokens", "objective"]):
        row = dict(zip(["domain", "corpus", "decoder", "model", "tokens", "objective"], key))
        arm, col = mauve_arm(g), _column_label(row["domain"], row["corpus"], row["decoder"], several_dec)
        arms[(col, row["objective"])] = arm
        iv = units.interval(arm)
        ceiling = planning.human_ceiling(runs[runs.run_id.isin(both[(both.corpus == row["corpus"])].run_id)], row["corpus"])
        frame_rows.append({**row, "hparams": g["hparams"].iloc[0], "mean": iv.mean, "low": iv.low, "high": iv.high,
                           "n": iv.n, "unit": arm.unit, "ceiling": ceiling, "column": col})
        if row["objective"] == PRETRAINED_ROW:
            continue
        cell = {k: row[k] for k in CELL}
        for versus, other in ((PRETRAINED_ROW, _same_column(pre, row, PRETRAINED_ROW)),
                              (BASELINE, _same_column(best, row, BASELINE))):
            if other.empty or (versus == BASELINE and row["objective"] == BASELINE):
                continue
            b = mauve_arm(other)
            t, why, sc = units.compare(arm, b, lambda: _runs_welch(arm, b))
            tests.append(units.test_row("table1", cell, col, versus, t, why, sc, _headroom(ceiling, b)))
    if pre.empty:
        notes.append("no pre-trained generation scores (evaluate_pretrained off, or its evaluation failed): no "
                     "pre-trained row and no tests against it")
    frame = pd.DataFrame(frame_rows)
    if frame["ceiling"].isna().any():
        notes.append("headroom unknown: no `eval/gen/<corpus>/human_mauve` (human-vs-human ceiling) logged for "
                     + ", ".join(sorted(frame[frame.ceiling.isna()]["corpus"].unique())))
    t = finish("table1_mauve", title, frame, tests, alpha, notes, arms, {c: delta for c in frame["column"].unique()})
    t.markdown = _grid_markdown(frame, t.tests, several_cells)
    return t


def _marks(tests: pd.DataFrame) -> dict:
    """(domain, model, tokens, objective, column) -> its marks: `*` vs MLE, `†` vs pre-trained."""
    marks = {}
    for t in tests.to_dict("records") if not tests.empty else []:
        if t["significant"]:
            key = (t["domain"], t["model"], t["tokens"], t["objective"], t["column"])
            marks[key] = marks.get(key, "") + (MARK_VS_BASELINE if t["versus"] == BASELINE else MARK_VS_PRETRAINED)
    return marks


def _cell_text(r: dict, mean: str = "mean", digits: int = 3) -> str:
    lo, hi = r[mean.replace("mean", "low")], r[mean.replace("mean", "high")]
    return fmt(stats.Interval(r[mean], lo, hi, int(r[mean.replace("mean", "n")]), (hi - lo) / 2, LEVEL), digits)


def _grid_markdown(frame: pd.DataFrame, tests: pd.DataFrame, several_cells: bool, domain_in_row: bool = False) -> str:
    """Rows = ([domain,] model, tokens, objective) with the kept hyperparameters; columns =
    ``frame.column`` (Table 1 has the domain in its columns, Table 3 in its rows)."""
    cols = list(dict.fromkeys(frame["column"]))
    marks = _marks(tests)
    rows = {}
    for r in frame.to_dict("records"):
        rk = (r["domain"] if domain_in_row else "", r["model"], r["tokens"], r["objective"])
        rows.setdefault(rk, {"hp": set(), "cells": {}, "row": r})
        if r.get("hparams"):
            rows[rk]["hp"].add(r["hparams"])
        mark = marks.get((r["domain"], r["model"], r["tokens"], r["objective"], r["column"]), "")
        rows[rk]["cells"][r["column"]] = _cell_text(r) + mark
    order = sorted(rows, key=lambda k: (k[0], str(k[1]), k[2], k[3] != PRETRAINED_ROW, k[3] != BASELINE, k[3]))
    with_domain = domain_in_row and any(k[0] for k in order)
    body = [([k[0]] if with_domain else []) + [_row_label(rows[k]["row"], several_cells, "; ".join(sorted(rows[k]["hp"])))]
            + [rows[k]["cells"].get(c, "—") for c in cols] for k in order]
    return md_table([*(["domain"] if with_domain else []), "objective", *cols], body)
