"""The paper's tables as data: values with 95% intervals, tests against MLE and against the
pre-trained model, Holm correction across a table's comparisons, marks at ``alpha``.

Every cell keeps the best hyperparameter set of its (domain, model, data volume, objective),
chosen by its seed-mean score as ``emo_ray.sweep.aggregate`` does (paper 4.2.2); the kept set is
printed next to the objective. Pure functions of the collected runs and an artifact loader.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from emo_ray import stats
from emo_ray.report.collect import ICL_AVG, icl_tasks, sampling_scores

BASELINE = "mle"
PRETRAINED_ROW = "pre-trained"
LEVEL = 0.95
POWER = 0.8
MARK_VS_BASELINE = "*"
MARK_VS_PRETRAINED = "†"
CELL = ["domain", "model", "tokens", "objective"]


@dataclass
class Table:
    """One rendered table: ``frame`` is its CSV (one row per cell, numbers unrounded),
    ``markdown`` its printed form, ``tests`` its comparisons, ``notes`` what is missing and why."""

    name: str
    title: str
    frame: pd.DataFrame
    markdown: str
    tests: pd.DataFrame
    notes: list[str] = field(default_factory=list)


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


def _holm_marks(tests: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Holm across the table's comparisons that produced a p-value; marks where adjusted p < alpha."""
    tests = tests.copy()
    if tests.empty:
        return tests.assign(p_holm=[], significant=[])
    ok = tests["p_value"].notna()
    tests["p_holm"] = math.nan
    if ok.any():
        tests.loc[ok, "p_holm"] = stats.holm(tests.loc[ok, "p_value"].to_numpy(float))
    tests["significant"] = [bool(stats.significance_mark(p, alpha)) if pd.notna(p) else False for p in tests["p_holm"]]
    return tests


def _test_row(table: str, cell: dict, column: str, versus: str, test: stats.PairedTest | None, reason: str,
              mdd: float) -> dict:
    return {"table": table, **cell, "column": column, "versus": versus,
            "diff": test.diff if test else math.nan, "p_value": test.p_value if test else math.nan,
            "n": test.n if test else 0, "method": test.method if test else reason, "mdd": mdd}


def _safe_mdd(diffs: np.ndarray, alpha: float) -> float:
    """Minimal detectable difference of a paired t-test at this n (power 0.8, ``alpha``);
    nan when the differences have no spread (identical arms) or n < 2."""
    if len(diffs) < 2 or not np.std(diffs, ddof=1) > 0:
        return math.nan
    return stats.min_detectable_difference(float(np.std(diffs, ddof=1)), len(diffs), alpha=alpha, power=POWER)


def _safe_mdd_two_sample(x: np.ndarray, y: np.ndarray, alpha: float) -> float:
    """Minimal detectable difference of a two-sample t-test with these arm sizes and their pooled
    sd (power 0.8, ``alpha``); nan when neither arm has any spread."""
    nx, ny = len(x), len(y)
    pooled = math.sqrt(((nx - 1) * np.var(x, ddof=1) + (ny - 1) * np.var(y, ddof=1)) / (nx + ny - 2))
    if not pooled > 0:
        return math.nan
    return stats.min_detectable_difference(pooled, nx, alpha=alpha, power=POWER, paired=False, n_b=ny)


def pretrained_runs_test(a: pd.DataFrame, pre: pd.DataFrame, alpha: float) -> tuple[stats.PairedTest | None, str, float]:
    """A fine-tuned arm's sampling runs (seeds x sampling runs) against the pre-trained model's
    (sampling runs of one model): unpaired, as no training seed links them."""
    x, y = a["value"].to_numpy(float), pre["value"].to_numpy(float)
    if len(x) < 2 or len(y) < 2:
        return None, f"{len(x)} vs {len(y)} sampling run(s); the two-sample test needs >= 2 per arm", math.nan
    t = stats.two_sample_test(x, y, n_perm=N_PERM)
    splits = math.comb(len(x) + len(y), len(y))
    if splits <= N_PERM and t.p_value <= 2 / splits * (1 + 1e-9):
        # Exact test at its floor: every run of one arm beats every run of the other. Say so, as
        # Holm may still leave it unmarked (15 vs 5 runs: floor 2/15,504 = 1.3e-4).
        t = replace(t, method=t.method + f"; at its floor 2/{splits:,} (the arms do not overlap)")
    return t, "", _safe_mdd_two_sample(x, y, alpha)


