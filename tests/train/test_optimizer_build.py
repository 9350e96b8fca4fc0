"""The optimizer a GPU run builds (issue 27.5), checked without a GPU: DeepSpeed's own choice of
optimizer class is taken from its engine's code path for the config we write, so a config that
would JIT-build FusedAdam at start-up (nvcc in the image, matching CUDA major) fails here."""
from __future__ import annotations

import pytest
import torch

from emo_ray import precision
from emo_ray.config import load_config
from emo_ray.train.deepspeed_setup import deepspeed_config, train_precision, unscaled_grad_norm


@pytest.fixture
def gpu_configs(monkeypatch):
    monkeypatch.setattr(precision, "cuda_has_bf16", lambda: True)
    return {
        "bf16 ZeRO-3": load_config(None, ["ray.use_gpu=true", "train.zero_stage=3"]),
        "bf16 ZeRO-2": load_config(None, ["ray.use_gpu=true", "train.zero_stage=2"]),
        "fp16 ZeRO-0": load_config(None, ["ray.use_gpu=true", "train.precision=fp16", "train.zero_stage=0"]),
    }


def _deepspeeds_optimizer(params: dict):
    """What ``DeepSpeedEngine._configure_basic_optimizer`` builds for an ``AdamW`` section with
    these params: its ``get_optimizer_configuration`` choice, instantiated on a CPU parameter."""
    from deepspeed.runtime.engine import DeepSpeedEngine

    rest = dict(params)
    if not rest.get("torch_adam"):
        pytest.fail("without torch_adam DeepSpeed builds its FusedAdam, a CUDA extension compiled at start-up")
    cls, extra = DeepSpeedEngine.get_optimizer_configuration(None, rest, True)  # the torch_adam path uses no engine state
    p = torch.nn.Parameter(torch.ones(4))
    return cls([p], **rest, **extra), p


def test_gpu_runs_use_torchs_fused_adamw_and_never_build_a_deepspeed_op(gpu_configs, monkeypatch):
    from deepspeed.ops.op_builder.builder import OpBuilder

    def no_jit(*_a, **_k):
        raise AssertionError("a DeepSpeed op was loaded (JIT build on a GPU node)")

    monkeypatch.setattr(OpBuilder, "load", no_jit)
    monkeypatch.setattr(OpBuilder, "jit_load", no_jit)
    for name, cfg in gpu_configs.items():
        params = deepspeed_config(cfg)["optimizer"]["params"]
        opt, p = _deepspeeds_optimizer(params)
        assert type(opt) is torch.optim.AdamW, name
        assert opt.defaults["fused"] is True, name  # one kernel per step on the GPU, compiled in the wheel
        p.grad = torch.full_like(p, 0.5)
        opt.step()  # torch's fused AdamW also runs on CPU: the kwargs are ones it accepts
        assert torch.all(p < 1), name


def test_cpu_runs_use_torchs_fused_adamw_too():
    """Issue 26: the CPU default is torch's fused AdamW (one pass instead of the single-tensor
    loop's several); equality with the loop is tested in test_cpu_optimizer.py."""
    params = deepspeed_config(load_config(None, []))["optimizer"]["params"]
    opt, _ = _deepspeeds_optimizer(params)
    assert type(opt) is torch.optim.AdamW and opt.defaults.get("fused") is True


def test_the_fp16_zero0_grad_norm_is_divided_by_the_loss_scale(gpu_configs):
    """DeepSpeed's FP16_UnfusedOptimizer (wrapping torch's AdamW at ZeRO-0) records the norm of
    the scaled gradients; ZeRO 1-3 and bf16 report it unscaled already."""
    def unscaled(norm, scale, cfg):  # the precision resolved once, as the worker does
        return unscaled_grad_norm(norm, scale, train_precision(cfg), cfg.train.zero_stage)

    assert unscaled(2048.0, 1024.0, gpu_configs["fp16 ZeRO-0"]) == 2.0
    assert unscaled(None, 1024.0, gpu_configs["fp16 ZeRO-0"]) is None
    assert unscaled(2.0, None, gpu_configs["fp16 ZeRO-0"]) == 2.0  # no scaler, nothing to undo
    assert unscaled(2.0, 1024.0, gpu_configs["bf16 ZeRO-2"]) == 2.0
    fp16_zero2 = load_config(None, ["ray.use_gpu=true", "train.precision=fp16", "train.zero_stage=2"])
    assert unscaled(2.0, 1024.0, fp16_zero2) == 2.0
