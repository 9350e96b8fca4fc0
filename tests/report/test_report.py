"""``emo-ray report`` on a small stored sweep: a local MLflow store with a parent run and child
runs carrying trial records, per-sampling-run metrics and per-item artifacts, as a sweep leaves
them. EMO is planted far better than MLE; TaiLr is an exact copy of MLE (must never be marked);
the pre-trained model draws fresh numbers of MLE's quality (EMO differs from it, MLE does not)."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from emo_ray.sweep.spec import PRETRAINED, Trial
from emo_ray.sweep.trial import TRIAL_RECORD_TAG

MODEL = "smollm2-135m"
TASKS = ("sst2", "trec")
N_ITEMS, N_PROMPTS, SAMPLE_SEEDS = 120, 30, range(16)
# Per-objective quality: ICL correctness rate, MAUVE level, oracle NLL per token.
QUALITY = {"mle": (0.5, 0.5, 3.0), "tailr": (0.5, 0.5, 3.0), "emo": (0.95, 0.9, 2.0)}


def _arm(objective: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-item correctness, per-sampling-run MAUVE, per-prompt NLL. TaiLr draws MLE's numbers."""
    src = "mle" if objective == "tailr" else objective
    rng = np.random.default_rng([list(QUALITY).index(src), seed])
    acc, mauve, nll = QUALITY[src]
    correct = rng.random((len(TASKS), N_ITEMS)) < acc
    mauves = np.clip(mauve + 0.02 * rng.standard_normal(len(SAMPLE_SEEDS)), 0.01, 1)
    nlls = nll + 0.1 * rng.standard_normal(N_PROMPTS)
    return correct, mauves, nlls


def _child(client, exp, parent, trial: Trial, *, icl=True, gen=True):
    from mlflow.entities import Metric

    metrics = {}
    rid = client.create_run(exp, run_name=trial.key, tags={
        "mlflow.parentRunId": parent, "emo_ray.trial_id": trial.key, TRIAL_RECORD_TAG: json.dumps(trial.to_dict())}).info.run_id
    client.log_param(rid, "model.n_params", 135_000_000)
    correct, mauves, nlls = _arm("mle" if trial.pretrained else trial.loss, trial.seed + (100 if trial.pretrained else 0))
    if icl:
        for t, task in enumerate(TASKS):
            metrics[f"eval/icl/{task}/accuracy"] = float(correct[t].mean())
            client.log_table(rid, pd.DataFrame({"item": range(N_ITEMS), "correct": correct[t]}), f"icl/{task}.json")
        metrics["eval/icl/avg_accuracy"] = float(correct.mean())
    if gen:
        rows = []
        for s, m in zip(SAMPLE_SEEDS, mauves):
            for name, v in (("mauve", m), ("oracle_ppl", float(np.exp(nlls.mean()))), ("rouge1", 0.3), ("rougeL", 0.2)):
                metrics[f"eval/gen/wikitext-2/ancestral/seed{s}/{name}"] = float(v)
            rows += [{"prompt_id": p, "seed": s, "decoder": "ancestral", "oracle_nll_sum": float(nlls[p] * 10),
                      "oracle_tokens": 10} for p in range(N_PROMPTS)]
        client.log_table(rid, pd.DataFrame(rows), "generations/wikitext-2.json")
    client.log_batch(rid, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])  # one commit, not ~70
    client.set_terminated(rid, "FINISHED")
    return rid


