"""``emo-ray report`` on a small stored sweep: a local MLflow store with a parent run and child
runs carrying trial records, per-sampling-run metrics and per-item artifacts, as a sweep leaves
them. EMO is planted far better than MLE; TaiLr is an exact copy of MLE (must never be marked);
the pre-trained model draws fresh numbers of MLE's quality (EMO differs from it, MLE does not).
With one training seed the report compares checkpoints and marks nothing; with several it tests
objectives on one value per seed."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from emo_ray.sweep.spec import PRETRAINED, Trial
from emo_ray.sweep.trial import TRIAL_RECORD_TAG
from tests.conftest import fresh_store

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


def _child(client, exp, parent, trial: Trial, *, icl=True, gen=True, human_mauve=None):
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
        if human_mauve is not None:  # the human-vs-human ceiling the evaluation logs per corpus
            metrics["eval/gen/wikitext-2/human_mauve"] = human_mauve
    client.log_batch(rid, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])  # one commit, not ~70
    client.set_terminated(rid, "FINISHED")
    return rid


def stored_sweep(tmp_path, *, seeds=(0,), tokens=(4096,), pretrained=True, icl=True, gen=True, gammas=(None,),
                 human_mauve=None):
    from mlflow import MlflowClient

    uri = fresh_store(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    exp = client.create_experiment("sweeps", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(exp, run_name="demo", tags={"emo_ray.kind": "sweep", "emo_ray.preset": "demo"}).info.run_id
    for tok in tokens:
        for seed in seeds:
            for obj in QUALITY:
                for g in (gammas if obj == "tailr" else (None,)):
                    _child(client, exp, parent, Trial(MODEL, obj, {} if g is None else {"gamma": g}, tok, seed),
                           icl=icl, gen=gen, human_mauve=human_mauve)
    if pretrained:
        _child(client, exp, parent, Trial(MODEL, PRETRAINED, {}, 0, 0), icl=icl, gen=gen, human_mauve=human_mauve)
    client.set_terminated(parent, "FINISHED")
    return uri, parent, client


def _tests(report, table):
    return next(t for t in report.tables if t.name == table).tests


def _md_row(md: str, start: str) -> str:
    return next(line for line in md.splitlines() if line.startswith(start))


def test_one_seed_compares_checkpoints_and_marks_no_objective(tmp_path):
    from emo_ray.report import report_and_log

    uri, parent, client = stored_sweep(tmp_path)
    out = tmp_path / "out"
    report = report_and_log("demo", uri, alpha=0.001, out_dir=str(out))  # by sweep name
    assert report.parent_run_id == parent
    for name, method, n in (("table1_mauve", "Welch", len(SAMPLE_SEEDS)), ("table2_generation", "paired t-test", N_PROMPTS),
                            ("table3_icl", "McNemar", N_ITEMS)):
        tests = _tests(report, name)
        assert (tests["scope"] == "checkpoint").all() and not tests["significant"].any(), name  # one seed: no objective claim
        assert tests["method"].str.contains(method).all() and (tests["n_a"] == n).all(), name
        emo = tests[tests.objective == "emo"]
        assert set(emo.versus) == {"mle", "pre-trained"} and (emo["p_holm"] < 0.001).all(), name
        assert emo["verdict"].str.startswith("checkpoint").all(), name  # the planted gain is seen, as a checkpoint's
        tailr = tests[(tests.objective == "tailr") & (tests.versus == "mle")]
        assert (tailr["p_value"] > 0.999).all() and (tailr["verdict"] == "not significant").all(), name  # the same numbers
        vs_pre = tests[tests.versus == "pre-trained"]
        assert set(vs_pre.objective) == {"mle", "tailr", "emo"}, name  # MLE too: does fine-tuning move it at all?
        assert np.isfinite(vs_pre["mdd"]).all() and vs_pre["p_value"].notna().all(), name
    md = report.markdown
    assert "One training seed" in md and "(n=1)" in md and "compare two checkpoints" in md
    assert "*" not in _md_row(md, "| emo") and "†" not in _md_row(md, "| emo")
    table1 = pd.read_csv(out / "table1_mauve.csv")
    assert set(table1.objective) == {"mle", "tailr", "emo", "pre-trained"}
    assert _md_row(md, "| wikitext-2 / ancestral").split("|")[2].strip() == "pre-trained"  # Table 2 lists it first
    # Figure 1 at one data volume and one model: no fit, and the report says why.
    assert "no power law" in md and "1 distinct x" in md
    table3 = pd.read_csv(out / "table3_icl.csv")
    assert set(table3.objective) == {"mle", "tailr", "emo", "pre-trained"} and set(table3.column) == {*TASKS, "avg"}
    emo_avg = table3[(table3.objective == "emo") & (table3.column == "avg")]["mean"].item()
    assert emo_avg == pytest.approx(client.search_runs([client.get_run(parent).info.experiment_id],
                                    "tags.`emo_ray.trial_id` LIKE 'emo-%'")[0].data.metrics["eval/icl/avg_accuracy"])
    assert (out / "figure1.png").stat().st_size > 1000
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/report.md", "report/table1_mauve.csv", "report/table2_generation.csv", "report/table3_icl.csv",
            "report/comparisons.csv", "report/figure1.png", "report/table1_mauve_variance.csv"} <= logged


SEEDS = (0, 1, 2, 3, 4)


@pytest.fixture(scope="module")
def five_seeds(tmp_path_factory):
    """Five training seeds per objective: a stored sweep the objective-level tests can use."""
    from emo_ray.report.collect import Artifacts, child_runs

    uri, parent, client = stored_sweep(tmp_path_factory.mktemp("five"), seeds=SEEDS)
    return uri, parent, child_runs(parent, uri), Artifacts(client)


def test_several_seeds_test_objectives_on_one_value_per_seed(five_seeds):
    from emo_ray import stats
    from emo_ray.report import build_report

    uri, parent, _, _ = five_seeds
    report = build_report(parent, uri, alpha=0.01)
    for name in ("table1_mauve", "table2_generation", "table3_icl"):
        tests = _tests(report, name)
        assert (tests["scope"] == "objective").all() and (tests["n_a"] == len(SEEDS)).all(), name
        emo, tailr = tests[tests.objective == "emo"], tests[tests.objective == "tailr"]
        assert emo[emo.versus == "mle"]["significant"].all(), name
        assert not tailr["significant"].any() and (tailr[tailr.versus == "mle"]["p_value"] > 0.999).all(), name
        # The MDD printed is the test's own: its se and df, at alpha / m of its table.
        r = tests.iloc[0]
        assert r["mdd"] == pytest.approx(stats.min_detectable_difference(r["se"], r["df"], alpha=0.01 / len(tests)))
    t1 = _tests(report, "table1_mauve")
    pre = t1[t1.versus == "pre-trained"]
    assert (pre["n_b"] == len(SAMPLE_SEEDS)).all() and pre["method"].str.contains("Hsu").all()  # its sampling runs
    assert t1[t1.versus == "mle"]["method"].str.contains("Satterthwaite").all()
    icl_pre = _tests(report, "table3_icl").query("versus == 'pre-trained'")
    assert icl_pre["method"].str.contains("one-sample").all() and (icl_pre["n_b"] == 0).all()  # a fixed score
    frame = next(t for t in report.tables if t.name == "table1_mauve").frame
    assert (frame[frame.objective != "pre-trained"]["n"] == len(SEEDS)).all()  # seeds, not seeds x runs
    assert (frame[frame.objective == "pre-trained"]["n"] == len(SAMPLE_SEEDS)).all()
    # Oracle ppl of a seed: exp(sum NLL / sum tokens) over its generations, then the mean over seeds.
    t2 = next(t for t in report.tables if t.name == "table2_generation").frame
    expected = np.mean([np.exp(_arm("emo", s)[2].mean()) for s in SEEDS])
    assert t2[t2.objective == "emo"]["oracle_ppl_mean"].item() == pytest.approx(expected)
    md = report.markdown
    assert "*" in _md_row(md, "| emo") and "*" not in _md_row(md, "| tailr") and "One training seed" not in md
    assert "Variance between training seeds" in md and "seed share" in md and "Power planning" in md


def test_several_seeds_keep_the_best_gamma(tmp_path):
    from emo_ray.report import build_report

    uri, parent, _ = stored_sweep(tmp_path, seeds=(0, 1), gammas=(0.9, 0.1))
    report = build_report(parent, uri)
    # Both gammas draw identical numbers (a tie): the first set in sorted order is kept and named.
    t3 = next(t for t in report.tables if t.name == "table3_icl").frame
    assert t3[t3.objective == "tailr"]["hparams"].nunique() == 1
    assert "tailr (gamma=" in report.markdown
    t1 = next(t for t in report.tables if t.name == "table1_mauve").frame
    assert (t1[t1.objective != "pre-trained"]["n"] == 2).all()


def test_planted_case_with_mdd_above_headroom_prints_cannot_detect(five_seeds):
    """MLE scores ~0.50 MAUVE; a human-vs-human ceiling of 0.52 leaves 0.02 of headroom, below the
    MDD of TaiLr vs MLE: "cannot detect", never "no difference". With a ceiling of 0.99 the same
    comparison could have seen a gain: "not significant"."""
    from emo_ray.report import render, tables

    _, _, runs, _ = five_seeds
    low = tables.table1_mauve(runs.assign(**{"eval/gen/wikitext-2/human_mauve": 0.52}), alpha=0.001)
    row = low.tests.query("objective == 'tailr' and versus == 'mle'").iloc[0]
    assert row["headroom"] == pytest.approx(0.52 - 0.5, abs=0.01) and row["mdd"] > row["headroom"]
    assert row["verdict"] == "cannot detect (MDD > headroom)"
    md = render._tests_markdown(low.tests)
    assert "cannot detect" in md and "no difference" not in md
    assert any("exceeds the headroom" in n for n in low.notes)  # the paper's +0.10 cannot fit under 0.52
    high = tables.table1_mauve(runs.assign(**{"eval/gen/wikitext-2/human_mauve": 0.99}), alpha=0.001)
    row = high.tests.query("objective == 'tailr' and versus == 'mle'").iloc[0]
    assert row["mdd"] < row["headroom"] and row["verdict"] == "not significant"
    unknown = tables.table1_mauve(runs, alpha=0.001)
    assert unknown.tests["headroom"].isna().all() and any("headroom unknown" in n for n in unknown.notes)
    assert "| unknown |" in render._tests_markdown(unknown.tests)


def test_power_plan_sizes_the_sweep_and_says_when_the_alpha_is_out_of_reach(five_seeds):
    from emo_ray import stats
    from emo_ray.report import tables

    _, _, runs, _ = five_seeds
    t = tables.table1_mauve(runs, alpha=0.001, delta=0.01)
    plan = t.plan.iloc[0]
    n_tests = int(t.tests["p_value"].notna().sum())
    assert plan["alpha_test"] == pytest.approx(0.001 / n_tests)
    assert plan["seeds_K5"] == stats.seeds_needed(0.01, plan["between"], plan["within"], 5, plan["alpha_test"])
    assert plan["seeds_K20"] > 5 and any("cannot be earned here" in n for n in t.notes)
    easy = tables.table1_mauve(runs, alpha=0.001, delta=0.3)  # a gain this size needs few seeds
    assert easy.plan.iloc[0]["seeds_K5"] <= 5 and not any("cannot be earned" in n for n in easy.notes)
    share = t.variance.set_index("arm")["seed_share"]
    assert 0 <= share["mle"] < 0.5  # the store plants no seed effect in MAUVE


def test_missing_pieces_are_stated_not_invented(tmp_path):
    from emo_ray.report import build_report

    uri, parent, _ = stored_sweep(tmp_path, pretrained=False, icl=False, gen=True)
    md = build_report(parent, uri).markdown
    assert "no ICL" in md.replace("No child run logged ICL", "no ICL")
    assert "### MAUVE" in md and "### average ICL accuracy" not in md  # Figure 1 draws what was measured
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

    uri = fresh_store(tmp_path / "mlflow.db")  # report reads an existing store only (issue 25.4)
    assert main(["report", "any", "--tracking-uri", uri, "--alpha", "1.5"]) == 2
    assert "alpha must be in (0, 1), got 1.5" in capsys.readouterr().err

    def broken(*args, **kwargs):  # a ValueError from inside the statistics is a bug, not a usage error
        raise ValueError("math domain error")

    monkeypatch.setattr(emo_ray.report, "report_and_log", broken)
    with pytest.raises(ValueError, match="math domain error"):
        main(["report", "any", "--tracking-uri", uri])




def test_figure_fits_one_point_per_seed_with_bootstrap_intervals():
    """Figure 1's fit takes the seeds as points (3 sizes x 2 seeds = 6 points), not the 3 means, and
    its intervals come from resampling the seeds within each size."""
    from emo_ray import stats
    from emo_ray.report import figure, scaling

    sizes, acc = [1e8, 3e8, 1e9], {1e8: (0.50, 0.52), 3e8: (0.55, 0.56), 1e9: (0.60, 0.63)}
    runs = pd.DataFrame([{"run_id": f"{n}-{a}", "objective": "mle", "domain": "", "model": f"m{n:g}", "n_params": n,
                          "tokens": 4096, "hparams": "", "seed": i, "pretrained": False, "eval/icl/avg_accuracy": a}
                         for n in sizes for i, a in enumerate(acc[n])])
    runs = scaling.headline_values(runs)
    rows, notes = scaling.fits(scaling.kept_runs(runs, scaling.ICL), scaling.ICL)
    size_fit = rows[rows.axis == "n_params"].iloc[0]
    expected = stats.bootstrap_power_law(np.repeat(sizes, 2), [a for n in sizes for a in acc[n]])
    assert size_fit["points"] == 6 and (size_fit["b_low"], size_fit["b_high"]) == pytest.approx((expected.b_low, expected.b_high))
    assert size_fit["interval"].startswith("bootstrap")
    assert any("fine-tuning tokens" in n and "1 distinct x" in n for n in notes)
    assert "points (seeds)" in figure.fits_markdown(rows)
