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


MAUVE = "eval/gen/wikitext-2/ancestral/mauve_mean"
ICL = "eval/icl/avg_accuracy"
SIZES = {"smollm2-135m": 135e6, "gemma3-270m": 270e6}


def log_child(client, exp, parent, *, model, objective, gamma, tokens, seed, acc, mauve=None, n_params=None):
    """A finished child run as a sweep trial leaves it: the typed trial record as a tag, the
    counted parameters as a param, the scores as metrics."""
    import json

    from emo_ray.sweep.spec import Trial
    from emo_ray.sweep.trial import TRIAL_RECORD_TAG

    trial = Trial(model, objective, {} if gamma is None else {"gamma": gamma}, tokens, seed)
    run = client.create_run(exp, tags={"mlflow.parentRunId": parent, "emo_ray.trial_id": trial.key,
                                       TRIAL_RECORD_TAG: json.dumps(trial.to_dict())})
    rid = run.info.run_id
    client.log_param(rid, "model.n_params", int(n_params or SIZES[model]))
    client.log_metric(rid, ICL, acc)
    if mauve is not None:
        client.log_metric(rid, MAUVE, mauve)
    client.set_terminated(rid, "FINISHED")


def test_best_gamma_seed_spread_and_logged_artifacts(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("agg")
    parent = client.create_run(exp).info.run_id
    for model, n in SIZES.items():
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
    best, fits, metric = aggregate(df, ICL)
    assert metric == ICL
    assert set(best[best.objective == "mixce"].hparams) == {"gamma=0.1"}
    assert (best["count"] == 2).all() and (best["std"] > 0).all()
    assert fits[("n_params", "mle")]["b"] == pytest.approx(0.1, rel=1e-3)
    out = aggregate_and_log(parent, uri, ICL)
    arts = {a.path for a in client.list_artifacts(parent, "scaling_law")}
    assert {"scaling_law/scaling_law.png", "scaling_law/scaling_law_points.csv", "scaling_law/power_law_fits.csv"} <= arts
    assert client.get_run(parent).data.metrics["powerlaw/n_params/mle/b"] == pytest.approx(0.1, rel=1e-3)
    assert out["metric"] == ICL
    # MAUVE gets its own row and fits (only mle logged it here), qualified by the metric name.
    assert [r["objective"] for r in out["secondary"][MAUVE] if r["axis"] == "n_params"] == ["mle"]
    assert client.get_run(parent).data.metrics[f"powerlaw/{MAUVE}/n_params/mle/b"] == pytest.approx(0.2, rel=1e-6)
    import pandas as pd

    points = pd.read_csv(client.download_artifacts(parent, "scaling_law/scaling_law_points.csv", str(tmp_path)))
    assert set(points["metric"]) == {ICL, MAUVE}
    assert len(points[points.metric == MAUVE]) == 2 * 2  # mle only: 2 models x 2 data volumes


def test_without_generation_scores_the_figure_has_one_row(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("agg1")
    parent = client.create_run(exp).info.run_id
    for model in ("smollm2-135m", "gemma3-270m"):
        log_child(client, exp, parent, model=model, objective="emo", gamma=None, tokens=1000, seed=0, acc=0.6)
    out = aggregate_and_log(parent, uri, ICL)
    assert out["secondary"] == {}


def test_no_children_is_a_clear_error(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    parent = client.create_run(client.create_experiment("e")).info.run_id
    with pytest.raises(ValueError, match="no finished child runs"):
        aggregate(collect(parent, uri), ICL)


def test_figure_titles_name_mauve_by_corpus_and_decoder():
    assert short_name(MAUVE) == "MAUVE wikitext-2 (ancestral)"
    assert short_name(ICL) == ICL


def test_axis_ticks_name_the_swept_values():
    assert [human(x) for x in (135e6, 270e6, 1.3e9, 13e9, 2048, 2_500_000)] == \
        ["135M", "270M", "1.3B", "13B", "2,048", "2.5M"]


def test_a_model_outside_the_registry_sits_on_the_size_curve_by_its_counted_parameters(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("hub")
    parent = client.create_run(exp).info.run_id
    for model, n in (("my-org/custom-350m", 3.5e8), ("smollm2-135m", 1.35e8), ("/models/local-1b", 1.0e9)):
        log_child(client, exp, parent, model=model, objective="emo", gamma=None, tokens=1000, seed=0,
                  acc=0.5 * (n / 1e8) ** 0.1, n_params=n)
    best, fits, _ = aggregate(collect(parent, uri), ICL)
    assert sorted(best["n_params"]) == [1.35e8, 3.5e8, 1.0e9]
    assert fits[("n_params", "emo")]["points"] == 3 and fits[("n_params", "emo")]["b"] == pytest.approx(0.1, rel=1e-6)


def test_the_best_set_of_any_hyperparameter_is_kept_per_cell(tmp_path):
    """Not only gamma: a set of several keywords is one arm, chosen by its seed mean."""
    import json

    from mlflow import MlflowClient

    from emo_ray.sweep.spec import Trial
    from emo_ray.sweep.trial import TRIAL_RECORD_TAG

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("hp")
    parent = client.create_run(exp).info.run_id
    for hp, acc in (({"gamma": 0.9, "min_weight": 0.1}, 0.6), ({"gamma": 0.9, "min_weight": 0.0}, 0.7)):
        for seed in (0, 1):
            t = Trial("smollm2-135m", "tailr", hp, 1000, seed)
            rid = client.create_run(exp, tags={"mlflow.parentRunId": parent, TRIAL_RECORD_TAG: json.dumps(t.to_dict())}).info.run_id
            client.log_param(rid, "model.n_params", 135_000_000)
            client.log_metric(rid, ICL, acc + 0.01 * seed)
            client.set_terminated(rid, "FINISHED")
    best, _, _ = aggregate(collect(parent, uri), ICL)
    assert list(best["hparams"]) == ["gamma=0.9,min_weight=0.0"] and best["mean"].iloc[0] == pytest.approx(0.705)


def test_pretrained_runs_stay_off_the_curves_and_domains_get_their_own(tmp_path):
    """A pre-trained evaluation (0 tokens) is not a scaling point; with several domains each
    objective gets one curve per domain ("mle/webtext")."""
    import json

    from mlflow import MlflowClient

    from emo_ray.sweep.spec import PRETRAINED, Trial
    from emo_ray.sweep.trial import TRIAL_RECORD_TAG

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("agg")
    parent = client.create_run(exp).info.run_id

    def child(trial, acc):
        rid = client.create_run(exp, tags={"mlflow.parentRunId": parent, TRIAL_RECORD_TAG: json.dumps(trial.to_dict())}).info.run_id
        client.log_param(rid, "model.n_params", 135_000_000)
        client.log_metric(rid, ICL, acc)
        client.set_terminated(rid, "FINISHED")

    for domain, level in (("wikitext-2", 0.5), ("webtext", 0.6)):
        for tokens in (1000, 2000, 4000):
            child(Trial("smollm2-135m", "mle", {}, tokens, 0, domain), level * (tokens / 1e3) ** 0.05)
        child(Trial("smollm2-135m", PRETRAINED, {}, 0, 0, domain), 0.01)
    df = collect(parent, uri)
    assert df["pretrained"].sum() == 2 and set(df["domain"]) == {"wikitext-2", "webtext"}
    best, fits, _ = aggregate(df, ICL)
    assert 0 not in set(best["tokens"]) and set(best["objective"]) == {"mle/wikitext-2", "mle/webtext"}
    assert fits[("tokens", "mle/webtext")]["b"] == pytest.approx(0.05, rel=1e-6)
