"""Instruction tuning end to end on the tiny model (real local Ray + DeepSpeed + MLflow): the run
finishes, and the tokens it trains on each step (``train/tokens_per_s * train/step_time_s``, the
worker's ``LossOutput.n_tokens`` summed) are the response tokens of that step's blocks, not all
tokens; validation counts only response tokens too."""
from __future__ import annotations

import pytest

from emo_ray.config import load_config
from emo_ray.train import fit

pytestmark = pytest.mark.integration


def test_instruction_run_trains_only_response_tokens(ray_local, mlflow_uri, tmp_path):
    from mlflow import MlflowClient

    from emo_ray.data import prepare_blocks
    from emo_ray.models import load_tokenizer, materialize

    steps, mb = 3, 4
    cfg = load_config("configs/instruction_tiny.yaml", [
        f"train.max_steps={steps}", f"train.micro_batch_size={mb}", "train.warmup_steps=0", "train.zero_stage=0",
        "train.dead_patience=10", "data.max_validation_blocks=4", "ray.num_workers=1",
        f"ray.storage_path={tmp_path / 'runs'}", "tracking.experiment=instr", "tracking.run_name=instr",
    ])
    packed = prepare_blocks(cfg.data, load_tokenizer(materialize(cfg.model.name)))  # what fit packs (cached)
    T = cfg.data.block_size
    # One worker, blocks in order: step k trains blocks [k*mb, (k+1)*mb); a target is a position
    # with mask 1 that has a predecessor in its block (the HF shift).
    want = [int(packed.train_mask[k * mb : (k + 1) * mb, 1:].sum()) for k in range(steps)]
    assert all(0 < w < mb * (T - 1) for w in want), want

    result = fit(cfg)
    client = MlflowClient(mlflow_uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["data.format"] == "instruction"
    assert int(run.data.params["data.train_target_tokens"]) == packed.stats["train_target_tokens"]
    rate = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/tokens_per_s")}
    dt = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/step_time_s")}
    trained = [rate[k + 1] * dt[k + 1] for k in range(steps)]
    assert trained == pytest.approx(want, rel=1e-6)
    assert all(t < mb * (T - 1) for t in trained)  # not every token of the blocks
    # Validation: the response tokens of the validation blocks only.
    assert run.data.metrics["val/tokens"] == packed.stats["validation_target_tokens"]
    assert packed.stats["validation_target_tokens"] < packed.validation.shape[0] * (T - 1)
