"""Figure 1's numbers (paper Sec. 4.2.3, Figure 1: a score vs fine-tuning tokens and vs model size,
one curve per objective): the sweep's headline metrics per run, the points of each curve with their
seed interval, the power-law fits and, per data volume, each objective minus MLE.

* Headline metrics (``HEADLINES``): final validation loss (the classic data-scaling law), MAUVE
  of the trial's own domain corpus (seed value = mean over its sampling runs) and the average ICL
  accuracy (the paper's Figure 1 metric), under stable keys ``headline/<name>`` so that every
  trial's row in the MLflow runs table carries the same three columns.
* Cells: the best hyperparameter set per (domain, model, tokens, objective) by the metric's own
  seed mean, the one rule of the report (``tables.best_hparams``, paper 4.2.2).
* Fits: ``stats.bootstrap_power_law`` on one point per training seed (the replicates), only on the
  fine-tuned curve: the pre-trained model sits at x = 0, off a log-log fit, and is drawn as a
  reference. With < 3 distinct x the reason is returned, never ``a=nan``.
* Differences: Welch on seed values (``units.compare``), Holm across the volumes and objectives of
  one metric, MDD against the headroom (accuracy: 1 - MLE's; MAUVE: human ceiling - MLE's; loss:
  unknown, it has no known floor) as in Table 1 (``units.finalize``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from emo_ray import stats
import emo_ray.report.planning as planning
import emo_ray.report.units as units
from emo_ray.report.collect import ICL_AVG, sampling_scores
from emo_ray.report.tables import BASELINE, CELL, PRETRAINED_ROW, best_hparams, interval
from emo_ray.tracking import keys

AXES = ("tokens", "n_params")


@dataclass(frozen=True)
class Headline:
    name: str
    """Short name: the MLflow key is ``headline/<name>``."""
    label: str
    higher_is_better: bool

    @property
    def key(self) -> str:
        return keys.headline_key(self.name)


VAL_LOSS = Headline("val_loss", "validation loss", False)
MAUVE = Headline("mauve", "MAUVE", True)
ICL = Headline("icl_avg_accuracy", "average ICL accuracy", True)
HEADLINES = (VAL_LOSS, MAUVE, ICL)


def _mauve_per_run(runs: pd.DataFrame) -> dict[str, float]:
    """Each run's MAUVE on its own domain's corpus (else the first corpus it scored), first decoder:
    the mean over its sampling runs (``.../seed<s>/mauve``), else the logged ``mauve_mean``."""
    long = sampling_scores(runs)
    long = long[long.metric == "mauve"].groupby(["run_id", "corpus", "decoder"])["value"].mean().reset_index()
    for c in runs.columns:
        if (m := keys.parse_gen_stat_key(c)) and (m.metric, m.stat) == ("mauve", "mean"):
            have = runs[["run_id", c]].dropna()
            extra = pd.DataFrame({"run_id": have["run_id"], "corpus": m.corpus, "decoder": m.decoder, "value": have[c]})
            long = pd.concat([long, extra]).drop_duplicates(["run_id", "corpus", "decoder"])
    domain = dict(zip(runs["run_id"], runs["domain"]))
    out = {}
    for rid, g in long.sort_values(["corpus", "decoder"]).groupby("run_id"):
        own = g[g.corpus == domain.get(rid)]
        out[rid] = float((own if len(own) else g)["value"].iloc[0])
    return out


def headline_values(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with one column per headline key (nan where a run did not measure it)."""
    out = runs.copy()
    out[VAL_LOSS.key] = runs[keys.VAL_LOSS] if keys.VAL_LOSS in runs.columns else math.nan
    out[ICL.key] = runs[ICL_AVG] if ICL_AVG in runs.columns else math.nan
    out[MAUVE.key] = runs["run_id"].map(_mauve_per_run(runs)).astype(float) if len(runs) else math.nan
    return out


def kept_runs(runs: pd.DataFrame, h: Headline) -> pd.DataFrame:
    """Fine-tuned runs of the best set per cell by ``h``'s seed mean, plus the pre-trained runs
    (objective ``pre-trained``, tokens 0: the x = 0 reference); only runs that measured ``h``."""
    have = runs[runs[h.key].notna()]
    tuned = have[~have["pretrained"]].reset_index(drop=True)
    best = best_hparams(tuned, tuned[h.key], h.higher_is_better) if len(tuned) else tuned
    pre = have[have["pretrained"]].assign(objective=PRETRAINED_ROW, tokens=0)
    return pd.concat([best, pre], ignore_index=True)


def points(kept: pd.DataFrame, h: Headline) -> pd.DataFrame:
    """Mean and t interval over seeds per (objective, domain, model, n_params, tokens)."""
    rows = []
    for (obj, dom, model, n, tok), g in kept.groupby(["objective", "domain", "model", "n_params", "tokens"], dropna=False):
        iv = interval(g[h.key])
        rows.append({"metric": h.name, "objective": obj, "domain": dom, "model": model, "n_params": n, "tokens": tok,
                     "hparams": g["hparams"].iloc[0], "mean": iv.mean, "low": iv.low, "high": iv.high, "n": iv.n})
    return pd.DataFrame(rows)


