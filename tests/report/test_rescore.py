"""Acceptance: a stored sweep re-scores under another MAUVE setting without resampling.

The store is real: a local MLflow (sqlite) holding a sweep parent run and two finished trial
runs, on which the evaluation of the tiny model was logged by the code a sweep trial uses
(``run_evaluation`` + ``log_result_to_run``). Re-scoring must never sample (the Sampler and the
corpus evaluation are made to raise), must leave the original metrics alone, and must give what
MAUVE computes from the stored features under the new settings; unchanged settings reproduce the
logged numbers exactly."""
from __future__ import annotations

import json
import re
import tempfile
from dataclasses import replace

import pytest
import torch

from emo_ray.evaluation.config import MauveConfig
from emo_ray.evaluation.mauve_features import CorpusFeatures, all_metrics
from emo_ray.report.rescore import RescoreError, rescore, setting_tag
from emo_ray.typed_config import ConfigError
from tests.evaluation.conftest import needs_data, one_torch_thread, tiny_path  # noqa: F401 (fixtures)
from tests.evaluation.test_run import tiny_cfg
from tests.conftest import fresh_store

MAUVE_KEY = re.compile(r"^eval/(gen/wikitext-2/.*(mauve|frontier_integral).*)$")


@pytest.fixture(scope="module")
def stored_sweep(tmp_path_factory, tiny_path):
    from mlflow import MlflowClient

    from emo_ray.evaluation.run import log_result_to_run, run_evaluation
    from emo_ray.sweep.spec import Trial
    from emo_ray.sweep.trial import TRIAL_RECORD_TAG

    tmp = tmp_path_factory.mktemp("sweep")
    uri = fresh_store(tmp / "mlflow.db")
    client = MlflowClient(uri)
    exp = client.create_experiment("sweeps", artifact_location=str(tmp / "artifacts"))
    parent = client.create_run(exp, run_name="demo", tags={"emo_ray.kind": "sweep", "emo_ray.preset": "demo"}).info.run_id
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    result = run_evaluation(tiny_path, tiny_cfg(tmp, icl_enabled=False))
    torch.set_num_threads(threads)
    children = []
    for objective in ("mle", "emo"):
        record = json.dumps(Trial("tiny-llama", objective, {}, 4096, 0).to_dict())
        rid = client.create_run(exp, run_name=objective, tags={"mlflow.parentRunId": parent, TRIAL_RECORD_TAG: record}).info.run_id
        log_result_to_run(result, rid, client)
        client.set_terminated(rid, "FINISHED")
        children.append(rid)
    client.set_terminated(parent, "FINISHED")
    return uri, client, children


@pytest.fixture(autouse=True)
def no_sampling(monkeypatch):
    from emo_ray.evaluation import open_ended
    from emo_ray.inference import sampler

    def boom(*a, **k):
        raise AssertionError("re-scoring sampled")

    monkeypatch.setattr(sampler.Sampler, "__init__", boom)
    monkeypatch.setattr(open_ended, "evaluate_corpus", boom)


def stored_features(client, run_id: str) -> CorpusFeatures:
    with tempfile.TemporaryDirectory() as tmp:
        return CorpusFeatures.load(client.download_artifacts(run_id, "features/wikitext-2.npz", tmp))


@needs_data
def test_sweep_rescores_under_another_num_buckets_without_resampling(stored_sweep):
    uri, client, children = stored_sweep
    before = {rid: dict(client.get_run(rid).data.metrics) for rid in children}
    rows = rescore("demo", uri, ["mauve.num_buckets=8"])  # by sweep name, as the report
    assert sorted(rows["run"]) == sorted(r[:12] for r in children) and set(rows["setting"]) == {"num_buckets-8"}
    for rid in children:
        run = client.get_run(rid)
        f = stored_features(client, rid)
        expected = all_metrics(f, replace(f.config(), num_buckets=8), "gen/wikitext-2")
        assert len(expected) == 3 * 2 + 3 * 2 + 4  # 3 scores x (2 seeds + mean, std) + the ceiling's 4
        new = {k.removeprefix("eval/rescore/num_buckets-8/"): v for k, v in run.data.metrics.items()
               if k.startswith("eval/rescore/num_buckets-8/")}
        assert new == pytest.approx(expected, rel=1e-12, abs=1e-15)
        original = lambda metrics: {k: v for k, v in metrics.items() if not k.startswith("eval/rescore/")}  # noqa: E731
        old = original(before[rid])
        assert original(run.data.metrics) == old  # untouched
        # 8 buckets instead of auto (n/10 = 3) changes the smoothed scores and the ceiling.
        changed = [k for k in expected if expected[k] != old[f"eval/{k}"]]
        assert any(k.endswith("mauve_star") for k in changed) and "gen/wikitext-2/human_mauve" in changed, changed
        assert "num_buckets=8 " in run.data.params["rescore/num_buckets-8"]
        assert run.data.params["rescore/num_buckets-8"].endswith("features=stored")