def paired_runs_test(a: pd.DataFrame, b: pd.DataFrame, alpha: float) -> tuple[stats.PairedTest | None, str, float]:
    """Paired bootstrap over sampling runs matched on (training seed, sampling seed)."""
    j = a.merge(b, on=["seed", "sample_seed"], suffixes=("_a", "_b"))
    if len(j) < 2:
        return None, f"{len(j)} paired sampling run(s); a paired test needs >= 2", math.nan
    x, y = j["value_a"].to_numpy(float), j["value_b"].to_numpy(float)
    return stats.paired_bootstrap(x, y, n_perm=N_PERM), "", _safe_mdd(x - y, alpha)


# --------------------------------------------------------------------------- generation (tables 1, 2)


def generation_long(runs: pd.DataFrame, pretrained: bool = False) -> pd.DataFrame:
    """Per-sampling-run scores joined with their trial fields: of the fine-tuned runs, or with
    ``pretrained`` of the pre-trained evaluations (objective ``pre-trained``, tokens 0)."""
    sel = runs[runs["pretrained"] == pretrained]
    if pretrained:
        sel = sel.assign(objective=PRETRAINED_ROW, tokens=0)
    return sampling_scores(sel).merge(sel[["run_id", *CELL, "hparams", "seed"]], on="run_id")


def _pretrained_arm(pre: pd.DataFrame, row: dict) -> pd.DataFrame:
    """The pre-trained model's scores in a fine-tuned row's (domain, corpus, decoder, model)."""
    return pre[(pre.domain == row["domain"]) & (pre.corpus == row["corpus"]) & (pre.decoder == row["decoder"])
               & (pre.model == row["model"])]


def _pretrained_note(pre: pd.DataFrame) -> list[str]:
    return [] if not pre.empty else [
        "no pre-trained generation scores (evaluate_pretrained off, or its evaluation failed): no pre-trained row "
        "and no tests against it"]


def _gen_best(long: pd.DataFrame) -> pd.DataFrame:
    """Per (domain, corpus, decoder) column: the runs of the best set by seed-mean MAUVE."""
    parts = []
    for _, g in long.groupby(["domain", "corpus", "decoder"]):
        mauve = g[g.metric == "mauve"]
        per_run = mauve.groupby("run_id")["value"].mean()
        runs = g.drop_duplicates("run_id")[["run_id", *CELL, "hparams", "seed"]].set_index("run_id", drop=False)
        keep = best_hparams(runs.reset_index(drop=True), runs["run_id"].map(per_run).reset_index(drop=True), True)
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


def table1_mauve(runs: pd.DataFrame, alpha: float) -> Table:
    """Table 1: MAUVE per corpus (domain) x objective, mean and 95% interval over training seeds
    x sampling runs, the pre-trained model as a row; paired test vs MLE over matched sampling
    runs, two-sample test vs the pre-trained model's sampling runs."""
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
    frame_rows, tests = [], []
    for (domain, corpus, decoder, model, tokens, objective), g in pd.concat([best, pre]).groupby(
            ["domain", "corpus", "decoder", "model", "tokens", "objective"]):
        iv = interval(g["value"])
        cell = {"domain": domain, "model": model, "tokens": tokens, "objective": objective}
        col = _column_label(domain, corpus, decoder, several_dec)
        frame_rows.append({**cell, "corpus": corpus, "decoder": decoder, "hparams": g["hparams"].iloc[0],
                           "mean": iv.mean, "low": iv.low, "high": iv.high, "n": iv.n, "column": col})
        if objective == PRETRAINED_ROW:
            continue
        arm = _pretrained_arm(pre, {"domain": domain, "corpus": corpus, "decoder": decoder, "model": model})
        if not arm.empty:
            t, why, mdd = pretrained_runs_test(g, arm, alpha)
            tests.append(_test_row("table1", cell, col, PRETRAINED_ROW, t, why, mdd))
        if objective != BASELINE:
            base = best[(best.domain == domain) & (best.corpus == corpus) & (best.decoder == decoder)
                        & (best.model == model) & (best.tokens == tokens) & (best.objective == BASELINE)]
            if base.empty:
                tests.append(_test_row("table1", cell, col, BASELINE, None, "no MLE run in this cell", math.nan))
            else:
                t, why, mdd = paired_runs_test(g, base, alpha)
                tests.append(_test_row("table1", cell, col, BASELINE, t, why, mdd))
    frame = pd.DataFrame(frame_rows)
    tests = _holm_marks(pd.DataFrame(tests), alpha)
    return Table("table1_mauve", title, frame, _grid_markdown(frame, tests, several_cells), tests,
                 _pretrained_note(pre) + _test_notes(tests, alpha))


