"""Table 2 of the paper: oracle perplexity, MAUVE, ROUGE-1, ROUGE-L per objective. Oracle
perplexity is tested on seed values: a seed's log-perplexity is ``sum NLL / sum tokens`` over all
its generations (``generations/<corpus>.json``), its corpus perplexity, not a mean over prompts
pooled across seeds; two single checkpoints are compared paired over prompts."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from emo_ray import stats
import emo_ray.report.units as units
from emo_ray.report.tables import (BASELINE, CELL, PRETRAINED_ROW, Table, _cell_text, _column_label, finish,
                                   _gen_best, _marks, _row_label, generation_long, mauve_arm, md_table)
from emo_ray.report.units import LEVEL, Arm


def _generations(artifacts, run_id: str, corpus: str, decoder: str) -> pd.DataFrame | None:
    """A run's scored generations of ``decoder`` with oracle tokens (empty samples have none)."""
    t = artifacts.table(run_id, f"generations/{corpus}.json")
    if t is None:
        return None
    return t[(t["decoder"] == decoder) & t["oracle_tokens"].astype(float).gt(0)]


def ppl_arm(g: pd.DataFrame, artifacts, corpus: str, decoder: str) -> Arm:
    """Oracle log-perplexity (nats per token). A seed's value is ``sum NLL / sum tokens`` over all
    its generations (its corpus perplexity, ``generations/<corpus>.json``; without that table the
    mean of its sampling runs' log perplexities); its runs are the per-sampling-run log
    perplexities. The pre-trained model's replicates are its sampling runs."""
    logged = g.assign(value=np.log(g["value"].astype(float)))
    if (g["objective"] == PRETRAINED_ROW).all():
        return units.runs_arm(logged)
    arm = units.seed_arm(logged)
    for i, rid in enumerate(sorted(logged["run_id"].unique())):
        gen = _generations(artifacts, rid, corpus, decoder)
        if gen is not None and len(gen):
            arm.values[i] = float(gen["oracle_nll_sum"].astype(float).sum() / gen["oracle_tokens"].astype(float).sum())
    return arm


def _prompt_nll(run_ids, artifacts, corpus: str, decoder: str) -> pd.Series | None:
    """Oracle NLL per continuation token of each prompt over one checkpoint's sampling runs."""
    tabs = [_generations(artifacts, rid, corpus, decoder) for rid in run_ids]
    if not tabs or any(t is None for t in tabs):
        return None
    g = pd.concat(tabs).groupby("prompt_id")[["oracle_nll_sum", "oracle_tokens"]].sum()
    return g["oracle_nll_sum"].astype(float) / g["oracle_tokens"].astype(float)


def prompt_nll_test(a_runs, b_runs, artifacts, corpus: str, decoder: str):
    """Two single checkpoints: paired t-test over prompts of the per-prompt log-perplexity
    (``diff`` in nats per token; negative = the first checkpoint's text is likelier)."""
    x, y = _prompt_nll(a_runs, artifacts, corpus, decoder), _prompt_nll(b_runs, artifacts, corpus, decoder)
    if x is None or y is None:
        return None, f"a run has no generations/{corpus}.json table"
    j = pd.concat([x.rename("a"), y.rename("b")], axis=1, join="inner").dropna()
    if len(j) < 2:
        return None, f"{len(j)} prompt(s) scored by both; a paired test needs >= 2"
    return stats.paired_t_test(j["a"].to_numpy(float), j["b"].to_numpy(float), LEVEL), ""


GEN_METRICS = [("oracle_ppl", "oracle ppl", 2), ("mauve", "MAUVE", 3), ("rouge1", "ROUGE-1", 3), ("rougeL", "ROUGE-L", 3)]


def _gen_cells(key: dict, g: pd.DataFrame, artifacts) -> tuple[dict, Arm | None]:
    """Frame row of one (column, objective): every metric's mean and interval over its
    replicates (oracle ppl: over the seeds' corpus perplexities); the oracle log-ppl arm."""
    row, ppl = {**key, "hparams": g["hparams"].iloc[0]}, None
    for m, _, _ in GEN_METRICS:
        sub = g[g.metric == m]
        if sub.empty:
            arm = None
        elif m == "oracle_ppl":
            ppl = ppl_arm(sub, artifacts, key["corpus"], key["decoder"])
            arm = Arm(np.exp(ppl.values), ppl.unit)
        else:
            arm = mauve_arm(sub)
        iv = units.interval(arm)
        row.update({f"{m}_mean": iv.mean if iv else math.nan, f"{m}_low": iv.low if iv else math.nan,
                    f"{m}_high": iv.high if iv else math.nan, f"{m}_n": iv.n if iv else 0})
    return row, ppl


