"""Figure 1 of the paper: average ICL accuracy vs model size (at the largest data volume) and vs
fine-tuning tokens (at the largest model), per objective, with 95% interval bands over seeds, the
pre-trained model as its own marker, and power-law fits (``stats.fit_power_law``) where >= 3
distinct x exist; otherwise the reason is returned for the report to print. The fits take one
point per training seed, not the seed means: the seeds are the replicates, and the fit's t
intervals (df = points - 2) are exact under the log-log linear model only on them."""
from __future__ import annotations


import numpy as np
import pandas as pd

from emo_ray import stats
from emo_ray.report.collect import ICL_AVG
from emo_ray.report.tables import PRETRAINED_ROW, interval, md_table


def figure_points(sel: pd.DataFrame) -> pd.DataFrame:
    """Mean and interval of the average ICL accuracy per (objective, domain, n_params, tokens),
    from the runs ``tables.icl_runs`` kept (best set per cell, pre-trained rows included)."""
    rows = []
    if ICL_AVG not in sel.columns:
        return pd.DataFrame(rows)
    for (obj, dom, n, tok), g in sel.dropna(subset=["n_params"]).groupby(["objective", "domain", "n_params", "tokens"]):
        iv = interval(g[ICL_AVG])
        if iv is not None:
            rows.append({"objective": obj, "domain": dom, "n_params": n, "tokens": tok, "mean": iv.mean,
                         "low": iv.low, "high": iv.high, "n": iv.n})
    return pd.DataFrame(rows)


def seed_points(sel: pd.DataFrame) -> pd.DataFrame:
    """One row per kept run (a training seed): objective, domain, n_params, tokens and its average
    ICL accuracy as ``mean`` (the column the curves use), for the fits."""
    cols = ["objective", "domain", "n_params", "tokens"]
    if ICL_AVG not in sel.columns:
        return pd.DataFrame(columns=[*cols, "mean"])
    return sel.dropna(subset=["n_params", ICL_AVG])[[*cols, ICL_AVG]].rename(columns={ICL_AVG: "mean"})


def fits(points: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Power-law fits per (axis, objective, domain) on the curves drawn, from ``seed_points``
    (one point per seed); reasons for those not fitted."""
    rows, notes = [], []
    if points.empty:
        return pd.DataFrame(rows), notes
    tuned = points[points.objective != PRETRAINED_ROW]
    for axis in ("n_params", "tokens"):
        for (obj, dom), g in _curves(tuned, axis).groupby(["objective", "domain"]):
            f = stats.fit_power_law(g[axis].to_numpy(float), g["mean"].to_numpy(float))
            label = obj + (f" [{dom}]" if dom else "")
            if isinstance(f, stats.NoFit):
                notes.append(f"no power law for {label} vs {_axis_name(axis)}: {f.reason}")
                continue
            rows.append({"axis": axis, "objective": obj, "domain": dom, "a": f.a, "b": f.b, "r2": f.r2,
                         "a_low": f.a_low, "a_high": f.a_high, "b_low": f.b_low, "b_high": f.b_high, "points": f.n})
    return pd.DataFrame(rows), notes


def _axis_name(axis: str) -> str:
    return "model size" if axis == "n_params" else "fine-tuning tokens"


def _curves(points: pd.DataFrame, axis: str) -> pd.DataFrame:
    """As Figure 1: accuracy vs size at the largest data volume, vs data at the largest model."""
    other = "tokens" if axis == "n_params" else "n_params"
    if points.empty:
        return points
    keep = points.groupby("domain")[other].transform("max")
    return points[points[other] == keep].sort_values(["objective", axis])


def fits_markdown(fit_rows: pd.DataFrame) -> str:
    if fit_rows.empty:
        return ""
    body = [[_axis_name(r["axis"]), r["objective"] + (f" [{r['domain']}]" if r["domain"] else ""),
             f"{r['a']:.3g} [{r['a_low']:.3g}, {r['a_high']:.3g}]", f"{r['b']:.3g} [{r['b_low']:.3g}, {r['b_high']:.3g}]",
             f"{r['r2']:.3f}", r["points"]]
            for r in fit_rows.to_dict("records")]
    return md_table(["x", "objective", "a [95% CI]", "b [95% CI]", "R² (log)", "points (seeds)"], body)


def plot(points: pd.DataFrame, fit_rows: pd.DataFrame, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    tuned = points[points.objective != PRETRAINED_ROW] if not points.empty else points
    pre = points[points.objective == PRETRAINED_ROW] if not points.empty else points
    series = sorted({(o, d) for o, d in zip(tuned.get("objective", []), tuned.get("domain", []))})
    colors = {s: plt.cm.tab10(i % 10) for i, s in enumerate(series)}
    for ax, axis in zip(axes, ("n_params", "tokens")):
        data = _curves(tuned, axis)
        for (obj, dom), g in data.groupby(["objective", "domain"]) if not data.empty else []:
            x = g[axis].to_numpy(float)
            c = colors[(obj, dom)]
            ax.plot(x, g["mean"], "o-", color=c, label=obj + (f" [{dom}]" if dom else ""))
            lo, hi = g["low"].to_numpy(float), g["high"].to_numpy(float)
            if np.isfinite(lo).any():
                ax.fill_between(x, np.where(np.isfinite(lo), lo, g["mean"]), np.where(np.isfinite(hi), hi, g["mean"]),
                                color=c, alpha=0.2)
            f = fit_rows[(fit_rows.axis == axis) & (fit_rows.objective == obj) & (fit_rows.domain == dom)] \
                if not fit_rows.empty else fit_rows
            if len(f):
                xs = np.geomspace(x.min(), x.max(), 50)
                ax.plot(xs, f["a"].iloc[0] * xs ** f["b"].iloc[0], "--", color=c, alpha=0.6)
        if not pre.empty:
            if axis == "n_params":
                ax.plot(pre["n_params"], pre["mean"], "k*", markersize=12, label=PRETRAINED_ROW)
            else:
                # No fine-tuning tokens: a log axis has no 0, so the largest model's pre-trained
                # accuracy is a horizontal reference line.
                largest = pre[pre.n_params == pre.n_params.max()]
                for m in largest["mean"]:
                    ax.axhline(m, color="k", ls=":", label=PRETRAINED_ROW)
        if not data.empty or (axis == "n_params" and not pre.empty):
            ax.set_xscale("log")
        ax.set_xlabel("model parameters" if axis == "n_params" else "fine-tuning tokens")
        ax.set_ylabel("average ICL accuracy")
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            uniq = dict(zip(labels, handles))
            ax.legend(uniq.values(), uniq.keys(), fontsize=8)
    axes[0].set_title("vs model size (largest data volume)", fontsize=10)
    axes[1].set_title("vs fine-tuning tokens (largest model)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