def _marks(tests: pd.DataFrame) -> dict:
    """(domain, model, tokens, objective, column) -> its marks: `*` vs MLE, `†` vs pre-trained."""
    marks = {}
    for t in tests.to_dict("records") if not tests.empty else []:
        if t["significant"]:
            key = (t["domain"], t["model"], t["tokens"], t["objective"], t["column"])
            marks[key] = marks.get(key, "") + (MARK_VS_BASELINE if t["versus"] == BASELINE else MARK_VS_PRETRAINED)
    return marks


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
        iv = stats.Interval(r["mean"], r["low"], r["high"], int(r["n"]), (r["high"] - r["low"]) / 2, LEVEL)
        mark = marks.get((r["domain"], r["model"], r["tokens"], r["objective"], r["column"]), "")
        rows[rk]["cells"][r["column"]] = fmt(iv) + mark
    order = sorted(rows, key=lambda k: (k[0], str(k[1]), k[2], k[3] != PRETRAINED_ROW, k[3] != BASELINE, k[3]))
    with_domain = domain_in_row and any(k[0] for k in order)
    body = [([k[0]] if with_domain else []) + [_row_label(rows[k]["row"], several_cells, "; ".join(sorted(rows[k]["hp"])))]
            + [rows[k]["cells"].get(c, "—") for c in cols] for k in order]
    return md_table([*(["domain"] if with_domain else []), "objective", *cols], body)


N_PERM = 200_000
"""Sign-flip resamples behind every permutation p-value of the report (``n_perm`` of
``stats.paired_bootstrap``): Monte-Carlo p-values never go below ~2 / (N_PERM + 1) ~ 1e-5
(two-sided), so Holm over up to ~100 comparisons can still reach the paper's p < 0.001; with
10,000 (the function's default) five comparisons already could not."""


def _test_notes(tests: pd.DataFrame, alpha: float) -> list[str]:
    notes = []
    if tests.empty:
        return ["no comparison against MLE: the table has no MLE row or no other objective"]
    m = int(tests["p_value"].notna().sum())
    floor = 2 / (N_PERM + 1)
    if tests["method"].str.contains("permutation").any() and m * floor >= alpha:
        notes.append(f"resolution: permutation p-values here are Monte Carlo with {N_PERM:,} resamples (smallest "
                     f"≈ {floor:.1g}); Holm over {m} comparisons cannot reach p < {alpha:g} with them, so no "
                     "bootstrap-tested cell can be marked: read the raw p and the interval")
    floored = tests[tests["method"].str.contains("at its floor", regex=False) & ~tests["significant"]]
    if not floored.empty:
        notes.append(f"{len(floored)} two-sample comparison(s) at the smallest p their design allows (no run of one arm "
                     f"overlaps the other's) stay unmarked after Holm over {m} comparisons: the pre-trained arm has too "
                     "few sampling runs to reach p < {:g}; read the diff and its MDD".format(alpha))
    untested = tests[tests["p_value"].isna()]
    for reason, g in untested.groupby("method"):
        notes.append(f"{len(g)} comparison(s) not tested: {reason}")
    return notes


