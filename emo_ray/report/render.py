"""Assemble the report: Markdown (printed and logged), one CSV per table plus the comparisons,
Figure 1 as PNG (the only one: ``figure.FILE``) and, when the trials measured it, the
precision-recall plot, all logged under ``report/`` on the sweep's parent run; the MLflow runs
table is made readable on the way (``mlflow_view``). The end of a sweep calls ``report_and_log``."""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from emo_ray import stats
import emo_ray.report.figure as figure
import emo_ray.report.mlflow_view as mlflow_view
import emo_ray.report.planning as planning
import emo_ray.report.precision_recall as precision_recall
import emo_ray.report.scaling as scaling
import emo_ray.report.table2 as table2
import emo_ray.report.table3 as table3
import emo_ray.report.tables as tables
from emo_ray.report.collect import Artifacts, ReportError, child_runs, resolve_parent

ARTIFACT_DIR = "report"


@dataclass
class Report:
    parent_run_id: str
    markdown: str
    tables: list[tables.Table]
    scaling: scaling.Scaling | None = None
    """Figure 1's points, fits and per-volume differences."""
    files: dict[str, str] = field(default_factory=dict)
    """File name -> path of what was written (``write``)."""
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The collected child runs (for the MLflow view and the precision-recall plot)."""
    view_url_query: str = ""
    """The runs-table URL query that opens the sweep's view (``mlflow_view.share_view``)."""

    @property
    def summary(self) -> dict:
        """Fits and no-fit reasons, as the sweep's console summary prints them."""
        return scaling.summary(self.scaling) if self.scaling else {"metric": "none", "fits": [], "notes": []}


def _num(x: float, fmt: str = ".3g") -> str:
    return "—" if pd.isna(x) else ("∞" if math.isinf(x) else format(x, fmt))


def _tests_markdown(tests: pd.DataFrame) -> str:
    """The comparisons: the test run, its replicates per arm and df, the Holm-adjusted p, the MDD
    of that test at the level it must reach, the headroom, and the verdict in words."""
    if tests.empty:
        return ""
    body = []
    several = tests[["model", "tokens"]].drop_duplicates().shape[0] > 1
    for t in tests.to_dict("records"):
        ph = _num(t["p_holm"], ".2g") + ("*" if t["significant"] else "")
        ci = "" if pd.isna(t["low"]) else f" [{t['low']:+.3g}, {t['high']:+.3g}]"
        where = [x for x in (t["domain"], t["model"], f"{int(t['tokens']):,} tok") if x] if several else [t["domain"]]
        who = t["objective"] + (f" [{', '.join(w for w in where if w)}]" if any(where) else "")
        n = f"{t['n_a']} vs {t['n_b']}" if t["n_b"] else f"{t['n_a']} vs fixed"
        head = "unknown" if t["table"] == "table1" and pd.isna(t["headroom"]) else _num(t["headroom"])  # MAUVE
        body.append([who, t["column"], t["versus"], t["scope"], _num(t["diff"], "+.4g") + ci, _num(t["p_value"], ".2g"),
                     ph, n, _num(t["df"], ".3g"), f"{_num(t['mdd'])} (α={_num(t['alpha_test'], '.2g')})", head,
                     t["verdict"], t["method"]])
    return tables.md_table(["objective", "column", "vs", "claim about", f"diff [{tables.LEVEL:.0%} CI]", "p",
                            "p (Holm)", "n per arm", "df", "MDD (power 0.8)", "headroom", "verdict", "test"], body)


