"""Figure 1 on stored sweeps (a real MLflow sqlite store in tmp, child runs as sweep trials leave
them): a planted power law ``y = a x^b`` with seed noise is recovered within its interval; two
distinct x give no fit and a stated reason (report and console alike); the parent run carries one
Figure 1; the trials carry the headline metrics and the experiment the shared runs-table view."""
import io
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from emo_ray.sweep.spec import PRETRAINED, Trial
from emo_ray.sweep.trial import TRIAL_RECORD_TAG
from tests.conftest import fresh_store

VOLUMES = (4096, 16384, 65536, 262144)
PLANTED_B = {"mle": -0.05, "emo": -0.08}
A = 4.0


def child(client, exp, parent, trial: Trial, metrics: dict, n_params: float = 135e6) -> str:
    from mlflow.entities import Metric

    rid = client.create_run(exp, run_name=trial.key, tags={
        "mlflow.parentRunId": parent, "emo_ray.trial_id": trial.key, TRIAL_RECORD_TAG: json.dumps(trial.to_dict()),
        "emo_ray.objective": trial.loss}).info.run_id
    client.log_param(rid, "model.n_params", int(n_params))
    client.log_batch(rid, metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()])
    client.set_terminated(rid, "FINISHED")
    return rid


def planted_sweep(tmp_path, volumes=VOLUMES, seeds=(0, 1, 2), noise=0.01):
    """Validation loss ``A * tokens**b`` per objective times exp(N(0, noise)) per seed; average ICL
    accuracy 0.4 (MLE) / 0.46 (EMO) plus seed noise; a pre-trained evaluation at x = 0."""
    from mlflow import MlflowClient

    uri = fresh_store(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    exp = client.create_experiment("figure1", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(exp, run_name="figure1", tags={"emo_ray.kind": "sweep", "emo_ray.preset": "f1"}).info.run_id
    rng = np.random.default_rng(2310)
    for obj, b in PLANTED_B.items():
        for tokens in volumes:
            for seed in seeds:
                child(client, exp, parent, Trial("smollm2-135m", obj, {}, tokens, seed),
                      {"val/loss": A * tokens ** b * np.exp(rng.normal(0, noise)),
                       "eval/icl/avg_accuracy": (0.46 if obj == "emo" else 0.40) + rng.normal(0, 0.01)})
    child(client, exp, parent, Trial("smollm2-135m", PRETRAINED, {}, 0, 0), {"val/loss": 4.5, "eval/icl/avg_accuracy": 0.35})
    return uri, parent, client


def test_planted_power_law_is_recovered_within_its_bootstrap_interval(tmp_path):
    from emo_ray.report import report_and_log

    uri, parent, client = planted_sweep(tmp_path)
    report = report_and_log(parent, uri, alpha=0.05, out_dir=str(tmp_path / "out"))
    fits = report.scaling.fits
    loss = fits[(fits.metric == "val_loss") & (fits.axis == "tokens")].set_index("objective")
    assert set(loss.index) == {"mle", "emo"}
    for obj, b in PLANTED_B.items():
        r = loss.loc[obj]
        assert r["b_low"] <= b <= r["b_high"] and r["b_high"] < 0, (obj, r.to_dict())  # covers b, excludes 0
        assert r["a_low"] <= A <= r["a_high"] and r["points"] == 3 * len(VOLUMES)
        assert r["interval"].startswith("bootstrap") and r["b_t_low"] <= b <= r["b_t_high"]
    # The pre-trained model is the x = 0 reference: a point of the table, never of the fit.
    pts = report.scaling.points
    pre = pts[(pts.metric == "val_loss") & (pts.objective == "pre-trained")]
    assert list(pre["tokens"]) == [0] and pre["mean"].item() == pytest.approx(4.5)
    # Per data volume: EMO minus MLE with its interval, Holm p, and a verdict.
    d = report.scaling.differences
    icl = d[d.column == "icl_avg_accuracy"].sort_values("tokens")
    assert list(icl["tokens"]) == list(VOLUMES) and (icl["objective"] == "emo").all()
    assert (icl["low"] > 0).all() and (icl["p_holm"] < 0.05).all() and icl["verdict"].str.startswith("objective higher").all()
    assert icl["headroom"].to_numpy() == pytest.approx(np.full(len(VOLUMES), 0.60), abs=0.02)  # 1 - MLE's accuracy
    md = report.markdown
    assert "### validation loss (`headline/val_loss`)" in md and "objective − mle" in md
    assert not [n for n in report.scaling.notes if "fine-tuning tokens" in n]  # every data-axis curve has its fit
    # Exactly one Figure 1 on the parent run, under report/; the fits as parent metrics.
    figures = [a.path for a in client.list_artifacts(parent, "report") if "figure" in a.path and a.path.endswith(".png")]
    assert figures == ["report/figure1.png"]
    assert {a.path for a in client.list_artifacts(parent)} == {"report"}
    parent_metrics = client.get_run(parent).data.metrics
    assert parent_metrics["figure1/val_loss/tokens/emo/b"] == pytest.approx(loss.loc["emo", "b"])
    # A second report (a resumed sweep's end) replaces the figure, it does not add one.
    report_and_log(parent, uri)
    assert [a.path for a in client.list_artifacts(parent, "report") if a.path.endswith(".png")] == ["report/figure1.png"]


def test_trials_carry_headline_metrics_and_the_experiment_a_shared_view(tmp_path):
    from emo_ray.report import mlflow_view, report_and_log

    uri, parent, client = planted_sweep(tmp_path, volumes=VOLUMES[:2], seeds=(0, 1))
    report = report_and_log(parent, uri)
    exp = client.get_run(parent).info.experiment_id
    trials = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent}'")
    for r in trials:
        m = r.data.metrics
        shown = mlflow_view.display_value
        assert m["headline/val_loss"] == shown(m["val/loss"]) and m["headline/icl_avg_accuracy"] == shown(m["eval/icl/avg_accuracy"])
        assert m["headline/val_loss"] == pytest.approx(m["val/loss"], rel=1e-3)
        assert "headline/mauve" not in m  # not measured: no column value invented
    key = mlflow_view.share_key(parent)
    assert report.view_url_query == f"compareRunsMode=TABLE&viewStateShareKey={key}"
    state = json.loads(client.get_experiment(exp).tags[mlflow_view.SHARED_VIEW_TAG + key])
    assert state["searchFilter"] == f"tags.`mlflow.parentRunId` = '{parent}'"
    assert state["selectedColumns"][:3] == ["metrics.`headline/val_loss`", "metrics.`headline/mauve`",
                                             "metrics.`headline/icl_avg_accuracy`"]
    assert state["orderByKey"] == "tags.`mlflow.runName`" and state["columnOrder"][0] == "attributes.`Run Name`"
    # The view's filter is valid MLflow search syntax and selects exactly the trials.
    assert len(client.search_runs([exp], state["searchFilter"])) == len(trials) == 2 * 2 * 2 + 1


def test_two_distinct_volumes_give_no_fit_and_the_reason_in_report_and_console(tmp_path):
    from emo_ray import console
    from emo_ray.report import sweep_end

    uri, parent, client = planted_sweep(tmp_path, volumes=VOLUMES[:2])
    summary = sweep_end(parent, uri)
    agg = summary["aggregate"]
    assert not [f for f in agg["fits"] if f["axis"] == "tokens"]
    assert any("no power law for validation loss, mle vs fine-tuning tokens: 2 distinct x value(s); a power law "
               "needs >= 3" == n for n in agg["notes"]), agg["notes"]
    out = io.StringIO()
    sweep = SimpleNamespace(tracking=SimpleNamespace(tracking_uri=uri))
    console.print_sweep_summary({"parent_run_id": parent, "trials": 13, "failed": 0, **summary}, sweep, stream=out)
    text = out.getvalue()
    assert "nan" not in text and "2 distinct x value(s)" in text and "Sweep finished" in text
    assert f"viewStateShareKey=emo-ray-sweep-{parent}" in text  # the printed link opens the shared view
    files = [a.path for a in client.list_artifacts(parent, "report")]
    assert "report/figure1.png" in files  # the curves are drawn even without a fit
    # Ctrl-C ends the Tune run with trials left: stopped, not finished, and how to go on.
    out = io.StringIO()
    console.print_sweep_summary({"parent_run_id": parent, "trials": 25, "finished": 8, "failed": 0,
                                 "sweep": "figure1-cpu", **summary}, sweep, stream=out)
    text = out.getvalue()
    assert "Sweep stopped" in text and "Sweep finished" not in text
    assert "8 of 25 finished (0 failed)" in text and "emo-ray sweep --resume figure1-cpu" in text


def test_a_sweep_without_finished_trials_reports_why(tmp_path):
    from mlflow import MlflowClient

    from emo_ray.report import sweep_end

    uri = fresh_store(tmp_path / "m.db")
    client = MlflowClient(uri)
    parent = client.create_run(client.create_experiment("e", artifact_location=str(tmp_path / "artifacts"))).info.run_id
    out = sweep_end(parent, uri)["aggregate"]
    assert out["fits"] == [] and out["notes"][0].startswith("no report:") and "no finished child run" in out["notes"][0]


def test_best_set_per_cell_registry_outside_models_and_domains(tmp_path):
    """The one best-per-cell rule (by the metric's seed mean, any hyperparameter set); a model the
    registry does not know sits on the size curve by its counted parameters; each domain gets its
    own curve; the pre-trained runs stay off the curves."""
    from mlflow import MlflowClient

    from emo_ray.report import scaling
    from emo_ray.report.collect import child_runs

    uri = fresh_store(tmp_path / "m.db")
    client = MlflowClient(uri)
    exp = client.create_experiment("e", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(exp).info.run_id
    for hp, acc in (({"gamma": 0.9, "min_weight": 0.1}, 0.6), ({"gamma": 0.9, "min_weight": 0.0}, 0.7)):
        for seed in (0, 1):
            child(client, exp, parent, Trial("smollm2-135m", "tailr", hp, 1000, seed), {"eval/icl/avg_accuracy": acc + 0.01 * seed})
    for model, n in (("my-org/custom-350m", 3.5e8), ("/models/local-1b", 1.0e9)):
        for seed in (0, 1):
            child(client, exp, parent, Trial(model, "tailr", {"gamma": 0.9, "min_weight": 0.0}, 1000, seed),
                  {"eval/icl/avg_accuracy": 0.7 * (n / 1.35e8) ** 0.1 + 0.01 * seed}, n_params=n)
    for domain in ("wikitext-2", "webtext"):
        for tokens in (1000, 2000, 4000):
            child(client, exp, parent, Trial("smollm2-135m", "mle", {}, tokens, 0, domain), {"val/loss": 3 * tokens ** -0.05})
        child(client, exp, parent, Trial("smollm2-135m", PRETRAINED, {}, 0, 0, domain), {"val/loss": 9.0})
    s = scaling.build(child_runs(parent, uri), alpha=0.05)
    icl = s.points[s.points.metric == "icl_avg_accuracy"]
    assert set(icl["hparams"]) == {"gamma=0.9,min_weight=0.0"}
    assert icl[icl.n_params == 1.35e8]["mean"].item() == pytest.approx(0.705)
    size = s.fits[(s.fits.metric == "icl_avg_accuracy") & (s.fits.axis == "n_params")]
    assert size["b"].item() == pytest.approx(0.1, abs=0.01) and sorted(icl["n_params"]) == [1.35e8, 3.5e8, 1.0e9]
    loss = s.fits[(s.fits.metric == "val_loss") & (s.fits.axis == "tokens")]
    assert set(loss["domain"]) == {"wikitext-2", "webtext"} and (loss["points"] == 3).all()
    assert any("1 point at x = 1000, 2000, 4000" in n for n in s.notes)  # one seed per x: t intervals, and the note says so
    assert set(loss["interval"]) == {"t (n-2 df)"} and loss["b"].to_numpy() == pytest.approx([-0.05, -0.05])


def test_axis_ticks_name_the_swept_values():
    from emo_ray.report.figure import human

    assert [human(x) for x in (135e6, 270e6, 1.3e9, 13e9, 2048, 262144, 512)] == \
        ["135M", "270M", "1.3B", "13B", "2.05k", "262k", "512"]


def test_points_markdown_lists_the_pretrained_reference_first():
    from emo_ray.report import figure

    pts = pd.DataFrame([{"objective": o, "domain": "", "model": "m", "n_params": 1.0, "tokens": t, "hparams": "",
                         "mean": 1.0, "low": 0.9, "high": 1.1, "n": 3} for o, t in (("mle", 4096), ("pre-trained", 0))])
    rows = figure.points_markdown(pts).splitlines()
    assert rows[2].startswith("| pre-trained | m | 0 |")
