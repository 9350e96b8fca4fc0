"""The final Hugging Face export under ZeRO-3 never materialises the whole model on any rank:
parameters are gathered one module's own parameters at a time onto rank 0, which alone writes
the folder. Two real processes (gloo), a real DeepSpeed ZeRO-3 engine, every parameter
partitioned; ``deepspeed.zero.GatheredParameters`` instrumented to record, at every gather, how
many parameter elements are materialised on that rank at that moment.

(The equality of the ZeRO-3 export with the ZeRO-2 one, through Ray Train: tests/train/test_zero3.py.)
"""
from __future__ import annotations

import json
import os
import socket

import pytest
import torch

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, model_path: str, out_root: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD), DS_ACCELERATOR="cpu")
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    from emo_ray.config import load_config
    from emo_ray.train.deepspeed_setup import deepspeed_config, prepare_deepspeed_env

    prepare_deepspeed_env(False)
    import deepspeed
    from transformers import AutoModelForCausalLM
    from transformers.integrations import HfDeepSpeedConfig

    from emo_ray.train import saving

    cfg = load_config(None, ["train.zero_stage=3", "train.micro_batch_size=2", "ray.num_workers=2"])
    ds_cfg = deepspeed_config(cfg)
    # Partition every parameter: the default threshold (1e5) keeps all of the tiny model's whole.
    ds_cfg["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    keep = HfDeepSpeedConfig(ds_cfg)  # noqa: F841 - load partitioned, as the worker does
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=list(model.parameters()), config=ds_cfg)
    ids = torch.randint(0, 257, (2, 16), generator=torch.Generator().manual_seed(rank))
    engine.backward(engine(input_ids=ids, labels=ids).loss)  # one real update before the export
    engine.step()

    params = list(engine.module.parameters())
    assert all(p.data.numel() == 0 for p in params), "every parameter should be partitioned"
    original = deepspeed.zero.GatheredParameters
    peaks = []

    class Recording(original):
        def __enter__(self):
            result = super().__enter__()
            peaks.append(sum(p.ds_numel for p in params if p.data.numel() == p.ds_numel and p.ds_numel))
            return result

    deepspeed.zero.GatheredParameters = Recording
    out = os.path.join(out_root, f"rank{rank}", "hf")
    try:
        saving.save_hf(engine, cfg, __import__("pathlib").Path(out), model_path, rank)
    finally:
        deepspeed.zero.GatheredParameters = original
    own = [sum(p.ds_numel for p in m.parameters(recurse=False)) for m in engine.module.modules()]
    reference = {}
    for name, p in engine.module.named_parameters():  # the trained weights, one at a time
        with original([p], modifier_rank=None):
            reference[name] = p.detach().clone()
    if rank == 0:
        torch.save(reference, os.path.join(out_root, "reference.pt"))
    with open(os.path.join(out_root, f"stats{rank}.json"), "w") as f:
        json.dump({"peaks": peaks, "largest_module": max(own), "total": sum(p.ds_numel for p in params),
                   "largest_param": max(p.ds_numel for p in params), "wrote": os.path.exists(out)}, f)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.integration
def test_zero3_export_gathers_one_module_at_a_time_onto_rank0(tmp_path):
    import torch.multiprocessing as mp
    from transformers import AutoModelForCausalLM

    from emo_ray.models.tiny import build_tiny

    model_path = str(build_tiny(tmp_path / "tiny"))
    mp.spawn(_rank_main, args=(_free_port(), model_path, str(tmp_path)), nprocs=WORLD, join=True)

    stats = [json.loads((tmp_path / f"stats{r}.json").read_text()) for r in range(WORLD)]
    for r, s in enumerate(stats):
        assert s["peaks"], f"rank {r} gathered nothing: the export did not go through ZeRO-3's gather"
        # Never more than one module's own parameters (for Llama: one weight matrix) at once.
        assert max(s["peaks"]) <= s["largest_module"] == s["largest_param"] < s["total"], (r, s)
    assert stats[0]["wrote"] and not stats[1]["wrote"]  # only rank 0 writes

    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "rank0" / "hf")
    reference = torch.load(tmp_path / "reference.pt")
    state = exported.state_dict()
    assert state.keys() == reference.keys()
    for k, v in reference.items():
        assert state[k].dtype == torch.float32  # fp32 training exports fp32 (the dtype as trained)
        torch.testing.assert_close(state[k], v, rtol=0, atol=0, msg=k)
    assert (tmp_path / "rank0" / "hf" / "tokenizer.json").exists()
