"""Checkpoint I/O on real local Ray + DeepSpeed (issue 27.4): checkpoints written straight into the
run's storage, a restart resuming from one, and the full checkpoints dropped after the final
weights (``final_checkpoint=weights``)."""
from __future__ import annotations

import pytest

from emo_ray.config import load_config
from emo_ray.train import fit

pytestmark = pytest.mark.integration


def test_direct_checkpoints_resume_and_only_the_final_weights_remain(ray_local, mlflow_uri, tmp_path):
    from mlflow import MlflowClient

    runs = tmp_path / "runs"
    cfg = load_config(None, [
        "model.name=tiny-llama", "data.block_size=64", "data.max_train_tokens=8192", "data.max_validation_blocks=8",
        "train.micro_batch_size=4", "train.warmup_steps=2", "ray.num_workers=2", "train.max_steps=8",
        "train.checkpoint_every=3", "train.debug_fail_at_step=5", "ray.max_failures=1", "train.loss=mixce",
        "train.final_checkpoint=weights", f"ray.storage_path={runs}", "tracking.experiment=it"])
    result = fit(cfg)
    client = MlflowClient(mlflow_uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.data.tags["emo_ray.resumed_from_step"] == "3"
    steps = sorted(m.step for m in client.get_metric_history(result.mlflow_run_id, "train/loss"))
    assert steps == list(range(1, 9)), steps
    # written where Ray Train keeps them (no temporary copy), under their step's name; the full
    # checkpoints of steps 3 and 6 are gone once the final weights are committed
    left = sorted(p.name for p in runs.rglob("checkpoint_step_*") if p.is_dir())
    assert left == ["checkpoint_step_0000008_final"], left
    final = next(runs.rglob("checkpoint_step_0000008_final"))
    assert (final / "hf" / "config.json").exists() and not (final / "latest").exists()
