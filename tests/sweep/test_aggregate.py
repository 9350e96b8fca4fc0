"""Aggregation on MLflow child runs with a known power law: the fit must recover it."""
import math

import numpy as np
import pytest

from emo_ray.sweep.aggregate import aggregate, aggregate_and_log, collect, fit_power_law, human, short_name


def test_power_law_fit_recovers_parameters():
    x = np.array([1e8, 3e8, 1e9, 1e10])
    f = fit_power_law(x, 2.0 * x**0.05)
    assert f["a"] == pytest.approx(2.0, rel=1e-9) and f["b"] == pytest.approx(0.05, rel=1e-9)
    assert math.isnan(fit_power_law(np.array([5.0]), np.array([1.0]))["b"])


MAUVE = "gen/wikitext-2/ancestral/mauve_mean"


def log_child(client, exp, parent, *, model, objective, gamma, tokens, seed, acc, mauve=None):
    run = client.create_run(exp, tags={"mlflow.parentRunId": parent, "emo_ray.trial_id": f"{model}{objective}{gamma}{tokens}{seed}"})
    rid = run.info.run_id
    for k, v in {"model.name": model, "train.loss": objective, "data.max_train_tokens": tokens, "train.seed": seed,
                 "train.loss_kwargs": "{}" if gamma is None else f"{{'gamma': {gamma}}}"}.items():
        client.log_param(rid, k, v)
    client.log_metric(rid, "icl/avg_accuracy", acc)
    if mauve is not None:
        client.log_metric(rid, MAUVE, mauve)
    client.set_terminated(rid, "FINISHED")


def test_best_gamma_seed_spread_and_logged_artifacts(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("agg")
    parent = client.create_run(exp).info.run_id
    sizes = {"smollm2-135m": 135e6, "gemma3-270m": 270e6}
    for model, n in sizes.items():
        for tokens in (1000, 4000):
            for seed in (0, 1):
                noise = 0.01 * (seed - 0.5)
                log_child(client, exp, parent, model=model, objective="mle", gamma=None, tokens=tokens, seed=seed,
                          acc=0.5 * (n / 1e8) ** 0.1 * (tokens / 1e3) ** 0.02 + noise,
                          mauve=0.3 * (n / 1e8) ** 0.2 * (tokens / 1e3) ** 0.05)
                for gamma, bonus in ((0.9, 0.0), (0.1, 0.03)):  # gamma 0.1 is the better one
                    log_child(client, exp, parent, model=model, objective="mixce", gamma=gamma, tokens=tokens, seed=seed,
                              acc=0.5 * (n / 1e8) ** 0.1 * (tokens / 1e3) ** 0.02 + bonus + noise)
    df = collect(parent, uri)
    assert len(df) == 2 * 2 * 2 * 3
    best, fits, metric = aggregate(df, "icl/avg_accuracy")
    assert metric == "icl/avg_accuracy"
    assert set(best[best.objective == "mixce"].gamma) == {0.1}
    assert (best["count"] == 2).all() and (best["std"] > 0).all()
    assert fits[("n_params", "mle")]["b"] == pytest.approx(0.1, rel=1e-3)
    out = aggregate_and_log(parent, uri, "icl/avg_accuracy")
    arts = {a.path for a in client.list_artifacts(parent, "scaling_law")}
    assert {"scaling_law/scaling_law.png", "scaling_law/scaling_law_points.csv", "scaling_law/power_law_fits.csv"} <= arts
    assert client.get_run(parent).data.metrics["powerlaw/n_params/mle/b"] == pytest.approx(0.1, rel=1e-3)
    assert out["metric"] == "icl/avg_accuracy"
    # MAUVE gets its own row and fits (only mle logged it here), qualified by the metric name.
    assert [r["objective"] for r in out["secondary"][MAUVE] if r["axis"] == "n_params"] == ["mle"]
    assert client.get_run(parent).data.metrics[f"powerlaw/{MAUVE}/n_params/mle/b"] == pytest.approx(0.2, rel=1e-6)
    import pandas as pd

    points = pd.read_csv(client.download_artifacts(parent, "scaling_law/scaling_law_points.csv", str(tmp_path)))
    assert set(points["metric"]) == {"icl/avg_accuracy", MAUVE}
    assert len(points[points.metric == MAUVE]) == 2 * 2  # mle only: 2 models x 2 data volumes


def test_without_generation_scores_the_figure_has_one_row(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("agg1")
    parent = client.create_run(exp).info.run_id
    for model in ("smollm2-135m", "gemma3-270m"):
        log_child(client, exp, parent, model=model, objective="emo", gamma=None, tokens=1000, seed=0, acc=0.6)
    out = aggregate_and_log(parent, uri, "icl/avg_accuracy")
    assert out["secondary"] == {}


def test_no_children_is_a_clear_error(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    parent = client.create_run(client.create_experiment("e")).info.run_id
    with pytest.raises(ValueError, match="no finished child runs"):
        aggregate(collect(parent, uri), "icl/avg_accuracy")


def test_figure_titles_name_mauve_by_corpus_and_decoder():
    assert short_name(MAUVE) == "MAUVE wikitext-2 (ancestral)"
    assert short_name("icl/avg_accuracy") == "icl/avg_accuracy"


def test_axis_ticks_name_the_swept_values():
    assert [human(x) for x in (135e6, 270e6, 1.3e9, 13e9, 2048, 2_500_000)] == \
        ["135M", "270M", "1.3B", "13B", "2,048", "2.5M"]
