"""Table 3 of the paper: ICL accuracy per task and the average, the pre-trained model as a row.
A seed's value is its task accuracy; the pre-trained model's accuracy on the same items has no
sampling noise and is one fixed score; two single checkpoints are compared by exact McNemar."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from emo_ray import stats
import emo_ray.report.units as units
from emo_ray.report.collect import ICL_AVG, icl_tasks
from emo_ray.report.tables import BASELINE, CELL, PRETRAINED_ROW, Table, finish, _grid_markdown, best_hparams
from emo_ray.report.units import FIXED, Arm
from emo_ray.tracking import keys


def icl_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Fine-tuned runs of the best set per cell by seed-mean average ICL accuracy, plus every
    pre-trained run (objective ``pre-trained``)."""
    tuned = runs[~runs["pretrained"]]
    score = tuned[ICL_AVG] if ICL_AVG in tuned.columns else pd.Series(math.nan, index=tuned.index)
    best = best_hparams(tuned.reset_index(drop=True), score.reset_index(drop=True), True)
    pre = runs[runs["pretrained"]].assign(objective=PRETRAINED_ROW)
    return pd.concat([best, pre], ignore_index=True)


def icl_arm(g: pd.DataFrame, metric: str) -> Arm:
    """Task accuracy per training seed; the pre-trained model's accuracy is one fixed score (the
    same items, scored without sampling: no noise to replicate)."""
    vals = g[metric].dropna().to_numpy(float)
    if (g["objective"] == PRETRAINED_ROW).all():
        return Arm(np.array([vals.mean()]), FIXED)
    return Arm(vals, units.SEED)


def _item_correct(run_id: str, artifacts, task: str) -> pd.Series | None:
    t = artifacts.table(run_id, f"icl/{task}.json")
    return None if t is None or "correct" not in t.columns else t.set_index("item")["correct"].astype(float)


def mcnemar_test(a_run: str, b_run: str, artifacts, task: str):
    """Two single checkpoints on the same items: exact McNemar."""
    xa, xb = _item_correct(a_run, artifacts, task), _item_correct(b_run, artifacts, task)
    if xa is None or xb is None:
        return None, f"a run has no per-item table icl/{task}.json"
    j = pd.concat([xa.rename("a"), xb.rename("b")], axis=1, join="inner").dropna()
    if len(j) < 2:
        return None, f"{len(j)} shared item(s)"
    return stats.mcnemar_exact(j["a"].astype(bool), j["b"].astype(bool)), ""


def table3_icl(runs: pd.DataFrame, artifacts, alpha: float) -> Table:
    """Table 3: ICL accuracy per task and the average (mean and 95% t interval over training
    seeds), the pre-trained model as a row; per-task tests on seed accuracies vs MLE and vs the
    pre-trained model (headroom: 1 - the baseline's accuracy)."""
    title = "Table 3: in-context learning accuracy"
    tasks = icl_tasks(runs)
    if not tasks:
        return Table("table3_icl", title, pd.DataFrame(), "*No child run logged ICL accuracy "
                     "(`eval/icl/<task>/accuracy`): the sweep's evaluation has no ICL tasks.*", pd.DataFrame(),
                     ["no ICL scores"])
    sel = icl_runs(runs)
    notes = [] if sel["pretrained"].any() else [
        "no pre-trained run (evaluate_pretrained off, or its evaluation failed): no pre-trained row and no tests against it"]
    several_cells = sel[~sel.pretrained][["model", "tokens"]].drop_duplicates().shape[0] > 1
    columns = [(t, keys.eval_name(keys.icl_key(t, "accuracy"))) for t in tasks] + [("avg", ICL_AVG)]
    frame_rows, tests = [], []
    for key, g in sel.groupby(CELL):
        cell = dict(zip(CELL, key))
        for col, metric in columns:
            if metric not in g.columns or g[metric].isna().all():
                continue
            arm = icl_arm(g, metric)
            iv = units.interval(arm)
            frame_rows.append({**cell, "hparams": g["hparams"].iloc[0], "column": col, "mean": iv.mean, "low": iv.low,
                               "high": iv.high, "n": iv.n, "unit": arm.unit})
            if col != "avg" and cell["objective"] != PRETRAINED_ROW:
                tests += _icl_tests(sel, cell, g, arm, col, metric, artifacts)
    frame = pd.DataFrame(frame_rows)
    t = finish("table3_icl", title, frame, tests, alpha, notes, {}, {})
    frame_md = frame.assign(tokens=[0 if o == PRETRAINED_ROW else t for o, t in zip(frame.objective, frame.tokens)])
    t.markdown = _grid_markdown(frame_md, t.tests, several_cells, domain_in_row=True)
    return t


def _icl_tests(sel: pd.DataFrame, cell: dict, g: pd.DataFrame, arm: Arm, task: str, metric: str, artifacts) -> list[dict]:
    """One task of one fine-tuned cell against the pre-trained model and (unless it is MLE) MLE."""
    same = (sel.domain == cell["domain"]) & (sel.model == cell["model"])
    rows = []
    for versus, other in ((PRETRAINED_ROW, sel[same & sel.pretrained]),
                          (BASELINE, sel[same & (sel.tokens == cell["tokens"]) & (sel.objective == BASELINE)])):
        if versus == BASELINE and cell["objective"] == BASELINE:
            continue
        if other.empty or other[metric].isna().all():
            if versus == BASELINE:
                rows.append(units.test_row("table3", cell, task, versus, None, "no MLE run in this cell", units.OBJECTIVE))
            continue
        b = icl_arm(other, metric)
        t, why, sc = units.compare(arm, b, lambda: mcnemar_test(g["run_id"].iloc[0], other["run_id"].iloc[0], artifacts,
                                                                task))
        rows.append(units.test_row("table3", cell, task, versus, t, why, sc, 1.0 - b.mean))
    return rows
