"""Figure 1 of the paper, drawn once (``report/figure1.png``): one row per headline metric
(``report.scaling.HEADLINES``), vs fine-tuning tokens (left, at the largest model) and vs model
size (right, at the largest data volume); one curve per objective with its 95% seed-interval band,
the fitted power law ``y = a x^b`` dashed where there is one, and the pre-trained model as the
x = 0 reference: a log axis has no 0, so it is a dotted horizontal line (data axis) or a star at
its size (size axis), never a point of the fit. Plus the Markdown of its points, fits and
differences."""
from __future__ import annotations

import numpy as np
import pandas as pd

from emo_ray.report.scaling import AXES, Scaling, axis_name, curve
from emo_ray.report.tables import PRETRAINED_ROW, md_table

FILE = "figure1.png"
"""The one Figure 1 a sweep's parent run carries (under ``report/``)."""


def human(x: float) -> str:
    """Tick labels: 135000000 -> 135M, 1.3e9 -> 1.3B, 2048 -> 2,048."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:,.0f}"


def _label(obj: str, dom: str) -> str:
    return obj + (f" [{dom}]" if dom else "")


def _draw_curves(ax, pts: pd.DataFrame, fits: pd.DataFrame, axis: str, colors: dict) -> None:
    data = curve(pts, axis)
    for (obj, dom), g in data.groupby(["objective", "domain"]) if not data.empty else []:
        x, c = g[axis].to_numpy(float), colors[(obj, dom)]
        ax.plot(x, g["mean"], "o-", color=c, label=_label(obj, dom))
        lo, hi = g["low"].to_numpy(float), g["high"].to_numpy(float)
        if np.isfinite(lo).any():
            mean = g["mean"].to_numpy(float)
            ax.fill_between(x, np.where(np.isfinite(lo), lo, mean), np.where(np.isfinite(hi), hi, mean), color=c, alpha=0.2)
        f = fits[(fits.axis == axis) & (fits.objective == obj) & (fits.domain == dom)] if not fits.empty else fits
        if len(f) and x.min() > 0:
            r = f.iloc[0]
            xs = np.geomspace(x.min(), x.max(), 50)
            ax.plot(xs, r["a"] * xs ** r["b"], "--", color=c, alpha=0.7,
                    label=f"fit b={r['b']:.3g} [{r['b_low']:.3g}, {r['b_high']:.3g}]")
    if not data.empty and (data[axis] > 0).all():
        ax.set_xscale("log")
        ticks = sorted(data[axis].unique())
        ax.set_xticks(ticks, [human(t) for t in ticks])
        ax.minorticks_off()


def _draw_pretrained(ax, pre: pd.DataFrame, axis: str) -> None:
    if pre.empty:
        return
    if axis == "n_params":
        ax.plot(pre["n_params"], pre["mean"], "k*", markersize=12, label=f"{PRETRAINED_ROW} (x = 0 tokens)")
        return
    for m in pre[pre.n_params == pre.n_params.max()]["mean"]:
        ax.axhline(m, color="k", ls=":", label=f"{PRETRAINED_ROW} (x = 0 tokens)")


def plot(s: Scaling, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = s.metrics or []
    fig, grid = plt.subplots(max(len(rows), 1), 2, figsize=(11, 4.0 * max(len(rows), 1)), squeeze=False)
    tuned = s.points[s.points.objective != PRETRAINED_ROW] if not s.points.empty else s.points
    series = sorted({(o, d) for o, d in zip(tuned.get("objective", []), tuned.get("domain", []))})
    colors = {k: plt.cm.tab10(i % 10) for i, k in enumerate(series)}
    for axes, h in zip(grid, rows):
        pts = s.points[s.points.metric == h.name]
        fits = s.fits[s.fits.metric == h.name] if not s.fits.empty else s.fits
        for ax, axis in zip(axes, AXES):
            _draw_curves(ax, pts, fits, axis, colors)
            _draw_pretrained(ax, pts[pts.objective == PRETRAINED_ROW], axis)
            ax.set_xlabel(axis_name(axis))
            ax.set_ylabel(h.label + (" (lower is better)" if not h.higher_is_better else ""))
            ax.set_title(f"{h.label} vs {axis_name(axis)}", fontsize=10)
            ax.grid(alpha=0.3)
            handles, labels = ax.get_legend_handles_labels()
            if handles:
                uniq = dict(zip(labels, handles))
                ax.legend(uniq.values(), uniq.keys(), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _iv(mean: float, low: float, high: float) -> str:
    return f"{mean:.4g}" + ("" if pd.isna(low) else f" [{low:.4g}, {high:.4g}]")


def points_markdown(pts: pd.DataFrame) -> str:
    order = pts.assign(_pre=pts.objective != PRETRAINED_ROW).sort_values(["_pre", "objective", "domain", "n_params", "tokens"])
    body = [[_label(r["objective"], r["domain"]) + (f" ({r['hparams']})" if r["hparams"] else ""), r["model"],
             f"{int(r['tokens']):,}", _iv(r["mean"], r["low"], r["high"]), r["n"]] for r in order.to_dict("records")]
    return md_table(["objective", "model", "tokens (x)", "mean [95% CI over seeds]", "seeds"], body)


def fits_markdown(fits: pd.DataFrame) -> str:
    body = [[axis_name(r["axis"]), _label(r["objective"], r["domain"]), _iv(r["a"], r["a_low"], r["a_high"]),
             _iv(r["b"], r["b_low"], r["b_high"]), f"[{r['b_t_low']:.4g}, {r['b_t_high']:.4g}]", f"{r['r2']:.3f}",
             r["points"], r["interval"]] for r in fits.to_dict("records")]
    return md_table(["x", "objective", "a [95% CI]", "b [95% CI]", "b: t interval", "R² (log)", "points (seeds)",
                     "interval"], body)


def differences_markdown(d: pd.DataFrame) -> str:
    body = []
    for r in d.to_dict("records"):
        ci = "" if pd.isna(r["low"]) else f" [{r['low']:+.3g}, {r['high']:+.3g}]"
        p = "—" if pd.isna(r["p_holm"]) else f"{r['p_holm']:.2g}"
        mdd = "—" if pd.isna(r["mdd"]) else f"{r['mdd']:.3g}"
        head = "unknown" if pd.isna(r["headroom"]) else f"{r['headroom']:.3g}"
        body.append([f"{int(r['tokens']):,}", _label(r["objective"], r["domain"]), r["model"],
                     ("—" if pd.isna(r["diff"]) else f"{r['diff']:+.4g}") + ci, p, mdd, head, r["verdict"]])
    return md_table(["tokens", "objective − mle", "model", "diff [95% CI]", "p (Holm)", "MDD", "headroom", "verdict"], body)
