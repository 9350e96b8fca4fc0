"""Real local Ray + DeepSpeed + MLflow on the tiny model: the whole training path, end to end."""
from __future__ import annotations

import pytest

from emo_ray.config import load_config
from emo_ray.train import fit

pytestmark = pytest.mark.integration

BASE = [
    "model.name=tiny-llama",
    "data.block_size=64",
    "data.max_train_tokens=8192",
    "data.max_validation_blocks=8",
    "train.micro_batch_size=4",
    "train.lr=1e-3",
    "train.warmup_steps=2",
    "ray.num_workers=2",
]


def cfg_for(tmp_path, *extra):
    return load_config(None, [*BASE, f"ray.storage_path={tmp_path / 'runs'}", "tracking.experiment=it", *extra])


def history(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.mark.parametrize("stage,loss,extra", [
    (2, "emo", ["train.cost_embedding=fixed"]),
    (3, "tailr", ["train.loss_kwargs={gamma: 0.5}", "train.grad_accum=2"]),
])
def test_fit_learns_and_logs_to_mlflow(ray_local, mlflow_uri, tmp_path, stage, loss, extra):
    from mlflow import MlflowClient

    cfg = cfg_for(tmp_path, f"train.zero_stage={stage}", f"train.loss={loss}", "train.max_steps=10", *extra)
    result = fit(cfg)
    client = MlflowClient(mlflow_uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.loss"] == loss and run.data.params["train.zero_stage"] == str(stage)
    assert int(run.data.params["data.train_tokens"]) == 8192
    assert [s for s, _ in history(client, result.mlflow_run_id, "train/loss")] == list(range(1, 11))
    # It learns: the NLL part falls (TaiLr's weighted loss is not on the NLL scale).
    mle = history(client, result.mlflow_run_id, "train/mle")
    assert mle[-1][1] < mle[0][1] - 0.2, mle
    assert result.metrics["val_loss"] < mle[0][1]
    if loss == "emo":
        emo = history(client, result.mlflow_run_id, "train/emo")
        assert all(0.0 <= v <= 2.0 for _, v in emo)
    assert result.hf_model_path and (tmp_path / "runs").exists()
    # the exported folder is a loadable Hugging Face model
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(result.hf_model_path)


def test_worker_death_resumes_from_last_checkpoint(ray_local, mlflow_uri, tmp_path):
    from mlflow import MlflowClient

    cfg = cfg_for(tmp_path, "train.max_steps=8", "train.checkpoint_every=3", "train.debug_fail_at_step=5",
                  "ray.max_failures=1", "train.loss=mixce")
    result = fit(cfg)
    client = MlflowClient(mlflow_uri)
    assert client.get_run(result.mlflow_run_id).info.status == "FINISHED"
    steps = [s for s, _ in history(client, result.mlflow_run_id, "train/loss")]
    # attempt 1 logs 1-4 and dies at 5; attempt 2 restores the step-3 checkpoint, replays step 4
    # without logging it again, and logs 5-8: each step once.
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8], steps
    # The attempt's starting step is a tag (the last attempt's), never a metric.
    run = client.get_run(result.mlflow_run_id)
    assert run.data.tags["emo_ray.resumed_from_step"] == "3" and "resumed_from_step" not in run.data.metrics
    assert result.metrics["step"] == 8


def test_failure_without_retries_ends_run_failed(ray_local, mlflow_uri, tmp_path):
    from mlflow import MlflowClient

    cfg = cfg_for(tmp_path, "train.max_steps=4", "train.debug_fail_at_step=2", "ray.max_failures=0",
                  "tracking.run_name=doomed")
    with pytest.raises(Exception):
        fit(cfg)
    client = MlflowClient(mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("it").experiment_id], "attributes.run_name = 'doomed'")
    assert [r.info.status for r in runs] == ["FAILED"]


def test_weights_only_final_checkpoint_and_rerun_of_a_finished_run(ray_local, mlflow_uri, tmp_path):
    """``final_checkpoint=weights`` keeps the HF export and the metrics, no DeepSpeed state; a
    finished run started again (a sweep re-running a trial whose evaluation was cut) does not
    train again and ends with the same metrics and a loadable model."""
    from pathlib import Path

    from mlflow import MlflowClient
    from transformers import AutoModelForCausalLM

    cfg = cfg_for(tmp_path, "train.max_steps=3", "train.final_checkpoint=weights", "ray.run_name=weights-only")
    first = fit(cfg)
    ckpt = Path(first.checkpoint_path)
    assert sorted(p.name for p in ckpt.iterdir()) == ["hf", "trainer_state.json"]
    assert first.hf_model_path and first.metrics["step"] == 3

    again = fit(cfg, mlflow_run_id=first.mlflow_run_id)
    assert again.mlflow_run_id == first.mlflow_run_id
    assert again.metrics["val_loss"] == first.metrics["val_loss"] and again.metrics["step"] == 3
    client = MlflowClient(mlflow_uri)
    assert [s for s, _ in history(client, first.mlflow_run_id, "train/loss")] == [1, 2, 3]  # not retrained
    assert client.get_run(first.mlflow_run_id).data.tags["emo_ray.resumed_from_step"] == "0"
    import mlflow

    mlflow.set_tracking_uri(mlflow_uri)
    exp_id = client.get_run(first.mlflow_run_id).info.experiment_id
    models = mlflow.search_logged_models(experiment_ids=[exp_id], output_format="list")
    assert [m.source_run_id for m in models].count(first.mlflow_run_id) == 1  # not recorded twice
    AutoModelForCausalLM.from_pretrained(again.hf_model_path)
