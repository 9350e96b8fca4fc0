"""Checkpoint selection by validation loss and a cost embedding from another model, through real
local Ray + DeepSpeed (ZeRO 2, 2 workers) + MLflow on tiny models. One run checks both, and a
worker death in the middle: the best export of the first attempt must survive the restart."""
from __future__ import annotations

import pytest
import torch

from emo_ray.config import load_config
from emo_ray.train import fit

pytestmark = pytest.mark.integration


def history(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _nll(model, blocks) -> float:
    """Token NLL of ``model`` on ``blocks`` (every next token a target), in float64."""
    with torch.no_grad():
        logits = model(input_ids=torch.as_tensor(blocks, dtype=torch.long)).logits.double()
    logp = torch.log_softmax(logits[:, :-1], -1)
    return float(-logp.gather(-1, torch.as_tensor(blocks[:, 1:], dtype=torch.long)[..., None]).mean())


def test_best_val_loss_export_and_other_cost_embedding(ray_local, mlflow_uri, tmp_path, monkeypatch):
    from mlflow import MlflowClient
    from transformers import AutoModelForCausalLM

    from emo_ray.data import prepare_blocks
    from emo_ray.losses import get_loss
    from emo_ray.models import load_tokenizer, materialize
    from emo_ray.models.tiny import build_tiny

    monkeypatch.setenv("EMO_RAY_CACHE", str(tmp_path / "cache"))
    other = str(build_tiny(tmp_path / "other", seed=7, hidden_size=32))  # same vocabulary, hidden 32 (not 64)
    max_steps = 8
    # 8 training blocks = 2 workers x micro-batch 4: step 1 sees every block once, whatever the
    # split. A constant lr of 3e-2 overfits them: validation loss bottoms out early, then rises.
    cfg = load_config(None, [
        "model.name=tiny-llama", "data.block_size=64", "data.max_train_tokens=512", "data.max_validation_blocks=8",
        "train.micro_batch_size=4", "train.lr=3e-2", "train.schedule=constant", f"train.max_steps={max_steps}",
        "train.eval_every=1", "train.select_checkpoint=best_val_loss", "train.precision=fp32", "train.zero_stage=2",
        "train.loss=emo", f"train.cost_embedding_model={other}", "train.final_checkpoint=weights",
        "train.checkpoint_every=3", "train.debug_fail_at_step=5", "ray.max_failures=1", "ray.num_workers=2",
        f"ray.storage_path={tmp_path / 'runs'}", "tracking.experiment=it",
    ])
    result = fit(cfg)
    client = MlflowClient(mlflow_uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"

    # Validation every step, each logged once although steps 4 and 5 ran twice (restart from step 3).
    val = history(client, result.mlflow_run_id, "val/loss")
    assert [s for s, _ in val] == list(range(1, max_steps + 1)), val
    best_step, best_loss = min(val, key=lambda sv: sv[1])
    assert best_step < max_steps and val[-1][1] > best_loss  # the run went past its best: selection matters
    assert best_step <= 3  # before the restored step-3 checkpoint: kept by the first attempt, across the restart
    assert history(client, result.mlflow_run_id, "val/best_step") == [(max_steps, best_step)]
    assert history(client, result.mlflow_run_id, "val/best_loss")[0][1] == pytest.approx(best_loss)
    assert result.metrics["val_best_step"] == best_step

    # The exported model is the best step's: its validation loss, recomputed here, is the best one.
    packed = prepare_blocks(cfg.data, load_tokenizer(materialize("tiny-llama")))
    exported = AutoModelForCausalLM.from_pretrained(result.hf_model_path, dtype=torch.float32)
    assert _nll(exported, packed.validation) == pytest.approx(best_loss, rel=1e-4)
    assert abs(best_loss - val[-1][1]) > 1e-2
    assert not (tmp_path / "runs" / result.ray_run_name / "best_model").exists()  # no second copy left

    # The EMO cost came from the other model's head: step 1's EMO term equals the float64
    # reference over all 8 blocks with that head, and not with tiny-llama's own head.
    params = run.data.params
    assert params["train.cost_embedding_model"] == other and params["train.cost_embedding_shape"] == "[257, 32]"
    own = AutoModelForCausalLM.from_pretrained(materialize("tiny-llama"), dtype=torch.float64)
    ids = torch.as_tensor(packed.train, dtype=torch.long)
    with torch.no_grad():
        logits = own(input_ids=ids).logits
    head = AutoModelForCausalLM.from_pretrained(other, dtype=torch.float64).get_output_embeddings().weight.detach()
    ref = get_loss("emo", cost_embedding=head)(logits, ids).metrics["emo"]
    own_ref = get_loss("emo", cost_embedding=own.get_output_embeddings().weight.detach())(logits, ids).metrics["emo"]
    logged = history(client, result.mlflow_run_id, "train/emo")[0]
    assert logged[0] == 1 and logged[1] == pytest.approx(ref, rel=1e-5)
    assert abs(own_ref - ref) > 1e-3 * ref
