"""Children of a sweep's parent run -> the paper's scaling-law curves (Figure 1).

For each (objective, model, data volume) cell the best hyperparameter set is kept, as the paper
does for gamma (4.2.2), by its seed-mean score; curves show the seed mean with the seed spread
(std), and a power law ``y = a * x**b`` is fitted per objective by least squares in log-log space.
Each child run carries its trial as a typed record (tag ``emo_ray.trial``) and its counted
parameters (param ``model.n_params``); nothing is re-parsed from params.
The primary metric (average ICL accuracy) gets the first row of the figure; every MAUVE score the
trials logged (one per generation corpus) gets a row below it, with its own best set per cell.
Runs standalone on any finished sweep: ``emo-ray aggregate PARENT_RUN_ID``.
"""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd

FALLBACK_METRIC = "val/ppl"
# Secondary rows of the figure: MAUVE of each generation corpus and decoder, seed-mean over samples.
SECONDARY_METRICS = re.compile(r"^eval/gen/([^/]+)/([^/]+)/mauve_mean$")


def collect(parent_run_id: str, tracking_uri: str) -> pd.DataFrame:
    """One row per finished child run: its trial record, its counted parameters and its final
    metrics. Runs without a trial record (not made by a sweep trial) are left out and counted in
    ``df.attrs["skipped"]``; runs without a parameter count fall back to the model registry's
    figure, named in ``df.attrs["n_params_from_registry"]``."""
    from mlflow import MlflowClient

    from emo_ray.models import n_params
    from emo_ray.sweep.spec import Trial
    from emo_ray.sweep.trial import TRIAL_RECORD_TAG

    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
                              max_results=10_000)
    rows, skipped, from_registry = [], [], set()
    for r in runs:
        if r.info.status != "FINISHED":
            continue
        record = r.data.tags.get(TRIAL_RECORD_TAG)
        if record is None:
            skipped.append(r.info.run_id)
            continue
        trial = Trial.from_dict(json.loads(record))
        counted = r.data.params.get("model.n_params")
        if counted is None:
            from_registry.add(trial.model)
        rows.append({
            "run_id": r.info.run_id,
            "trial_id": r.data.tags.get("emo_ray.trial_id", ""),
            "model": trial.model,
            "n_params": float(counted) if counted is not None else (n_params(trial.model) or math.nan),
            "objective": trial.loss,
            "hparams": trial.hparams,
            "tokens": trial.tokens,
            "seed": trial.seed,
            "domain": trial.domain,
            "pretrained": trial.pretrained,
            **r.data.metrics,
        })
    df = pd.DataFrame(rows)
    df.attrs.update(skipped=skipped, n_params_from_registry=sorted(from_registry))
    return df


def best_per_cell(df: pd.DataFrame, metric: str, higher_is_better: bool) -> pd.DataFrame:
    """Seed statistics per (objective, hyperparameter set, model, tokens), then the best set per
    cell (its label in ``hparams``)."""
    keys = ["objective", "model", "n_params", "tokens"]
    stats = df.groupby([*keys, "hparams"])[metric].agg(["mean", "std", "count"]).reset_index()
    stats["std"] = stats["std"].fillna(0.0)
    order = stats.sort_values("mean", ascending=not higher_is_better, kind="stable")
    best = order.groupby(keys, as_index=False).first()
    return best.sort_values(keys).reset_index(drop=True)


def fit_power_law(x: np.ndarray, y: np.ndarray) -> dict:
    """``y = a * x**b`` by least squares on ``log y = log a + b log x``."""
    ok = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(np.unique(x)) < 2:
        return {"a": math.nan, "b": math.nan, "r2": math.nan, "points": int(len(x))}
    b, log_a = np.polyfit(np.log(x), np.log(y), 1)
    pred = log_a + b * np.log(x)
    ss_res = float(((np.log(y) - pred) ** 2).sum())
    ss_tot = float(((np.log(y) - np.log(y).mean()) ** 2).sum())
    return {"a": float(math.exp(log_a)), "b": float(b), "r2": 1.0 - ss_res / ss_tot if ss_tot else 1.0,
            "points": int(len(x))}


