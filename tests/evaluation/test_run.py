"""End to end on the tiny model: metrics, counted skips, MLflow records, the CLI, and Ray Data."""
from __future__ import annotations

import json
from dataclasses import replace

import mlflow
import pytest

from emo_ray.cli import main as emo_ray
from emo_ray.config import TrackingConfig
from emo_ray.evaluation.config import EvalConfig, GenerationConfig, ICLConfig, MauveConfig, OracleConfig
from emo_ray.evaluation.open_ended import evaluate_corpus
from emo_ray.evaluation.run import evaluate, run_evaluation
from emo_ray.inference.executor import ExecutionConfig
from tests.evaluation.conftest import LOCAL, needs_data, write_task
from tests.conftest import fresh_store


def tiny_cfg(tmp_path, **kw) -> EvalConfig:
    base = EvalConfig(
        model="tiny-llama",
        generation=GenerationConfig(corpora=("wikitext-2",), num_prompts=16, seeds=(0, 1), batch_size=8),
        mauve=MauveConfig(featurizer="tiny-llama", pooling="mean", cache=False),
        oracle=OracleConfig(model="tiny-llama"),
        icl=ICLConfig(tasks=(write_task(tmp_path),), num_items=0),
        execution=LOCAL,
        tracking=TrackingConfig(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="t"),
    )
    return replace(base, **kw)


@needs_data
def test_evaluate_returns_all_scores(tmp_path, tiny_path):
    m = evaluate(tiny_path, tiny_cfg(tmp_path))
    for k in ("mauve", "oracle_ppl", "rouge1", "rougeL"):
        assert f"gen/wikitext-2/ancestral/{k}_mean" in m and f"gen/wikitext-2/ancestral/{k}_std" in m
        assert f"gen/wikitext-2/ancestral/seed1/{k}" in m
    assert m["icl/toy/n_items"] == 3 and m["icl/avg_accuracy"] == m["icl/toy/accuracy"]
    assert m["icl/n_tasks"] == 1 and m["time/total_s"] > 0


@needs_data
def test_oracle_off_skips_its_stage_and_logs_no_oracle_score(tmp_path, tiny_path):
    cfg = tiny_cfg(tmp_path, icl_enabled=False, oracle=OracleConfig(model="tiny-llama", enabled=False))
    res = evaluate_corpus(tiny_path, "wikitext-2", cfg)
    assert not any("oracle" in k for k in res.metrics), [k for k in res.metrics if "oracle" in k]
    for k in ("mauve", "rouge1", "rougeL"):
        assert f"gen/wikitext-2/ancestral/{k}_mean" in res.metrics
    assert res.params["gen/wikitext-2/oracle_ppl"] == "off"
    table = next(iter(res.tables.values()))
    assert table["oracle_nll_sum"].isna().all() and (table["oracle_tokens"] == 0).all()


def test_precision_recall_without_a_surrogate_needs_the_oracle(tmp_path):
    from emo_ray.evaluation.config import EvalConfigError, validate

    cfg = tiny_cfg(tmp_path, icl_enabled=False, oracle=OracleConfig(model="tiny-llama", enabled=False),
                   generation=GenerationConfig(corpora=("wikitext-2",), precision_recall=True))
    with pytest.raises(EvalConfigError, match="generation.surrogate or enable the oracle"):
        validate(cfg)
    validate(replace(cfg, generation=replace(cfg.generation, surrogate="tiny-llama")))


@needs_data
def test_empty_generations_are_counted_and_left_out(tmp_path, uniform_path):
    from transformers import GenerationConfig as HFGen

    # Half of the vocabulary ends a generation: about half the samples are empty.
    gc = HFGen.from_pretrained(uniform_path)
    gc.eos_token_id = list(range(0, 257, 2))
    gc.save_pretrained(uniform_path)
    try:
        res = evaluate_corpus(uniform_path, "wikitext-2", tiny_cfg(tmp_path))
        table = res.tables["generations/wikitext-2.json"]
        n_empty = res.metrics["gen/wikitext-2/ancestral/seed0/n_empty"] + res.metrics["gen/wikitext-2/ancestral/seed1/n_empty"]
        assert n_empty == table["empty"].sum() > 0
        assert table[table["empty"]]["oracle_nll_sum"].isna().all()
        gc.eos_token_id = list(range(257))  # every token ends it: nothing to score, a loud error
        gc.save_pretrained(uniform_path)
        with pytest.raises(ValueError, match="0 non-empty generations of 16"):
            evaluate_corpus(uniform_path, "wikitext-2", tiny_cfg(tmp_path))
    finally:
        gc.eos_token_id = 256
        gc.save_pretrained(uniform_path)