def table2_generation(runs: pd.DataFrame, artifacts, alpha: float) -> Table:
    """Table 2: oracle perplexity, MAUVE, ROUGE-1, ROUGE-L per objective (best set by MAUVE), the
    pre-trained model as a row. Oracle perplexity is tested paired over prompts against MLE and
    against the pre-trained model; MAUVE paired over sampling runs against MLE, two-sample
    against the pre-trained model's runs."""
    title = "Table 2: open-ended generation metrics per objective"
    long = generation_long(runs)
    if long.empty:
        return Table("table2_generation", title, pd.DataFrame(),
                     "*No child run logged per-sampling-run generation scores: the sweep ran no generation evaluation.*",
                     pd.DataFrame(), ["no generation scores"])
    mauve_best = _gen_best(long[long.metric == "mauve"]) if (long.metric == "mauve").any() else long
    pre = generation_long(runs, pretrained=True)
    long = pd.concat([long[long.run_id.isin(mauve_best.run_id)], pre])
    metrics = [("oracle_ppl", "oracle ppl", 2), ("mauve", "MAUVE", 3), ("rouge1", "ROUGE-1", 3), ("rougeL", "ROUGE-L", 3)]
    keys = ["domain", "corpus", "decoder", "model", "tokens", "objective"]
    frame_rows, tests = [], []
    for key, g in long.groupby(keys):
        row = dict(zip(keys, key))
        row["hparams"] = g["hparams"].iloc[0]
        for m, _, _ in metrics:
            iv = interval(g[g.metric == m]["value"])
            row.update({f"{m}_mean": iv.mean if iv else math.nan, f"{m}_low": iv.low if iv else math.nan,
                        f"{m}_high": iv.high if iv else math.nan, f"{m}_n": iv.n if iv else 0})
        frame_rows.append(row)
        if row["objective"] == PRETRAINED_ROW:
            continue
        cell = {k: row[k] for k in CELL}
        col_suffix = f"{row['corpus']}/{row['decoder']}"
        arm = _pretrained_arm(pre, row)
        if not arm.empty:
            t, why, mdd = pretrained_runs_test(g[g.metric == "mauve"], arm[arm.metric == "mauve"], alpha)
            tests.append(_test_row("table2", cell, f"MAUVE {col_suffix}", PRETRAINED_ROW, t, why, mdd))
            t, why, mdd = prompt_nll_test(g, arm, artifacts, row["corpus"], row["decoder"], alpha)
            tests.append(_test_row("table2", cell, f"oracle ppl {col_suffix}", PRETRAINED_ROW, t, why, mdd))
        if row["objective"] == BASELINE:
            continue
        base = long[(long.domain == row["domain"]) & (long.corpus == row["corpus"]) & (long.decoder == row["decoder"])
                    & (long.model == row["model"]) & (long.tokens == row["tokens"]) & (long.objective == BASELINE)]
        if base.empty:
            tests.append(_test_row("table2", cell, f"MAUVE {col_suffix}", BASELINE, None, "no MLE run in this cell", math.nan))
            continue
        t, why, mdd = paired_runs_test(g[g.metric == "mauve"], base[base.metric == "mauve"], alpha)
        tests.append(_test_row("table2", cell, f"MAUVE {col_suffix}", BASELINE, t, why, mdd))
        t, why, mdd = prompt_nll_test(g, base, artifacts, row["corpus"], row["decoder"], alpha)
        tests.append(_test_row("table2", cell, f"oracle ppl {col_suffix}", BASELINE, t, why, mdd))
    frame = pd.DataFrame(frame_rows)
    tests = _holm_marks(pd.DataFrame(tests), alpha)
    marks = _marks(tests)
    tuned = frame[frame.objective != PRETRAINED_ROW]
    several_cells = tuned[["model", "tokens"]].drop_duplicates().shape[0] > 1
    body = []
    order = frame.assign(_rank=[(o != PRETRAINED_ROW, o != BASELINE, o) for o in frame.objective])
    for r in order.sort_values(["domain", "corpus", "decoder", "model", "tokens", "_rank"], kind="stable").to_dict("records"):
        cells = []
        for m, label, digits in metrics:
            iv = stats.Interval(r[f"{m}_mean"], r[f"{m}_low"], r[f"{m}_high"], int(r[f"{m}_n"]),
                                (r[f"{m}_high"] - r[f"{m}_low"]) / 2, LEVEL)
            mark_key = (r["domain"], r["model"], r["tokens"], r["objective"], f"{label} {r['corpus']}/{r['decoder']}")
            cells.append(("—" if not r[f"{m}_n"] else fmt(iv, digits)) + marks.get(mark_key, ""))
        body.append([_column_label(r["domain"], r["corpus"], r["decoder"], True),
                     _row_label(r, several_cells, r["hparams"]), *cells])
    md = md_table(["corpus / decoder", "objective", *[l for _, l, _ in metrics]], body)
    return Table("table2_generation", title, frame, md, tests, _pretrained_note(pre) + _test_notes(tests, alpha))


