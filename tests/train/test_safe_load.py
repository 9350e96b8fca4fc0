"""Resume loads DeepSpeed checkpoints with torch.load(weights_only=True) (emo_ray.train.safe_load)."""
from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from emo_ray.train.safe_load import UnsafeCheckpoint, weights_only_torch_load


class Planted:
    """Unpickling this runs ``Path.touch`` on a marker file: what a tampered checkpoint could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_a_planted_object_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "mp_rank_00_model_states.pt"
    torch.save({"module": {"w": torch.ones(2)}, "extra": Planted(marker)}, ckpt)

    with weights_only_torch_load(), pytest.raises(UnsafeCheckpoint, match="refusing to resume from .*mp_rank_00"):
        torch.load(ckpt, map_location="cpu", weights_only=False)  # what DeepSpeed asks for
    assert not marker.exists()
    assert torch.load is not None and torch.load.__name__ == "load"  # restored after the block

    torch.load(ckpt, weights_only=False)  # the unguarded load DeepSpeed does would run it
    assert marker.exists()


def test_plain_tensors_load_unchanged(tmp_path):
    ckpt = tmp_path / "x.pt"
    torch.save({"w": torch.arange(4.0), "step": 3, "name": "a", "shape": torch.Size([2, 2])}, ckpt)
    with weights_only_torch_load():
        got = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert torch.equal(got["w"], torch.arange(4.0)) and got["step"] == 3 and got["shape"] == torch.Size([2, 2])


ROUND_TRIP = textwrap.dedent("""
    import os, sys, torch
    os.environ.update(MASTER_ADDR="127.0.0.1", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    import deepspeed
    from emo_ray.train.safe_load import weights_only_torch_load
    torch.distributed.init_process_group("gloo")
    stage, path = int(sys.argv[1]), sys.argv[2]

    def engine():
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
        opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        cfg = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1,
               "zero_optimization": {"stage": stage}, "zero_allow_untested_optimizer": True}
        return deepspeed.initialize(model=m, optimizer=opt, config=cfg, lr_scheduler=sched)[0]

    a = engine()
    for _ in range(2):
        loss = a(torch.ones(2, 8)).sum(); a.backward(loss); a.step()
    a.save_checkpoint(path, tag="t", client_state={"emo_ray_state": {"step": 2, "micro_batches": 2}})
    b = engine()
    with weights_only_torch_load():
        _, client = b.load_checkpoint(path, tag="t", load_module_strict=True)
    assert client["emo_ray_state"] == {"step": 2, "micro_batches": 2}, client
    with deepspeed.zero.GatheredParameters(list(a.module.parameters()) + list(b.module.parameters())):
        for p, q in zip(a.module.parameters(), b.module.parameters()):
            assert torch.equal(p, q)
    # the optimizer state came back too: one more identical step on both
    for e in (a, b):
        loss = e(torch.ones(2, 8)).sum(); e.backward(loss); e.step()
    with deepspeed.zero.GatheredParameters(list(a.module.parameters()) + list(b.module.parameters())):
        for p, q in zip(a.module.parameters(), b.module.parameters()):
            assert torch.equal(p, q)
    print("ROUND_TRIP_OK")
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_real_deepspeed_checkpoints_resume_under_weights_only(tmp_path, stage):
    env = {**os.environ, "MASTER_PORT": str(_free_port()), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", ROUND_TRIP, str(stage), str(tmp_path / "ck")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert "ROUND_TRIP_OK" in out.stdout, (out.stdout[-2000:], out.stderr[-4000:])
