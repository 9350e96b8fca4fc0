"""Faults during training on the tiny model (real local Ray + DeepSpeed + MLflow): divergence and
a dead model end the run FAILED without export. (No validation data and a resume with a changed
config: tests/reliability/test_finished_rerun.py, on that test's finished run.)"""
from __future__ import annotations

import pytest

from emo_ray.config import load_config
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