def test_unavailable_task_is_a_counted_skip_or_an_error(tmp_path, tiny_path):
    (tmp_path / "m").mkdir()
    missing = write_task(tmp_path / "m", test=str(tmp_path / "absent.jsonl"))
    cfg = tiny_cfg(tmp_path, generation_enabled=False, icl=ICLConfig(tasks=(missing,), skip_unavailable=True))
    res = run_evaluation(tiny_path, cfg)
    assert res.metrics["icl/n_tasks_skipped"] == 1 and "icl/avg_accuracy" not in res.metrics
    assert "absent.jsonl does not exist" in res.params["skipped"]
    with pytest.raises(FileNotFoundError, match="absent.jsonl"):
        run_evaluation(tiny_path, replace(cfg, icl=ICLConfig(tasks=(missing,))))


def test_unknown_task_fails_before_any_model_loads(tmp_path):
    with pytest.raises(ValueError, match="'nope' is not an ICL task"):
        run_evaluation("/nonexistent", tiny_cfg(tmp_path, generation_enabled=False, icl=ICLConfig(tasks=("nope",))))


@needs_data
def test_cli_logs_to_mlflow_and_evaluates_a_run_checkpoint(tmp_path, tiny_path, capsys):
    uri = fresh_store(tmp_path / "mlflow.db")
    cfg_path = tmp_path / "eval.yaml"
    cfg_path.write_text(json.dumps({
        "model": "tiny-llama", "generation": {"corpora": ["webtext"], "num_prompts": 8, "seeds": [0, 1], "batch_size": 8},
        "mauve": {"featurizer": "tiny-llama", "pooling": "mean", "cache": False}, "oracle": {"model": "tiny-llama"},
        "icl": {"tasks": [write_task(tmp_path)]},
        "execution": {"executor": "local", "progress_bar": False},
        "tracking": {"tracking_uri": uri, "experiment": "cli"},
    }))
    assert emo_ray(["eval", str(cfg_path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    # The summary is the last block: headline metrics, the run, and the link to the runs table.
    assert out[-1].strip().startswith("runs table") and "/runs?compareRunsMode=TABLE" in out[-1]
    run_id = next(line.split()[-1] for line in out if line.strip().startswith("mlflow run"))
    mlflow.set_tracking_uri(uri)
    client = mlflow.tracking.MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    # MLflow names carry the eval/ prefix; nothing unprefixed.
    assert "eval/gen/webtext/ancestral/mauve_mean" in run.data.metrics and "eval/icl/toy/accuracy" in run.data.metrics
    assert all(k.startswith("eval/") for k in run.data.metrics), sorted(run.data.metrics)
    assert run.data.tags["emo_ray.kind"] == "evaluation" and len(run.data.tags["emo_ray.git_commit"]) == 40
    assert "featurizer=tiny-llama pooling=mean" in run.data.params["gen/webtext/mauve"]
    arts = {a.path for a in client.list_artifacts(run_id, "generations")} | {a.path for a in client.list_artifacts(run_id, "icl")}
    assert arts == {"generations/webtext.json", "icl/toy.json"}

    # A training run's checkpoint, found through its hf_model_path tag; metrics go on that run.
    mlflow.set_experiment("train")
    with mlflow.start_run() as train_run:
        mlflow.set_tag("hf_model_path", tiny_path)
    assert emo_ray(["eval", str(cfg_path), f"model=mlflow:{train_run.info.run_id}", "tracking.log_to_source_run=true", "generation_enabled=false"]) == 0
    assert "eval/icl/toy/accuracy" in client.get_run(train_run.info.run_id).data.metrics
    # Without the tag: a clear error.
    with mlflow.start_run() as bare:
        pass
    with pytest.raises(ValueError, match="no 'hf_model_path' tag"):
        emo_ray(["eval", str(cfg_path), f"model=mlflow:{bare.info.run_id}"])


@pytest.mark.integration
@needs_data
def test_ray_data_actor_pool_gives_the_local_result(tmp_path, tiny_path):
    # One stage (ICL scoring) on a pool of two actors: every stage goes through the same map_rows.
    cfg = tiny_cfg(tmp_path, generation_enabled=False)
    local = run_evaluation(tiny_path, cfg).metrics
    ray_cfg = replace(cfg, execution=ExecutionConfig(executor="ray", num_actors=2, cpus_per_actor=1, progress_bar=False))
    on_ray = run_evaluation(tiny_path, ray_cfg).metrics
    for k, v in local.items():
        if not k.startswith("time/"):
            assert on_ray[k] == pytest.approx(v, rel=1e-6, abs=1e-9), k