@needs_data
def test_unchanged_settings_reproduce_the_logged_numbers(stored_sweep):
    uri, client, children = stored_sweep
    rescore(children[0], uri, ["mauve.batch_size=3"])  # by run id; batch size changes no score
    metrics = client.get_run(children[0]).data.metrics
    logged = {m[1]: v for k, v in metrics.items() if (m := MAUVE_KEY.match(k))}
    again = {k.removeprefix("eval/rescore/unchanged/"): v for k, v in metrics.items() if k.startswith("eval/rescore/unchanged/")}
    assert "gen/wikitext-2/human_mauve" in logged and "gen/wikitext-2/ancestral/seed1/mauve_star" in logged
    assert again == logged


@needs_data
def test_featurizer_setting_refeaturizes_the_logged_texts(stored_sweep, monkeypatch):
    from emo_ray.evaluation import featurize as featurize_module
    from emo_ray.report.collect import Artifacts

    uri, client, children = stored_sweep
    seen = []
    real = featurize_module.featurize
    monkeypatch.setattr(featurize_module, "featurize", lambda texts, *a, **k: seen.append(list(texts)) or real(texts, *a, **k))
    rows = rescore(children[1], uri, ["mauve.include_prefix=false"])
    table = Artifacts(client).table(children[1], "generations/wikitext-2.json")
    f = stored_features(client, children[1])
    # Continuations only: the human reference windows, the second set, and the non-empty generations.
    assert sorted(map(tuple, seen)) == sorted([tuple(f.human_reference), tuple(f.human2_reference),
                                               tuple(table[~table["empty"]]["generation"])])
    run = client.get_run(children[1])
    assert run.data.params["rescore/include_prefix-False"].endswith("features=refeaturized")
    assert "eval/rescore/include_prefix-False/gen/wikitext-2/ancestral/seed0/mauve" in run.data.metrics
    assert rows["human_mauve"].between(0, 1).all()


@needs_data
def test_cli_prints_the_table_and_fails_in_one_line(stored_sweep, capsys):
    from mlflow.entities import RunStatus

    from emo_ray.cli import main

    uri, client, children = stored_sweep
    assert main(["rescore", "demo", "mauve.scaling_factor=1", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "scaling_factor-1.0" in out and "human_mauve" in out and children[0][:12] in out
    exp = client.get_run(children[0]).info.experiment_id
    bare = client.create_run(exp).info.run_id
    client.set_terminated(bare, RunStatus.to_string(RunStatus.FINISHED))
    for args, message in ((["nope"], "neither a run id nor the name of a sweep"),
                          ([bare], "predates the feature artifact"),
                          (["demo", "mauve.bogus=1"], "unknown key"),
                          (["demo", "generation.seeds=[3]"], "rescore takes mauve.<key>=value")):
        assert main(["rescore", *args, "--tracking-uri", uri]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_tag_names_the_changed_settings():
    base = MauveConfig()
    assert setting_tag(base, replace(base, cache=False, batch_size=2)) == "unchanged"
    assert setting_tag(base, replace(base, num_buckets=50, seed=3)) == "num_buckets-50_seed-3"
    long = setting_tag(base, replace(base, featurizer="/some/very/long/path/to/a/local/featurizer/model"))
    assert len(long) <= 48 and re.fullmatch(r"[A-Za-z0-9._-]+", long) and long.startswith("featurizer-")


def test_unknown_key_and_unfinished_run_fail_early(tmp_path):
    from mlflow import MlflowClient

    with pytest.raises(ConfigError, match="unknown key"):
        rescore("anything", f"sqlite:///{tmp_path / 'm.db'}", ["mauve.nope=1"])
    uri = fresh_store(tmp_path / "m.db")
    client = MlflowClient(uri)
    running = client.create_run(client.create_experiment("e")).info.run_id
    with pytest.raises(RescoreError, match="is RUNNING; only finished runs"):
        rescore(running, uri, [])
