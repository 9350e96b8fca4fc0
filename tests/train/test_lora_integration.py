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


def _stage_main(rank: int, port: int, stage: int, model_path: str, out_root: str) -> None:
    """One DeepSpeed process (gloo, world 1) at ``stage``: the worker's load (with LoRA), two
    optimizer steps, the worker's export."""
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1",
                      LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", DS_ACCELERATOR="cpu")
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=0, world_size=1)
    from emo_ray.train.deepspeed_setup import deepspeed_config, prepare_deepspeed_env, train_precision

    prepare_deepspeed_env(False)
    import deepspeed

    from emo_ray.train import saving, worker
    from emo_ray.train.objective import build_objective

    cfg = load_config(None, [f"train.zero_stage={stage}", "train.micro_batch_size=2", "ray.num_workers=1",
                             "train.loss=emo", "train.lora.rank=4", "train.lora.dropout=0", "train.lr=1e-2",
                             "train.precision=fp32"])
    precision = train_precision(cfg)
    ds_cfg = deepspeed_config(cfg, precision)
    model, _ = worker._load_model(cfg, model_path, ds_cfg, precision)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    objective = build_objective(cfg, model)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
                                      config=ds_cfg)
    for seed in range(2):
        ids = torch.randint(0, 257, (2, 16), generator=torch.Generator().manual_seed(seed))
        engine.backward(objective.compute(engine, ids).loss)
        engine.step()
    params = dict(engine.module.named_parameters())
    torch.save({"base_equal": all(torch.equal(params[n], v) for n, v in base.items())}, os.path.join(out_root, "state.pt"))
    saving.save_hf(engine, cfg, Path(out_root) / "hf", model_path, 0)
    dist.destroy_process_group()


@pytest.mark.parametrize("stage", [0, 1])
def test_lora_at_zero_stages_0_and_1(tmp_path, stage):
    """ZeRO 0 and 1 (2 is the Ray test above), one process: base weights bitwise unchanged after
    two steps, and the export is a loadable merged model that differs from the base only where
    the adapters are."""
    import socket

    import torch.multiprocessing as mp
    from transformers import AutoModelForCausalLM

    from emo_ray.models.tiny import build_tiny

    model_path = str(build_tiny(tmp_path / "tiny"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_stage_main, args=(port, stage, model_path, str(tmp_path)), nprocs=1, join=True)
    state = torch.load(tmp_path / "state.pt")
    assert state["base_equal"]
    got = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).state_dict()
    want = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).state_dict()
    assert set(got) == set(want)
    changed = {k for k in want if not torch.equal(got[k], want[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed), changed
    assert (tmp_path / "hf" / "adapter" / "adapter_model.safetensors").exists()
