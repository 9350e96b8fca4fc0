"""The MLflow record of a real local run of configs/tiny_smoke.yaml: name, tags, params vs
metrics, the dataset input and a model reference that resolves to a loadable model."""
from __future__ import annotations

import pytest

from emo_ray.config import load_config
from emo_ray.train import fit

pytestmark = pytest.mark.integration

FLAGS = ("chunked_loss", "resumed_from_step", "epoch", "step")


def test_tiny_smoke_run_is_worth_comparing(ray_local, mlflow_uri, tmp_path):
    import mlflow
    from mlflow import MlflowClient
    from transformers import AutoModelForCausalLM

    from emo_ray.evaluation.run import resolve_model

    cfg = load_config("configs/tiny_smoke.yaml", [f"ray.storage_path={tmp_path / 'runs'}", "tracking.experiment=record"])
    result = fit(cfg, tags={"emo_ray.preset": "smoke"})
    client = MlflowClient(mlflow_uri)
    run = client.get_run(result.mlflow_run_id)
    exp = client.get_experiment(run.info.experiment_id)

    # The experiment opens on the runs table, not MLflow 3's GenAI traces view.
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    # objective-model-tokens-seed
    assert run.info.run_name == "emo-tiny-llama-8192tok-s42" == result.run_name
    tags = run.data.tags
    assert tags["emo_ray.objective"] == "emo" and tags["emo_ray.model"] == "tiny-llama"
    assert tags["emo_ray.preset"] == "smoke"  # caller tags kept
    assert len(tags["emo_ray.git_commit"]) == 40 and tags["mlflow.source.git.commit"] == tags["emo_ray.git_commit"]
    for pkg in ("torch", "ray", "deepspeed", "transformers", "mlflow"):
        assert tags[f"emo_ray.version.{pkg}"], pkg

    # Params: flags live here, never among the metrics; sizes counted; data paths expanded.
    params, metrics = run.data.params, run.data.metrics
    assert params["train.chunked_loss"] in ("True", "False")
    assert int(params["model.n_params"]) == result.n_params > 0
    assert "${" not in params["data.train"] and params["data.train"].startswith("/")
    assert params["data.train"].endswith("wikitext-2/train_partial.jsonl")
    for flag in FLAGS:
        assert not any(k == flag or k.endswith("/" + flag) for k in metrics), (flag, sorted(metrics))
    assert all(k.startswith(("train/", "val/")) for k in metrics), sorted(metrics)
    for k in ("train/loss", "train/mle", "train/emo", "train/lr", "train/tokens_per_s", "train/grad_norm",
              "val/loss", "val/ppl", "val/tokens"):
        assert k in metrics, k
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == list(range(1, 9))
    assert metrics["val/ppl"] == pytest.approx(result.metrics["val_ppl"])
    assert "val_ppl" in result.metrics and "loss" in result.metrics  # Ray-side names unchanged

    # The dataset as an MLflow input: name, digest, token count.
    inputs = {d.tags and {t.key: t.value for t in d.tags}.get("mlflow.data.context"): d for d in run.inputs.dataset_inputs}
    train = inputs["training"]
    assert train.dataset.name == "wikitext-2/train_partial" and train.dataset.digest
    assert {t.key: t.value for t in train.tags}["tokens"] == "8192"
    assert train.dataset.source.endswith('train_partial.jsonl"}')

    # The fine-tuned model, visible from the run: a LoggedModel sourced from it, a reference
    # artifact, and the tag that `model=mlflow:<run>` resolves.
    mlflow.set_tracking_uri(mlflow_uri)
    models = mlflow.search_logged_models(experiment_ids=[exp.experiment_id], output_format="list")
    mine = [m for m in models if m.source_run_id == run.info.run_id]
    assert len(mine) == 1 and mine[0].tags["hf_model_path"] == result.hf_model_path
    ref = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/model/reference.json")
    assert ref["hf_model_path"] == result.hf_model_path
    path, source = resolve_model(f"mlflow:{run.info.run_id}", mlflow_uri)
    assert source == run.info.run_id
    model = AutoModelForCausalLM.from_pretrained(path)
    assert sum(p.numel() for p in model.parameters()) == result.n_params
