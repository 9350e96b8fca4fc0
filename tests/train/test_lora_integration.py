"""LoRA through real local Ray + DeepSpeed ZeRO-2 (2 workers) + MLflow on the tiny model: a worker
dies two steps after a checkpoint (one step of margin was seen to lose the race with Ray
registering the checkpoint), the run resumes from it, and the export is the merged plain model
plus the adapter alone."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from emo_ray.config import load_config
from emo_ray.train import fit

pytestmark = pytest.mark.integration


def test_lora_zero2_resumes_and_exports_merged_model(ray_local, mlflow_uri, tmp_path):
    from mlflow import MlflowClient
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from emo_ray.models.loading import materialize

    cfg = load_config(None, [
        "model.name=tiny-llama", "data.block_size=64", "data.max_train_tokens=4096", "data.max_validation_blocks=4",
        "train.micro_batch_size=4", "train.lr=1e-2", "train.loss=emo", "train.zero_stage=2",
        "train.lora.rank=4", "train.lora.alpha=8", "train.lora.target_modules=[q_proj, v_proj]",
        "train.max_steps=5", "train.checkpoint_every=2", "train.debug_fail_at_step=4", "ray.max_failures=1",
        "ray.num_workers=2", f"ray.storage_path={tmp_path / 'runs'}", "tracking.experiment=it-lora",
    ])
    result = fit(cfg)
    client = MlflowClient(mlflow_uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED" and result.metrics["step"] == 5
    assert run.data.tags["emo_ray.resumed_from_step"] == "2"  # the second attempt restored step 2
    p = run.data.params
    assert p["train.lora.rank"] == "4" and p["train.lora.alpha"] == "8.0" and "q_proj" in p["train.lora.target_modules"]
    # tiny-llama: 2 layers x (q_proj, v_proj) x r (in + out)
    base = AutoModelForCausalLM.from_pretrained(materialize("tiny-llama"), dtype=torch.float32)
    h = base.config.hidden_size
    assert int(p["train.trainable_params"]) == 2 * 2 * 4 * (h + h)

    hf = Path(result.hf_model_path)
    merged = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32)  # a plain HF model
    got, want = merged.state_dict(), base.state_dict()
    assert set(got) == set(want)
    changed = {k for k in want if not torch.equal(got[k], want[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed), changed
    adapted = PeftModel.from_pretrained(base, hf / "adapter").eval()
    ids = torch.randint(0, base.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, adapted(input_ids=ids).logits, rtol=1e-4, atol=1e-5)