def curves(best: pd.DataFrame, axis: str) -> pd.DataFrame:
    """For the ``axis`` plot ('n_params' or 'tokens'): the other axis is fixed at its largest
    value, as in Figure 1 (accuracy vs size at full data; vs data at the largest model)."""
    other = "tokens" if axis == "n_params" else "n_params"
    if best.empty:
        return best
    return best[best[other] == best[other].max()].sort_values(["objective", axis])


def plot(panels: list[tuple[str, pd.DataFrame, dict]], path: str) -> None:
    """One row per (metric, best points, fits): vs model size on the left, vs data on the right.
    An objective keeps its colour in every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objectives = sorted({o for _, best, _ in panels for o in best["objective"]})
    # Objectives often tie at small scale; a shrinking marker per objective keeps tied points
    # visible as nested shapes instead of the last-drawn line hiding the others.
    styles = {o: {"color": plt.cm.tab10(i % 10), "marker": "osD^vPX"[i % 7], "markersize": 10 - 1.5 * (i % 4)}
              for i, o in enumerate(objectives)}
    fig, grid = plt.subplots(len(panels), 2, figsize=(11, 4.2 * len(panels)), squeeze=False)
    for axes, (metric, best, fits) in zip(grid, panels):
        _plot_row(axes, metric, best, fits, styles)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def short_name(metric: str) -> str:
    """``eval/gen/wikitext-2/ancestral/mauve_mean`` -> ``MAUVE wikitext-2 (ancestral)`` for titles."""
    m = SECONDARY_METRICS.match(metric)
    return f"MAUVE {m[1]} ({m[2]})" if m else metric


def human(x: float) -> str:
    """Tick labels: 135000000 -> 135M, 1.3e9 -> 1.3B, 2048 -> 2,048."""
    for scale, suffix in ((1e9, "B"), (1e6, "M")):
        if x >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:,.0f}"


def _plot_row(axes, metric: str, best: pd.DataFrame, fits: dict, styles: dict) -> None:
    name = short_name(metric)
    for ax, axis, label in [(axes[0], "n_params", "model parameters"), (axes[1], "tokens", "fine-tuning tokens")]:
        data = curves(best, axis)
        for obj, rows in data.groupby("objective"):
            x, y, s = rows[axis].to_numpy(float), rows["mean"].to_numpy(float), rows["std"].to_numpy(float)
            ax.errorbar(x, y, yerr=s, capsize=3, label=obj, markerfacecolor="none", **styles[obj])
            f = fits.get((axis, obj))
            if f and math.isfinite(f["a"]):
                xs = np.geomspace(x.min(), x.max(), 50)
                ax.plot(xs, f["a"] * xs ** f["b"], "--", color=styles[obj]["color"], alpha=0.6)
        ax.set_xscale("log")
        ticks = sorted(data[axis].unique())  # label the swept values, not log-scale minor ticks
        ax.set_xticks(ticks, [human(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel(label)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title(f"{name} vs model size (largest data volume)", fontsize=10)
    axes[1].set_title(f"{name} vs data volume (largest model)", fontsize=10)


def aggregate(df: pd.DataFrame, metric: str, *, fallback: bool = True) -> tuple[pd.DataFrame, dict, str]:
    # The untrained models' evaluations (evaluate_pretrained) sit at 0 tokens, off a log axis:
    # the report draws them as their own point; the scaling curves are the fine-tuned trials.
    if "pretrained" in df.columns:
        df = df[~df["pretrained"].astype(bool)]
    if "domain" in df.columns and df["domain"].nunique() > 1:
        # One curve (and fit) per objective and domain: "mle/wikitext-2".
        df = df.assign(objective=df["objective"] + "/" + df["domain"])
    if df.empty:
        raise ValueError("the sweep has no finished child runs to aggregate")
    if fallback and (metric not in df.columns or df[metric].isna().all()):
        metric = FALLBACK_METRIC
    if metric not in df.columns:
        raise ValueError(f"no finished child run logged {metric!r}")
    higher = not metric.endswith(("ppl", "loss"))
    best = best_per_cell(df.dropna(subset=[metric, "n_params"]), metric, higher)
    fits = {}
    for axis in ("n_params", "tokens"):
        for obj, rows in curves(best, axis).groupby("objective"):
            fits[(axis, obj)] = fit_power_law(rows[axis].to_numpy(float), rows["mean"].to_numpy(float))
    return best, fits, metric


def secondary_metrics(df: pd.DataFrame, primary: str) -> list[str]:
    """MAUVE columns with at least one value (none when the trials ran no generation)."""
    return sorted(c for c in df.columns if SECONDARY_METRICS.match(c) and c != primary and df[c].notna().any())


def aggregate_and_log(parent_run_id: str, tracking_uri: str, metric: str) -> dict:
    """Aggregate the children and log PNG + CSVs + fit parameters to the parent run."""
    import tempfile
    from pathlib import Path

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    df = collect(parent_run_id, tracking_uri)
    best, fits, used = aggregate(df, metric)
    panels = [(used, best, fits)]
    panels += [(m, *aggregate(df, m, fallback=False)[:2]) for m in secondary_metrics(df, used)]
    fit_rows = [{"metric": m, "axis": a, "objective": o, **f} for m, _, fs in panels for (a, o), f in fs.items()]
    with tempfile.TemporaryDirectory() as tmp:
        plot(panels, str(Path(tmp) / "scaling_law.png"))
        df.to_csv(Path(tmp) / "trials.csv", index=False)
        pd.concat([b.assign(metric=m) for m, b, _ in panels]).to_csv(Path(tmp) / "scaling_law_points.csv", index=False)
        pd.DataFrame(fit_rows).to_csv(Path(tmp) / "power_law_fits.csv", index=False)
        for f in ("scaling_law.png", "trials.csv", "scaling_law_points.csv", "power_law_fits.csv"):
            client.log_artifact(parent_run_id, str(Path(tmp) / f), "scaling_law")
    # Figure 2 of the paper (precision vs recall cross-entropy, one point per child run) when the
    # trials evaluated with generation.precision_recall: artifacts under precision_recall/.
    from emo_ray.evaluation import precision_recall

    pr_panels = precision_recall.log_frame_plot(df, parent_run_id, client) if precision_recall.plottable(df) else []
    for r in fit_rows:
        if math.isfinite(r["b"]):
            # The primary metric's fits keep the short names; the others are qualified by metric.
            prefix = "powerlaw" if r["metric"] == used else f"powerlaw/{r['metric']}"
            client.log_metric(parent_run_id, f"{prefix}/{r['axis']}/{r['objective']}/b", r["b"])
            client.log_metric(parent_run_id, f"{prefix}/{r['axis']}/{r['objective']}/a", r["a"])
    client.set_tag(parent_run_id, "emo_ray.scaling_metric", used)
    notes = []
    if df.attrs.get("skipped"):
        notes.append(f"{len(df.attrs['skipped'])} finished child run(s) carry no trial record and were left out")
    if df.attrs.get("n_params_from_registry"):
        notes.append(f"no counted parameters logged for {df.attrs['n_params_from_registry']}: the registry's figure is used")
    if df["n_params"].isna().any():
        notes.append(f"models without any parameter count are off the size curve: {sorted(set(df[df.n_params.isna()].model))}")
    if notes:
        client.set_tag(parent_run_id, "emo_ray.aggregate_notes", "; ".join(notes))
    return {"metric": used, "points": best.to_dict("records"), "notes": notes,
            "fits": [r for r in fit_rows if r["metric"] == used],
            "secondary": {m: [r for r in fit_rows if r["metric"] == m] for m, _, _ in panels[1:]},
            "precision_recall": pr_panels}
