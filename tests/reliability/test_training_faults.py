"""Faults during training on the tiny model (real local Ray + DeepSpeed + MLflow): divergence,
no validation data, a resumed run with a changed config, a resumed run's MLflow record."""
from __future__ import annotations

import pytest

from emo_ray.config import ConfigError, load_config
from emo_ray.train import fit

pytestmark = pytest.mark.integration

BASE = [
    "model.name=tiny-llama",
    "data.block_size=64",
    "data.max_train_tokens=4096",
    "data.max_validation_blocks=4",
    "train.micro_batch_size=4",
    "train.warmup_steps=0",
    "train.schedule=constant",
    "ray.num_workers=1",
    "train.zero_stage=0",
]


def cfg_for(tmp_path, *extra):
    return load_config(None, [*BASE, f"ray.storage_path={tmp_path / 'runs'}", "tracking.experiment=rel", *extra])


def runs(client, name):
    exp = client.get_experiment_by_name("rel")
    return client.search_runs([exp.experiment_id], f"attributes.run_name = '{name}'") if exp else []


def test_divergence_stops_the_run_failed_without_export(ray_local, mlflow_uri, tmp_path):
    from mlflow import MlflowClient

    cfg = cfg_for(tmp_path, "train.lr=1e30", "train.clip_grad_norm=0", "train.max_steps=6",
                  "tracking.run_name=diverges")
    with pytest.raises(Exception, match="TrainingDiverged: non-finite"):
        fit(cfg)
    client = MlflowClient(mlflow_uri)
    (run,) = runs(client, "diverges")
    assert run.info.status == "FAILED"
    assert "hf_model_path" not in run.data.tags and "checkpoint_path" not in run.data.tags
    assert run.data.tags["emo_ray.failure"].startswith("TrainingDiverged: non-finite")
    assert not any(k.startswith("val/") for k in run.data.metrics)


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_dead_model_stops_the_run_failed_without_export(ray_local, mlflow_uri, tmp_path, zero_stage):
    """``train.lr=1e6`` (the issue's probe): every number stays finite, but one step saturates the
    network (loss = ln V) and the gradient norm is 0 from then on. It used to finish FINISHED with
    exit 0. At ZeRO stage 0 DeepSpeed records no gradient norm; the worker computes it."""
    from mlflow import MlflowClient

    cfg = cfg_for(tmp_path, "train.lr=1e6", "train.max_steps=8", "train.dead_patience=2",
                  "tracking.run_name=dead", f"train.zero_stage={zero_stage}")
    with pytest.raises(Exception, match="TrainingDiverged: dead model, gradient norm 0 for 2 steps"):
        fit(cfg)
    (run,) = runs(MlflowClient(mlflow_uri), "dead")
    assert run.info.status == "FAILED"
    assert "hf_model_path" not in run.data.tags and "checkpoint_path" not in run.data.tags
    assert run.data.tags["emo_ray.failure"].startswith("TrainingDiverged: dead model")


def test_no_validation_data_then_resume_refuses_a_changed_config_and_continues_the_same_mlflow_run(
        ray_local, mlflow_uri, tmp_path):
    """One run holds two guarantees (one fit fewer): without validation data it finishes and logs
    no val metrics; a resume with a changed config is refused, the same config continues it."""
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_uri)
    keep = ["data.validation_fraction=0", "train.max_steps=2", "ray.run_name=keep"]
    first = fit(cfg_for(tmp_path, "train.lr=1e-3", *keep))
    run = client.get_run(first.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert "val/loss" not in run.data.metrics and "val/ppl" not in run.data.metrics
    assert "val_loss" not in first.metrics and "val_ppl" not in first.metrics
    n_runs = len(client.search_runs([first.experiment_id]))
    with pytest.raises(ConfigError, match=r"train\.loss .*train\.lr"):
        fit(cfg_for(tmp_path, "train.lr=1e-2", "train.loss=mle", *keep))
    assert len(client.search_runs([first.experiment_id])) == n_runs  # refused before a run opened
    # Same config again (what a restarted driver does): the same MLflow run continues.
    again = fit(cfg_for(tmp_path, "train.lr=1e-3", *keep, "train.log_every=2"))
    assert again.mlflow_run_id == first.mlflow_run_id
    assert len(client.search_runs([first.experiment_id])) == n_runs
    assert [m.step for m in client.get_metric_history(first.mlflow_run_id, "train/loss")] == [1, 2]