def build_report(parent_ref: str, tracking_uri: str, alpha: float = 0.001,
                 delta_mauve: float = planning.PAPER_DELTA_MAUVE) -> Report:
    """Read the sweep ``parent_ref`` (run id or sweep name) and build every table and Figure 1's
    data; nothing is written. Missing pieces are stated in the tables, never invented.
    ``delta_mauve``: the MAUVE difference the power plan sizes a sweep for."""
    from emo_ray import tracking

    if not 0 < alpha < 1:
        raise ReportError(f"alpha must be in (0, 1), got {alpha}")
    if not 0 < delta_mauve <= 1:
        raise ReportError(f"delta_mauve must be in (0, 1], got {delta_mauve}")
    client = tracking.client(tracking_uri)
    parent = resolve_parent(client, parent_ref)
    runs = child_runs(parent, tracking_uri)
    arts = Artifacts(client)
    made = [tables.table1_mauve(runs, alpha, delta_mauve), table2.table2_generation(runs, arts, alpha),
            table3.table3_icl(runs, arts, alpha)]
    fig = scaling.build(runs, alpha)
    n_tuned, n_pre = int((~runs.pretrained).sum()), int(runs.pretrained.sum())
    seeds = sorted(runs[~runs.pretrained]["seed"].unique())
    md = [f"# Sweep report ({parent})", "",
          f"{n_tuned} fine-tuned run(s), {n_pre} pre-trained evaluation(s); training seeds {list(map(int, seeds))}.",
          f"Values: mean ± half width of the {tables.LEVEL:.0%} Student-t interval over training seeds, t(S-1) over "
          "one value per seed (MAUVE, ROUGE: the mean over its sampling runs; oracle perplexity: exp(sum NLL / sum "
          "tokens) over its generations; ICL: its accuracy); the pre-trained row over its sampling runs. "
          "`(n=1)`: a single value, no interval.",
          f"Marks: `{tables.MARK_VS_BASELINE}` differs from MLE, `{tables.MARK_VS_PRETRAINED}` from the pre-trained "
          f"model, at Holm-adjusted p < {alpha:g} ({stats.HOLM_NOTE}, across the comparisons of each table). "
          "Each cell keeps the best hyperparameter set of its objective (by the table's seed-mean score: MAUVE for "
          "tables 1-2, average ICL accuracy for table 3), shown in parentheses. Tests run on seed values (Welch; "
          "one-sample t against a fixed pre-trained score); MDD: the smallest true difference the test that was run "
          "detects with power 0.8, with its se and df, at α/m (Holm's first step over the m tests of its table); "
          "headroom: the most the baseline could gain (MAUVE: human-vs-human ceiling minus its score; accuracy: 1 "
          "minus it); an MDD above the headroom reads \"cannot detect\", never \"no difference\".", ""]
    if len(seeds) < 2:
        md += ["**One training seed**: nothing can be said about objectives (one seed is one replicate); the tests "
               "compare checkpoints (ICL: exact McNemar on items; oracle perplexity: paired t over prompts; MAUVE: "
               "Welch over sampling runs) and mark no cell.", ""]
    for t in made:
        md += [f"## {t.title}", "", t.markdown, ""]
        md += [f"- {n}" for n in t.notes] + ([""] if t.notes else [])
        if not t.tests.empty:
            md += ["Comparisons:", "", _tests_markdown(t.tests), ""]
        for heading, body in t.extra:
            md += [f"{heading}:", "", body, ""]
    md += _figure_markdown(fig)
    extra = [tables.Table("figure1_points", "Figure 1 points", fig.points, "", pd.DataFrame()),
             tables.Table("figure1_fits", "Figure 1 fits", fig.fits, "", pd.DataFrame()),
             tables.Table("figure1_differences", "Figure 1 differences", fig.differences, "", pd.DataFrame())]
    return Report(parent, "\n".join(md), made + extra, fig, runs=runs)


def _figure_markdown(fig: scaling.Scaling) -> list[str]:
    md = ["## Figure 1: scaling curves (headline metrics vs fine-tuning tokens and model size)", ""]
    if not fig.metrics:
        return md + ["*No run logged a headline metric (validation loss, MAUVE, average ICL accuracy): no figure.*", ""]
    md += [f"![Figure 1]({figure.FILE})", "",
           "One curve per objective: seed mean with its 95% t band; dashed: `y = a x^b` fitted on one point per "
           "seed with 95% bootstrap intervals (seeds resampled within each x); the pre-trained model is the x = 0 "
           "reference (dotted line / star), not in the fit. Differences: objective minus MLE per data volume, Welch "
           "on seed values, Holm across the metric's comparisons.", ""]
    for h in fig.metrics:
        pts = fig.points[fig.points.metric == h.name]
        fits = fig.fits[fig.fits.metric == h.name] if not fig.fits.empty else fig.fits
        diffs = fig.differences[fig.differences.column == h.name] if not fig.differences.empty else fig.differences
        md += [f"### {h.label} (`{h.key}`)", "", "Points:", "", figure.points_markdown(pts), ""]
        if not fits.empty:
            md += ["Power laws:", "", figure.fits_markdown(fits), ""]
        if not diffs.empty:
            md += ["Each objective minus MLE per data volume:", "", figure.differences_markdown(diffs), ""]
    md += [f"- {n}" for n in fig.notes] + ([""] if fig.notes else [])
    return md