def stored_sweep(tmp_path, *, seeds=(0,), tokens=(4096,), pretrained=True, icl=True, gen=True, gammas=(None,)):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("sweeps", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(exp, run_name="demo", tags={"emo_ray.kind": "sweep", "emo_ray.preset": "demo"}).info.run_id
    for tok in tokens:
        for seed in seeds:
            for obj in QUALITY:
                for g in (gammas if obj == "tailr" else (None,)):
                    _child(client, exp, parent, Trial(MODEL, obj, {} if g is None else {"gamma": g}, tok, seed),
                           icl=icl, gen=gen)
    if pretrained:
        _child(client, exp, parent, Trial(MODEL, PRETRAINED, {}, 0, 0), icl=icl, gen=gen)
    client.set_terminated(parent, "FINISHED")
    return uri, parent, client


def _tests(report, table):
    return next(t for t in report.tables if t.name == table).tests


def test_planted_difference_is_marked_identical_arms_are_not(tmp_path):
    from emo_ray.report import report_and_log

    uri, parent, client = stored_sweep(tmp_path)
    out = tmp_path / "out"
    report = report_and_log("demo", uri, alpha=0.001, out_dir=str(out))  # by sweep name
    assert report.parent_run_id == parent
    for name in ("table1_mauve", "table2_generation", "table3_icl"):
        tests = _tests(report, name)
        emo, tailr = tests[tests.objective == "emo"], tests[tests.objective == "tailr"]
        assert len(emo) and emo[emo.versus == "mle"]["significant"].all(), name
        assert not tailr[tailr.versus == "mle"]["significant"].any(), name
        assert (tailr[tailr.versus == "mle"]["p_value"] > 0.5).all()  # the same numbers: no evidence at all
        vs_pre = tests[tests.versus == "pre-trained"]
        assert set(vs_pre.objective) == {"mle", "tailr", "emo"}, name  # MLE too: does fine-tuning move it at all?
        assert vs_pre[vs_pre.objective == "emo"]["significant"].all(), name
        assert not vs_pre[vs_pre.objective != "emo"]["significant"].any(), name
        assert np.isfinite(vs_pre["mdd"]).all() and vs_pre["p_value"].notna().all(), name
    gen_pre = _tests(report, "table1_mauve").query("versus == 'pre-trained'")
    assert gen_pre["method"].str.contains("two-sample permutation").all()  # nothing pairs a pre-trained run
    assert (gen_pre["n"] == 2 * len(SAMPLE_SEEDS)).all()
    icl = _tests(report, "table3_icl")
    assert icl["method"].str.contains("McNemar").all()  # one seed: exact test on items
    assert (icl[icl.objective == "emo"]["versus"] == "pre-trained").any()
    assert np.isfinite(icl[icl.objective == "emo"]["mdd"]).all()
    md = report.markdown
    assert "Table 1" in md and "Table 2" in md and "Table 3" in md and "pre-trained" in md
    emo_row = next(l for l in md.splitlines() if l.startswith("| emo"))
    tailr_row = next(l for l in md.splitlines() if l.startswith("| tailr"))
    assert "*" in emo_row and "†" in emo_row and "*" not in tailr_row and "†" not in tailr_row
    table1 = pd.read_csv(out / "table1_mauve.csv")
    assert set(table1.objective) == {"mle", "tailr", "emo", "pre-trained"}
    assert next(l for l in md.splitlines() if l.startswith("| ")  and "wikitext-2" in l and "ancestral" in l
                ).split("|")[2].strip() == "pre-trained"  # Table 2 lists the pre-trained model first
    assert "One training seed" in md and "(n=1)" in md
    # Figure 1 at one data volume and one model: no fit, and the report says why.
    assert "no power law" in md and "1 distinct x" in md
    table3 = pd.read_csv(out / "table3_icl.csv")
    assert set(table3.objective) == {"mle", "tailr", "emo", "pre-trained"}
    assert set(table3.column) == {*TASKS, "avg"}
    emo_avg = table3[(table3.objective == "emo") & (table3.column == "avg")]["mean"].item()
    assert emo_avg == pytest.approx(client.search_runs([client.get_run(parent).info.experiment_id],
                                    "tags.`emo_ray.trial_id` LIKE 'emo-%'")[0].data.metrics["eval/icl/avg_accuracy"])
    assert (out / "figure1_icl_scaling.png").stat().st_size > 1000
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/report.md", "report/table1_mauve.csv", "report/table2_generation.csv", "report/table3_icl.csv",
            "report/comparisons.csv", "report/figure1_icl_scaling.png"} <= logged


def test_several_seeds_use_the_bootstrap_and_keep_the_best_gamma(tmp_path):
    from emo_ray.report import build_report

    uri, parent, _ = stored_sweep(tmp_path, seeds=(0, 1), gammas=(0.9, 0.1))
    report = build_report(parent, uri)
    icl = _tests(report, "table3_icl")
    assert icl["method"].str.contains("bootstrap").all()
    emo = icl[(icl.objective == "emo") & (icl.versus == "mle")]
    assert (emo["p_value"] < 0.001).all() and (emo["diff"] > 0.3).all()
    tailr = icl[(icl.objective == "tailr") & (icl.versus == "mle")]
    assert (tailr["p_value"] > 0.5).all()
    # Both gammas draw identical numbers (a tie): the first set in sorted order is kept and named.
    t3 = next(t for t in report.tables if t.name == "table3_icl").frame
    assert t3[t3.objective == "tailr"]["hparams"].nunique() == 1
    assert "tailr (gamma=" in report.markdown
    t1 = next(t for t in report.tables if t.name == "table1_mauve").frame
    tuned = t1.objective != "pre-trained"
    assert (t1[tuned]["n"] == 2 * len(SAMPLE_SEEDS)).all()  # seeds x sampling runs
    assert (t1[~tuned]["n"] == len(SAMPLE_SEEDS)).all()  # one pre-trained evaluation
    assert "One training seed" not in report.markdown
    # 10 ICL comparisons: with 200k sign flips (p floor ~1e-5) Holm still marks the planted gain at
    # p < 0.001 (with the function's default 10k it could not), and identical arms stay unmarked.
    assert emo["significant"].all() and not tailr["significant"].any()
    assert "resolution:" not in report.markdown


