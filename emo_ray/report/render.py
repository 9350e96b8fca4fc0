"""Assemble the report: Markdown (printed and logged), one CSV per table plus the comparisons,
and Figure 1 as PNG, all logged under ``report/`` on the sweep's parent run."""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from emo_ray import stats
from emo_ray.report import figure, tables
from emo_ray.report.collect import Artifacts, ReportError, child_runs, resolve_parent

ARTIFACT_DIR = "report"


@dataclass
class Report:
    parent_run_id: str
    markdown: str
    tables: list[tables.Table]
    files: dict[str, str] = field(default_factory=dict)
    """File name -> path of what was written (``write``)."""


def _tests_markdown(tests: pd.DataFrame, alpha: float) -> str:
    if tests.empty:
        return ""
    body = []
    several = tests[["model", "tokens"]].drop_duplicates().shape[0] > 1
    for t in tests.to_dict("records"):
        p = "—" if pd.isna(t["p_value"]) else f"{t['p_value']:.2g}"
        ph = "—" if pd.isna(t["p_holm"]) else f"{t['p_holm']:.2g}" + ("*" if t["significant"] else "")
        mdd = ("none" if math.isinf(t["mdd"]) else "—") if not math.isfinite(t["mdd"]) else f"{t['mdd']:.3g}"
        diff = "—" if pd.isna(t["diff"]) else f"{t['diff']:+.4g}"
        where = [x for x in (t["domain"], t["model"], f"{int(t['tokens']):,} tok") if x] if several else [t["domain"]]
        who = t["objective"] + (f" [{', '.join(w for w in where if w)}]" if any(where) else "")
        body.append([who, t["column"], t["versus"], diff, p, ph, t["n"], mdd, t["method"]])
    return tables.md_table(["objective", "column", "vs", "diff", "p", "p (Holm)", "n", f"MDD (α={alpha:g}, power 0.8)",
                            "method"], body)


def build_report(parent_ref: str, tracking_uri: str, alpha: float = 0.001) -> Report:
    """Read the sweep ``parent_ref`` (run id or sweep name) and build every table and Figure 1's
    data; nothing is written. Missing pieces are stated in the tables, never invented."""
    from mlflow import MlflowClient

    if not 0 < alpha < 1:
        raise ReportError(f"alpha must be in (0, 1), got {alpha}")
    client = MlflowClient(tracking_uri)
    parent = resolve_parent(client, parent_ref)
    runs = child_runs(parent, tracking_uri)
    arts = Artifacts(client)
    made = [tables.table1_mauve(runs, alpha), tables.table2_generation(runs, arts, alpha),
            tables.table3_icl(runs, arts, alpha)]
    points = figure.figure_points(tables.icl_runs(runs))
    fit_rows, fit_notes = figure.fits(points)
    n_tuned, n_pre = int((~runs.pretrained).sum()), int(runs.pretrained.sum())
    seeds = sorted(runs[~runs.pretrained]["seed"].unique())
    md = [f"# Sweep report ({parent})", "",
          f"{n_tuned} fine-tuned run(s), {n_pre} pre-trained evaluation(s); training seeds {list(map(int, seeds))}.",
          f"Values: mean ± half width of the {tables.LEVEL:.0%} Student-t interval over training seeds (x sampling "
          "runs for generation); `(n=1)`: a single value, no interval.",
          f"Marks: `{tables.MARK_VS_BASELINE}` differs from MLE, `{tables.MARK_VS_PRETRAINED}` from the pre-trained "
          f"model, at Holm-adjusted p < {alpha:g} ({stats.HOLM_NOTE}, across the comparisons of each table). "
          "Each cell keeps the best hyperparameter set of its objective (by the table's seed-mean score: MAUVE for "
          "tables 1-2, average ICL accuracy for table 3), shown in parentheses. MDD: the smallest difference the "
          "test would detect with power 0.8 at this n (—: identical arms or too few pairs; none: no possible accuracy "
          "difference is detectable at this n).", ""]
    if len(seeds) < 2:
        md += ["**One training seed**: intervals over seeds are missing; generation intervals and tests are over "
               "sampling runs only, ICL tests are exact McNemar on items.", ""]
    for t in made:
        md += [f"## {t.title}", "", t.markdown, ""]
        md += [f"- {n}" for n in t.notes] + ([""] if t.notes else [])
        if not t.tests.empty:
            md += ["Comparisons:", "", _tests_markdown(t.tests, alpha), ""]
    md += ["## Figure 1: average ICL accuracy vs model size and fine-tuning tokens", ""]
    if points.empty:
        md += ["*No average ICL accuracy logged: no figure points.*", ""]
    else:
        md += ["![Figure 1](figure1_icl_scaling.png)", "", figure.fits_markdown(fit_rows), ""]
        md += [f"- {n}" for n in fit_notes] + [""]
    extra = [tables.Table("figure1_points", "Figure 1 points", points, "", pd.DataFrame()),
             tables.Table("figure1_fits", "Figure 1 fits", fit_rows, "", pd.DataFrame())]
    return Report(parent, "\n".join(md), made + extra)


def write(report: Report, folder: str | Path) -> dict[str, str]:
    """Markdown, one CSV per table, the comparisons CSV and Figure 1 PNG into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"report.md": folder / "report.md"}
    files["report.md"].write_text(report.markdown + "\n")
    for t in report.tables:
        files[f"{t.name}.csv"] = folder / f"{t.name}.csv"
        t.frame.to_csv(files[f"{t.name}.csv"], index=False)
    tests = [t.tests for t in report.tables if not t.tests.empty]
    files["comparisons.csv"] = folder / "comparisons.csv"
    (pd.concat(tests, ignore_index=True) if tests else pd.DataFrame()).to_csv(files["comparisons.csv"], index=False)
    by_name = {t.name: t.frame for t in report.tables}
    if not by_name["figure1_points"].empty:
        files["figure1_icl_scaling.png"] = folder / "figure1_icl_scaling.png"
        figure.plot(by_name["figure1_points"], by_name["figure1_fits"], str(files["figure1_icl_scaling.png"]))
    report.files = {k: str(v) for k, v in files.items()}
    return report.files


def report_and_log(parent_ref: str, tracking_uri: str, alpha: float = 0.001, out_dir: str | None = None) -> Report:
    """Build the report, write it (to ``out_dir`` or a temporary folder) and log every file under
    ``report/`` on the parent run."""
    from mlflow import MlflowClient

    report = build_report(parent_ref, tracking_uri, alpha)
    client = MlflowClient(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        files = write(report, out_dir or tmp)
        for path in files.values():
            client.log_artifact(report.parent_run_id, path, ARTIFACT_DIR)
    if out_dir is None:
        report.files = {}
    return report