def write(report: Report, folder: str | Path) -> dict[str, str]:
    """Markdown, one CSV per table, the comparisons CSV and Figure 1 PNG into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"report.md": folder / "report.md"}
    files["report.md"].write_text(report.markdown + "\n")
    for t in report.tables:
        files[f"{t.name}.csv"] = folder / f"{t.name}.csv"
        t.frame.to_csv(files[f"{t.name}.csv"], index=False)
    for t in report.tables:
        for what in ("variance", "plan"):
            if not getattr(t, what).empty:
                files[f"{t.name}_{what}.csv"] = folder / f"{t.name}_{what}.csv"
                getattr(t, what).to_csv(files[f"{t.name}_{what}.csv"], index=False)
    tests = [t.tests for t in report.tables if not t.tests.empty]
    files["comparisons.csv"] = folder / "comparisons.csv"
    (pd.concat(tests, ignore_index=True) if tests else pd.DataFrame()).to_csv(files["comparisons.csv"], index=False)
    if report.scaling is not None and report.scaling.metrics:
        files[figure.FILE] = folder / figure.FILE
        figure.plot(report.scaling, str(files[figure.FILE]))
    if not report.runs.empty and precision_recall.plottable(report.runs):
        files[precision_recall.FILE] = folder / precision_recall.FILE
        precision_recall.plot_precision_recall(report.runs, str(files[precision_recall.FILE]))
        files["precision_recall_points.csv"] = folder / "precision_recall_points.csv"
        precision_recall.points_table(report.runs).to_csv(files["precision_recall_points.csv"], index=False)
    report.files = {k: str(v) for k, v in files.items()}
    return report.files


def report_and_log(parent_ref: str, tracking_uri: str, alpha: float = 0.001, out_dir: str | None = None,
                   delta_mauve: float = planning.PAPER_DELTA_MAUVE) -> Report:
    """Build the report, write it (to ``out_dir`` or a temporary folder) and log every file under
    ``report/`` on the parent run; then the MLflow view: headline metrics on every trial, the fits
    on the parent, and the shared runs-table view the sweep's printed link opens."""
    from emo_ray import tracking

    report = build_report(parent_ref, tracking_uri, alpha, delta_mauve)
    client = tracking.client(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        files = write(report, out_dir or tmp)
        for path in files.values():
            client.log_artifact(report.parent_run_id, path, ARTIFACT_DIR)
    if out_dir is None:
        report.files = {}
    mlflow_view.log_headlines(client, scaling.headline_values(report.runs))
    mlflow_view.log_fits(client, report.parent_run_id, report.scaling.fits)
    report.view_url_query = mlflow_view.share_view(client, report.parent_run_id)
    return report


def sweep_end(parent_run_id: str, tracking_uri: str) -> dict:
    """What the end of a sweep runs (``sweep.runner.run_sweep(report=sweep_end)``): the report on
    its parent run, and for the console summary the fits, the reasons for missing ones and the
    query of the shared runs-table view. A sweep without a finished trial gets the reason."""
    try:
        report = report_and_log(parent_run_id, tracking_uri)
    except ReportError as e:  # no finished trial: the failures are what the sweep reports
        return {"aggregate": {"metric": "none", "fits": [], "notes": [f"no report: {e}"]}}
    return {"aggregate": report.summary, "view_url_query": report.view_url_query}