def test_missing_pieces_are_stated_not_invented(tmp_path):
    from emo_ray.report import build_report

    uri, parent, _ = stored_sweep(tmp_path, pretrained=False, icl=False, gen=True)
    md = build_report(parent, uri).markdown
    assert "no ICL" in md.replace("No child run logged ICL", "no ICL") and "no figure points" in md
    uri2, parent2, _ = stored_sweep(tmp_path / "b", pretrained=False, icl=True, gen=False)
    md2 = build_report(parent2, uri2).markdown
    assert "ran no generation evaluation" in md2 and "no pre-trained run" in md2
    assert "no pre-trained generation scores" in md
    assert "pre-trained |" not in md2 and "| pre-trained" not in md2


def test_cli_prints_the_report_and_answers_an_unknown_sweep_with_exit_2(tmp_path, capsys):
    from emo_ray.cli import main

    uri, parent, client = stored_sweep(tmp_path, icl=False, gen=True, pretrained=False)
    assert main(["report", parent, "--tracking-uri", uri, "--alpha", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "Table 1: MAUVE" in out and "p < 0.01" in out
    assert any(a.path == "report/report.md" for a in client.list_artifacts(parent, "report"))
    assert main(["report", "no-such-sweep", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert "neither a run id nor the name of a sweep" in err and len(err.strip().splitlines()) == 1


def test_cli_turns_report_errors_into_usage_errors_but_keeps_a_bugs_traceback(tmp_path, capsys, monkeypatch):
    import emo_ray.report
    from emo_ray.cli import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["report", "any", "--tracking-uri", uri, "--alpha", "1.5"]) == 2
    assert "alpha must be in (0, 1), got 1.5" in capsys.readouterr().err

    def broken(*args, **kwargs):  # a ValueError from inside the statistics is a bug, not a usage error
        raise ValueError("math domain error")

    monkeypatch.setattr(emo_ray.report, "report_and_log", broken)
    with pytest.raises(ValueError, match="math domain error"):
        main(["report", "any", "--tracking-uri", uri])


def test_an_accuracy_mdd_above_one_reads_none():
    from emo_ray.report import render, tables

    assert math.isinf(tables.accuracy_mdd(np.array([1.0, 0.0, -1.0, 0.5]), 0.001))  # 4 items: nothing detectable
    many = np.tile([0.0, 1.0, 0.0, -1.0, 0.0], 400)
    assert 0 < tables.accuracy_mdd(many, 0.001) < 0.2
    row = dict(objective="emo", column="sst2", versus="MLE", diff=0.1, p_value=0.5, p_holm=1.0, significant=False,
               n=4, method="paired bootstrap", domain="", model="m", tokens=0)
    md = render._tests_markdown(pd.DataFrame([{**row, "mdd": math.inf}, {**row, "mdd": math.nan}]), 0.001)
    assert "| none |" in md and "| — |" in md


def test_a_two_sample_test_at_its_floor_is_explained_when_holm_leaves_it_unmarked():
    from emo_ray.report import tables

    # 15 fine-tuned runs all above 5 pre-trained ones: the exact test's smallest p, 2 / C(20, 5).
    tuned, pre = pd.DataFrame({"value": np.linspace(0.97, 0.99, 15)}), pd.DataFrame({"value": np.linspace(0.90, 0.94, 5)})
    t, why, mdd = tables.pretrained_runs_test(tuned, pre, alpha=0.001)
    assert t.p_value == pytest.approx(2 / 15_504) and "at its floor 2/15,504" in t.method and not why
    cell = {"domain": "webtext", "model": MODEL, "tokens": 4096, "objective": "emo"}
    rows = [tables._test_row("table1", cell, "webtext", tables.PRETRAINED_ROW, t, why, mdd)] * 14
    notes = tables._test_notes(tables._holm_marks(pd.DataFrame(rows), 0.001), 0.001)
    assert any("14 two-sample comparison(s) at the smallest p" in n and "Holm over 14" in n for n in notes)
    one = tables._holm_marks(pd.DataFrame(rows[:1]), 0.001)
    assert one["significant"].all() and not any("smallest p" in n for n in tables._test_notes(one, 0.001))