def curve(frame: pd.DataFrame, axis: str) -> pd.DataFrame:
    """Fine-tuned rows of one curve family: vs data at each domain's largest model, vs size at its
    largest data volume (as Figure 1)."""
    tuned = frame[frame.objective != PRETRAINED_ROW]
    if tuned.empty:
        return tuned
    other = "n_params" if axis == "tokens" else "tokens"
    return tuned[tuned[other] == tuned.groupby("domain")[other].transform("max")].sort_values(["objective", axis])


def axis_name(axis: str) -> str:
    return "fine-tuning tokens" if axis == "tokens" else "model size"


def fits(kept: pd.DataFrame, h: Headline) -> tuple[pd.DataFrame, list[str]]:
    """Power laws per (axis, objective, domain) on one point per seed; the reasons for the rest."""
    rows, notes = [], []
    for axis in AXES:
        data = curve(kept, axis)
        for (obj, dom), g in data.groupby(["objective", "domain"]) if not data.empty else []:
            label = obj + (f" [{dom}]" if dom else "")
            x, y = g[axis].to_numpy(float), g[h.key].to_numpy(float)
            f = stats.bootstrap_power_law(x, y)
            how = "bootstrap (seeds within x)"
            if isinstance(f, stats.NoFit) and len(np.unique(x)) >= 3:
                notes.append(f"{h.label}, {label} vs {axis_name(axis)}: no bootstrap ({f.reason}); t intervals instead")
                f, how = stats.fit_power_law(x, y), "t (n-2 df)"
            if isinstance(f, stats.NoFit):
                notes.append(f"no power law for {h.label}, {label} vs {axis_name(axis)}: {f.reason}")
                continue
            t = stats.fit_power_law(x, y)  # its exact t interval on b beside the bootstrap's (3 seeds: narrower)
            rows.append({"metric": h.name, "axis": axis, "objective": obj, "domain": dom, "a": f.a, "b": f.b,
                         "r2": f.r2, "a_low": f.a_low, "a_high": f.a_high, "b_low": f.b_low, "b_high": f.b_high,
                         "b_t_low": t.b_low, "b_t_high": t.b_high, "points": f.n, "interval": how})
    return pd.DataFrame(rows), notes


def _headroom(h: Headline, runs: pd.DataFrame, g: pd.DataFrame, baseline: float) -> float:
    if h is ICL:
        return 1.0 - baseline
    if h is MAUVE:
        return planning.human_ceiling(runs[runs.run_id.isin(g.run_id)], str(g["domain"].iloc[0])) - baseline
    return math.nan


def _no_checkpoint_test():
    return None, "one training seed per arm: a headline score has no per-item data to compare two checkpoints on"


def differences(runs: pd.DataFrame, kept: pd.DataFrame, h: Headline, alpha: float) -> pd.DataFrame:
    """Per (domain, model, tokens): every other objective minus MLE on seed values, Holm across
    the metric's comparisons, MDD and headroom (``units.finalize``)."""
    tuned = kept[kept.objective != PRETRAINED_ROW]
    tests = []
    for (dom, model, tok), g in tuned.groupby(["domain", "model", "tokens"]):
        base = g[g.objective == BASELINE]
        if base.empty:
            continue
        b = units.Arm(base[h.key].to_numpy(float), units.SEED)
        for obj, o in g[g.objective != BASELINE].groupby("objective"):
            a = units.Arm(o[h.key].to_numpy(float), units.SEED)
            t, why, sc = units.compare(a, b, _no_checkpoint_test)
            cell = dict(zip(CELL, (dom, model, tok, obj)))
            tests.append(units.test_row("figure1", cell, h.name, BASELINE, t, why, sc, _headroom(h, runs, g, b.mean)))
    return units.finalize(pd.DataFrame(tests), alpha)


@dataclass
class Scaling:
    """Figure 1's data for every headline metric some run measured."""

    points: pd.DataFrame
    fits: pd.DataFrame
    differences: pd.DataFrame
    notes: list[str]
    metrics: list[Headline]


def build(runs: pd.DataFrame, alpha: float) -> Scaling:
    runs = headline_values(runs)
    parts: dict[str, list] = {"points": [], "fits": [], "diffs": []}
    notes, measured = [], []
    for h in HEADLINES:
        if runs[h.key].notna().sum() == 0:
            continue
        measured.append(h)
        kept = kept_runs(runs, h)
        parts["points"].append(points(kept, h))
        f, why = fits(kept, h)
        parts["fits"].append(f)
        notes += why
        parts["diffs"].append(differences(runs, kept, h, alpha))
    frame = {k: pd.concat(v, ignore_index=True) if v else pd.DataFrame() for k, v in parts.items()}
    return Scaling(frame["points"], frame["fits"], frame["diffs"], notes, measured)


def summary(s: Scaling) -> dict:
    """What the sweep prints at its end (``console.print_sweep_summary``): the fits and, where a
    curve has none, the reason."""
    fits_out = [{"axis": r["axis"], "objective": f"{r['objective']} ({r['metric']})", "a": r["a"], "b": r["b"],
                 "points": r["points"]} for r in s.fits.to_dict("records")] if not s.fits.empty else []
    return {"metric": ", ".join(h.name for h in s.metrics) or "none", "fits": fits_out, "notes": list(s.notes)}
