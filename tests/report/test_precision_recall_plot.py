"""The cross-run precision-recall plot (paper Figure 2), in report/: for any set of runs, and at the
end of a sweep when the trials measured both cross-entropies."""
from __future__ import annotations

import json

import pytest

PR_RUNS = {"mle": (3.1, 4.4, 0.05), "tailr": (3.3, 4.0, 0.04), "emo": (3.2, 3.7, 0.03)}


def test_plot_writes_a_png_for_a_few_runs(mlflow_uri, tmp_path):
    from mlflow import MlflowClient

    from emo_ray.report.precision_recall import log_precision_recall_plot, plot_precision_recall, runs_frame

    client = MlflowClient(mlflow_uri)
    exp = client.create_experiment("pr", artifact_location=str(tmp_path / "artifacts"))
    ids = []
    for obj, (recall, precision, std) in PR_RUNS.items():
        rid = client.create_run(exp, tags={"emo_ray.objective": obj}).info.run_id
        client.log_metric(rid, "eval/gen/wikitext-2/recall_ce", recall)
        client.log_metric(rid, "eval/gen/wikitext-2/ancestral/precision_ce_mean", precision)
        client.log_metric(rid, "eval/gen/wikitext-2/ancestral/precision_ce_std", std)
        client.log_metric(rid, "eval/gen/wikitext-2/ancestral/mauve_mean", 0.5)
        ids.append(rid)
    target = client.create_run(exp).info.run_id
    panels = log_precision_recall_plot(ids, target, mlflow_uri)
    assert panels == [("wikitext-2", "ancestral")]
    png = client.download_artifacts(target, "precision_recall/precision_recall.png", str(tmp_path))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    import pandas as pd

    points = pd.read_csv(client.download_artifacts(target, "precision_recall/precision_recall_points.csv", str(tmp_path)))
    assert sorted(points["objective"]) == sorted(PR_RUNS)
    assert dict(zip(points["objective"], points["precision_ce"])) == {o: v[1] for o, v in PR_RUNS.items()}
    with pytest.raises(ValueError, match="generation.precision_recall=true"):
        plot_precision_recall(runs_frame([target], mlflow_uri).assign(objective="x"), str(tmp_path / "none.png"))


def test_the_sweep_report_logs_the_plot_when_children_have_the_scores(mlflow_uri, tmp_path):
    from mlflow import MlflowClient

    from emo_ray.report import report_and_log
    from emo_ray.sweep.spec import Trial
    from tests.report.test_figure1 import child

    client = MlflowClient(mlflow_uri)
    exp = client.create_experiment("agg-pr", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(exp).info.run_id
    for obj in PR_RUNS:
        child(client, exp, parent, Trial("smollm2-135m", obj, {}, 1000, 0), {"eval/icl/avg_accuracy": 0.5})
    for r in client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent}'"):
        obj = json.loads(r.data.tags["emo_ray.trial"])["loss"]
        client.log_metric(r.info.run_id, "eval/gen/wikitext-2/recall_ce", PR_RUNS[obj][0])
        client.log_metric(r.info.run_id, "eval/gen/wikitext-2/ancestral/precision_ce_mean", PR_RUNS[obj][1])
    report_and_log(parent, mlflow_uri)
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/precision_recall.png", "report/precision_recall_points.csv"} <= logged