def _prompt_nll(runs: pd.DataFrame, artifacts, corpus: str, decoder: str) -> pd.Series | None:
    """Oracle NLL per continuation token of each prompt, pooled over the runs' training and
    sampling seeds (sum of NLL / sum of tokens: the per-prompt share of corpus perplexity)."""
    tabs = [artifacts.table(rid, f"generations/{corpus}.json") for rid in runs["run_id"].unique()]
    if any(t is None for t in tabs) or not tabs:
        return None
    t = pd.concat(tabs)
    t = t[(t["decoder"] == decoder) & t["oracle_tokens"].astype(float).gt(0)]
    g = t.groupby("prompt_id")[["oracle_nll_sum", "oracle_tokens"]].sum()
    return g["oracle_nll_sum"].astype(float) / g["oracle_tokens"].astype(float)


def prompt_nll_test(a: pd.DataFrame, b: pd.DataFrame, artifacts, corpus: str, decoder: str, alpha: float):
    """Oracle perplexity paired over prompts: bootstrap of the mean per-prompt log-perplexity
    difference (``diff`` in nats per token; negative = the objective's text is likelier)."""
    x, y = _prompt_nll(a, artifacts, corpus, decoder), _prompt_nll(b, artifacts, corpus, decoder)
    if x is None or y is None:
        return None, f"a run has no generations/{corpus}.json table", math.nan
    j = pd.concat([x.rename("a"), y.rename("b")], axis=1, join="inner").dropna()
    if len(j) < 2:
        return None, f"{len(j)} prompt(s) scored by both; a paired test needs >= 2", math.nan
    d = j["a"].to_numpy(float) - j["b"].to_numpy(float)
    return stats.paired_bootstrap(j["a"].to_numpy(float), j["b"].to_numpy(float), n_perm=N_PERM), "", _safe_mdd(d, alpha)


# --------------------------------------------------------------------------- ICL (table 3)


def icl_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Fine-tuned runs of the best set per cell by seed-mean average ICL accuracy, plus every
    pre-trained run (objective ``pre-trained``)."""
    tuned = runs[~runs["pretrained"]]
    score = tuned[ICL_AVG] if ICL_AVG in tuned.columns else pd.Series(math.nan, index=tuned.index)
    best = best_hparams(tuned.reset_index(drop=True), score.reset_index(drop=True), True)
    pre = runs[runs["pretrained"]].assign(objective=PRETRAINED_ROW)
    return pd.concat([best, pre], ignore_index=True)


def _item_correct(runs: pd.DataFrame, artifacts, task: str) -> pd.DataFrame | None:
    """Items x runs correctness (1/0), aligned on the item id; None when a table is missing."""
    cols = {}
    for rid in runs["run_id"]:
        t = artifacts.table(rid, f"icl/{task}.json")
        if t is None or "correct" not in t.columns:
            return None
        cols[rid] = t.set_index("item")["correct"].astype(float)
    return pd.DataFrame(cols)


def icl_test(a: pd.DataFrame, b: pd.DataFrame, artifacts, task: str, alpha: float):
    """Same items for both arms: exact McNemar when each arm has one run, else a paired bootstrap
    over items of the per-item accuracy averaged over the arm's seeds."""
    xa, xb = _item_correct(a, artifacts, task), _item_correct(b, artifacts, task)
    if xa is None or xb is None:
        return None, f"a run has no per-item table icl/{task}.json", math.nan
    j = pd.concat([xa.mean(axis=1).rename("a"), xb.mean(axis=1).rename("b")], axis=1, join="inner").dropna()
    if len(j) < 2:
        return None, f"{len(j)} shared item(s)", math.nan
    if xa.shape[1] == 1 and xb.shape[1] == 1:
        t = stats.mcnemar_exact(j["a"].astype(bool), j["b"].astype(bool))
        rate = sum(t.discordant) / t.n
        mdd = stats.min_detectable_accuracy_difference(t.n, rate, alpha=alpha, power=POWER) if rate > 0 else math.nan
        return t, "", mdd
    x, y = j["a"].to_numpy(float), j["b"].to_numpy(float)
    return stats.paired_bootstrap(x, y, n_perm=N_PERM), "", accuracy_mdd(x - y, alpha)