def table2_generation(runs: pd.DataFrame, artifacts, alpha: float) -> Table:
    """Table 2: oracle perplexity, MAUVE, ROUGE-1, ROUGE-L per objective (best set by MAUVE), the
    pre-trained model as a row. Oracle log-perplexity is tested on seed values (Welch) against MLE
    and the pre-trained model; MAUVE is tested in Table 1."""
    title = "Table 2: open-ended generation metrics per objective"
    long = generation_long(runs)
    if long.empty:
        return Table("table2_generation", title, pd.DataFrame(),
                     "*No child run logged per-sampling-run generation scores: the sweep ran no generation evaluation.*",
                     pd.DataFrame(), ["no generation scores"])
    best = _gen_best(long[long.metric == "mauve"]) if (long.metric == "mauve").any() else long
    pre = generation_long(runs, pretrained=True)
    long = pd.concat([long[long.run_id.isin(best.run_id)], pre])
    keys = ["domain", "corpus", "decoder", "model", "tokens", "objective"]
    frame_rows, ppl_arms = [], {}
    for key, g in long.groupby(keys):
        row, ppl = _gen_cells(dict(zip(keys, key)), g, artifacts)
        frame_rows.append(row)
        if ppl is not None:
            ppl_arms[tuple(key)] = (ppl, sorted(g.run_id.unique()))
    tests, arms = [], {}
    for key, (arm, rids) in ppl_arms.items():
        row = dict(zip(keys, key))
        col = f"oracle log-ppl {row['corpus']}/{row['decoder']}"
        arms[(col, row["objective"])] = arm
        if row["objective"] == PRETRAINED_ROW:
            continue
        for versus in (PRETRAINED_ROW, BASELINE):
            other = next(((b, r) for k, (b, r) in ppl_arms.items() if k[5] == versus and k[:4] == key[:4]
                          and (versus == PRETRAINED_ROW or k[4] == key[4])), None)
            if other is None or (versus == BASELINE and row["objective"] == BASELINE):
                continue
            t, why, sc = units.compare(arm, other[0], lambda: prompt_nll_test(rids, other[1], artifacts, row["corpus"],
                                                                              row["decoder"]))
            tests.append(units.test_row("table2", {k: row[k] for k in CELL}, col, versus, t, why, sc))
    frame = pd.DataFrame(frame_rows)
    notes = [] if not pre.empty else ["no pre-trained generation scores: no pre-trained row and no tests against it"]
    t = finish("table2_generation", title, frame, tests, alpha, notes, arms, {})
    t.markdown = _table2_markdown(frame, t.tests)
    return t


def _table2_markdown(frame: pd.DataFrame, tests: pd.DataFrame) -> str:
    marks = _marks(tests)
    tuned = frame[frame.objective != PRETRAINED_ROW]
    several_cells = tuned[["model", "tokens"]].drop_duplicates().shape[0] > 1
    order = frame.assign(_rank=[(o != PRETRAINED_ROW, o != BASELINE, o) for o in frame.objective])
    body = []
    for r in order.sort_values(["domain", "corpus", "decoder", "model", "tokens", "_rank"], kind="stable").to_dict("records"):
        cells = []
        for m, _, digits in GEN_METRICS:
            mark = marks.get((r["domain"], r["model"], r["tokens"], r["objective"],
                              f"oracle log-ppl {r['corpus']}/{r['decoder']}"), "") if m == "oracle_ppl" else ""
            cells.append(("—" if not r[f"{m}_n"] else _cell_text(r, f"{m}_mean", digits)) + mark)
        body.append([_column_label(r["domain"], r["corpus"], r["decoder"], True),
                     _row_label(r, several_cells, r["hparams"]), *cells])
    return md_table(["corpus / decoder", "objective", *[l for _, l, _ in GEN_METRICS]], body)
