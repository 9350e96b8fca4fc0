"""Figure 2 of the paper (EMO, arXiv 2310.04691, section 4): precision_ce (reverse cross-entropy,
samples under a surrogate) against recall_ce (forward cross-entropy, human text under the model),
one point per MLflow run, coloured by objective. The scores themselves come from
``emo_ray.evaluation.precision_recall``; this module only reads them back across runs, so it sits
in ``report/`` (an evaluation module reading sweep trials was the import circle
sweep -> evaluation -> sweep of issue 24). The sweep report logs it as ``report/precision_recall.png``
when the trials measured both numbers; ``log_precision_recall_plot`` does it for any set of runs."""
from __future__ import annotations

import math

import pandas as pd

from emo_ray.evaluation.precision_recall import parse_precision_metric, recall_metric

FILE = "precision_recall.png"



def metric_pairs(columns) -> list[tuple[str, str, str, str]]:
    """``(corpus, decoder, precision column, recall column)`` for every corpus / decoder whose
    precision_ce and recall_ce are both among ``columns`` (MLflow metric names)."""
    cols = set(columns)
    out = []
    for c in sorted(cols):
        m = parse_precision_metric(c)
        if m and recall_metric(m[0]) in cols:
            out.append((m[0], m[1], c, recall_metric(m[0])))
    return out


def plottable(df: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    """``metric_pairs`` for which at least one row of ``df`` has both numbers."""
    return [p for p in metric_pairs(df.columns) if df[[p[2], p[3]]].notna().all(axis=1).any()]


def runs_frame(run_ids: list[str], tracking_uri: str | None = None) -> pd.DataFrame:
    """One row per MLflow run: ``run_id``, ``objective`` (label) and its metrics. The label is the
    trial record's objective (sweep children), else the ``emo_ray.objective`` tag (training runs
    and evaluations logged onto them), else the run name."""
    import json

    from emo_ray import tracking
    from emo_ray.tracking.tags import OBJECTIVE, TRIAL_RECORD as TRIAL_RECORD_TAG

    client = tracking.client(tracking_uri)
    rows = []
    for rid in run_ids:
        r = client.get_run(rid)
        tags = r.data.tags
        label = json.loads(tags[TRIAL_RECORD_TAG]).get("loss") if TRIAL_RECORD_TAG in tags else None
        label = label or tags.get(OBJECTIVE) or r.info.run_name or rid[:8]
        rows.append({"run_id": rid, "objective": label, **r.data.metrics})
    return pd.DataFrame(rows)


def plot_precision_recall(df: pd.DataFrame, path: str) -> list[tuple[str, str]]:
    """precision_ce (y) against recall_ce (x), one panel per corpus and decoder, one point per row
    of ``df`` (columns ``objective`` and the MLflow metric names, as ``runs_frame`` or the report's
    ``collect.collect`` give), coloured and labelled by objective; the seed std of precision_ce
    is the error bar. Lower is better on both axes. Returns the ``(corpus, decoder)`` panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = plottable(df)
    if not pairs:
        raise ValueError("no run logged both eval/gen/<corpus>/recall_ce and eval/gen/<corpus>/<decoder>/precision_ce_mean "
                         "(evaluate with generation.precision_recall=true)")
    objectives = sorted({str(o) for o in df["objective"]})
    styles = {o: {"color": plt.cm.tab10(i % 10), "marker": "osD^vPX"[i % 7]} for i, o in enumerate(objectives)}
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.2 * len(pairs), 4.4), squeeze=False)
    for ax, (corpus, decoder, pcol, rcol) in zip(axes[0], pairs):
        data = df.dropna(subset=[pcol, rcol])
        label_points = len(data) <= 12  # a handful of runs: name each point; a sweep: the legend only
        for obj, rows in data.groupby(data["objective"].astype(str)):
            std_col = pcol[: -len("_mean")] + "_std"
            yerr = rows[std_col].to_numpy(float) if std_col in rows else None
            ax.errorbar(rows[rcol].to_numpy(float), rows[pcol].to_numpy(float), yerr=yerr, linestyle="none",
                        capsize=3, markersize=8, label=obj, **styles[obj])
            if label_points:
                for x, y in zip(rows[rcol], rows[pcol]):
                    ax.annotate(obj, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_xlabel("recall_ce (nats/token)\nforward CE: human text under the model")
        ax.set_ylabel("precision_ce (nats/token)\nreverse CE: samples under the surrogate")
        ax.set_title(f"{corpus} ({decoder}): lower is better on both", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [(c, d) for c, d, _, _ in pairs]


def points_table(df: pd.DataFrame) -> pd.DataFrame:
    """The plotted numbers, long form: run, objective, corpus, decoder, recall_ce, precision_ce(_std)."""
    out = []
    for corpus, decoder, pcol, rcol in metric_pairs(df.columns):
        std_col = pcol[: -len("_mean")] + "_std"
        for _, r in df.dropna(subset=[pcol, rcol]).iterrows():
            out.append({"run_id": r.get("run_id"), "objective": r["objective"], "corpus": corpus, "decoder": decoder,
                        "recall_ce": r[rcol], "precision_ce": r[pcol], "precision_ce_std": r.get(std_col, math.nan)})
    return pd.DataFrame(out)


def log_frame_plot(df: pd.DataFrame, run_id: str, client, artifact_path: str = "precision_recall") -> list[tuple[str, str]]:
    """Plot ``df`` and log ``precision_recall.png`` and the points as CSV to ``run_id``."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        panels = plot_precision_recall(df, str(Path(tmp) / "precision_recall.png"))
        points_table(df).to_csv(Path(tmp) / "precision_recall_points.csv", index=False)
        for f in ("precision_recall.png", "precision_recall_points.csv"):
            client.log_artifact(run_id, str(Path(tmp) / f), artifact_path)
    return panels


def log_precision_recall_plot(run_ids: list[str], artifact_run_id: str, tracking_uri: str | None = None,
                              artifact_path: str = "precision_recall") -> list[tuple[str, str]]:
    """Given several MLflow runs (e.g. a sweep's children, or evaluations of models trained with
    different objectives), draw precision_ce vs recall_ce and log it to ``artifact_run_id``
    (for instance the sweep's parent run, or one of the runs)."""
    from emo_ray import tracking

    return log_frame_plot(runs_frame(run_ids, tracking_uri), artifact_run_id, tracking.client(tracking_uri), artifact_path)