def accuracy_mdd(diffs: np.ndarray, alpha: float) -> float:
    """MDD of a mean accuracy difference; accuracies differ by at most 1, so an MDD above 1 means
    that no possible difference is detectable at this n (``inf``, rendered "none")."""
    mdd = _safe_mdd(diffs, alpha)
    return math.inf if mdd > 1 else mdd


def table3_icl(runs: pd.DataFrame, artifacts, alpha: float) -> Table:
    """Table 3: ICL accuracy per task and the average (mean and 95% interval over training seeds),
    the pre-trained model as a row; per-task tests vs MLE and vs the pre-trained model."""
    title = "Table 3: in-context learning accuracy"
    tasks = icl_tasks(runs)
    if not tasks:
        return Table("table3_icl", title, pd.DataFrame(), "*No child run logged ICL accuracy "
                     "(`eval/icl/<task>/accuracy`): the sweep's evaluation has no ICL tasks.*", pd.DataFrame(),
                     ["no ICL scores"])
    sel = icl_runs(runs)
    notes = []
    if not sel["pretrained"].any():
        notes.append("no pre-trained run (evaluate_pretrained off, or its evaluation failed): "
                     "no pre-trained row and no tests against it")
    several_cells = sel[~sel.pretrained][["model", "tokens"]].drop_duplicates().shape[0] > 1
    columns = [(t, f"eval/icl/{t}/accuracy") for t in tasks] + [("avg", ICL_AVG)]
    frame_rows, tests = [], []
    for key, g in sel.groupby(CELL):
        cell = dict(zip(CELL, key))
        for col, metric in columns:
            iv = interval(g[metric]) if metric in g.columns else None
            if iv is None:
                continue
            frame_rows.append({**cell, "hparams": g["hparams"].iloc[0], "column": col, "mean": iv.mean, "low": iv.low,
                               "high": iv.high, "n": iv.n})
            if col == "avg" or cell["objective"] in (BASELINE, PRETRAINED_ROW):
                continue
            same = (sel.domain == cell["domain"]) & (sel.model == cell["model"])
            for versus, arm in ((BASELINE, sel[same & (sel.tokens == cell["tokens"]) & (sel.objective == BASELINE)]),
                                (PRETRAINED_ROW, sel[same & sel.pretrained])):
                if arm.empty:
                    if versus == BASELINE:
                        tests.append(_test_row("table3", cell, col, versus, None, "no MLE run in this cell", math.nan))
                    continue
                t, why, mdd = icl_test(g, arm, artifacts, col, alpha)
                tests.append(_test_row("table3", cell, col, versus, t, why, mdd))
        if cell["objective"] == BASELINE:
            # MLE itself against the pre-trained model (does fine-tuning help or hurt at all?).
            pre = sel[(sel.domain == cell["domain"]) & (sel.model == cell["model"]) & sel.pretrained]
            for col, _ in columns[:-1]:
                if not pre.empty:
                    t, why, mdd = icl_test(g, pre, artifacts, col, alpha)
                    tests.append(_test_row("table3", cell, col, PRETRAINED_ROW, t, why, mdd))
    frame = pd.DataFrame(frame_rows)
    tests = _holm_marks(pd.DataFrame(tests), alpha)
    frame_md = frame.assign(tokens=[0 if o == PRETRAINED_ROW else t for o, t in zip(frame.objective, frame.tokens)])
    md = _grid_markdown(frame_md, tests, several_cells, domain_in_row=True)
    return Table("table3_icl", title, frame, md, tests, notes + _test_notes(tests, alpha))
