"""DeepSpeed config from the typed config, and the CPU start-up fixes."""
from __future__ import annotations

import os

from emo_ray.config import Config


def train_precision(cfg: Config) -> str:
    """``train.precision`` resolved for the workers' device (``auto``: bf16 where the hardware
    has it, see ``emo_ray.precision``)."""
    from emo_ray.precision import resolve

    return resolve(cfg.train.precision, "cuda" if cfg.ray.use_gpu else "cpu", what="train.precision")


# How bf16 is run, per device (measured on this project's 2-core AMX/avx512_bf16 EPYC box):
# * GPU: DeepSpeed's bf16 mode (bf16 module weights, fp32 master weights and Adam state in the
#   ZeRO optimizer): the standard, and ZeRO-3 then partitions and gathers bf16 weights.
# * CPU: torch.autocast("cpu", bfloat16) around forward + loss, fp32 weights/grads/AdamW, DeepSpeed
#   bf16 off. DeepSpeed's bf16 mode does start on the CPU accelerator (ZeRO-2, gloo, torch_adam),
#   but it runs the *whole* network in bf16 (residual stream, norms, attention softmax, the hidden
#   states the loss sees) and reduces bf16 gradients; autocast puts only the matmuls in bf16 and
#   keeps softmax, EMO transport and the loss fp32 (tests/losses/test_bf16.py), for the same speed.
def use_bf16(cfg: Config) -> bool:
    """DeepSpeed's bf16 mode (GPU only; CPUs use autocast, ``cpu_autocast_dtype``)."""
    return cfg.ray.use_gpu and train_precision(cfg) == "bf16"


def use_fp16(cfg: Config) -> bool:
    return cfg.ray.use_gpu and train_precision(cfg) == "fp16"


def cpu_autocast_dtype(cfg: Config):
    """``torch.bfloat16`` when a CPU run trains in bf16 (under autocast), else None."""
    import torch

    return torch.bfloat16 if not cfg.ray.use_gpu and train_precision(cfg) == "bf16" else None


def deepspeed_config(cfg: Config) -> dict:
    t = cfg.train
    zero: dict = {"stage": t.zero_stage}
    if t.zero_stage == 3:
        # Lets the final save gather a consolidated 16-bit copy of the weights.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if not cfg.ray.use_gpu:
        zero["overlap_comm"] = False  # no CUDA streams to overlap with on CPU
    return {
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "gradient_clipping": t.clip_grad_norm,
        "bf16": {"enabled": use_bf16(cfg)},
        "fp16": {"enabled": use_fp16(cfg)},
        "zero_optimization": zero,
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": t.lr,
                "betas": list(t.betas),
                "eps": 1e-8,
                "weight_decay": t.weight_decay,
                **optimizer_impl(cfg),
            },
        },
        "steps_per_print": 10**9,  # we log ourselves
        "wall_clock_breakdown": False,
    }


def optimizer_impl(cfg: Config) -> dict:
    """torch's AdamW everywhere, never DeepSpeed's FusedAdam: that one is a CUDA extension
    JIT-built at start-up (nvcc must be in the image, and DeepSpeed refuses a CUDA major version
    that differs from the torch wheel's; ~100 s even on CPU). DeepSpeed passes the remaining params
    to ``torch.optim.AdamW`` when ``torch_adam`` is set; ``train.optimizer_impl`` picks its kernel.
    ``fused`` (the default) is one pass over weights, gradients and both moments, compiled in the
    wheel for CUDA (issue 27.5) and CPU; torch's own CPU default is the single-tensor loop, ~6
    passes over 135M fp32 values per step, which made the step 29-40 % of a table1-cpu training
    step (issue 26; benchmarks/README.md "Optimizer step")."""
    impl = cfg.train.optimizer_impl
    return {"torch_adam": True, "fused": impl == "fused", "foreach": impl == "foreach"}


def unscaled_grad_norm(norm: float | None, loss_scale: float | None, cfg: Config) -> float | None:
    """The gradient norm of the loss, not of the loss-scaled gradients. Under fp16 at ZeRO stage 0
    DeepSpeed wraps torch's AdamW in ``FP16_UnfusedOptimizer``, whose recorded norm (like the norm
    of the module's gradients) is taken before unscaling; ZeRO 1-3 and the bf16 / fp32 paths
    already report it unscaled. ``loss_scale``: the scale the step's backward used (read before
    ``engine.step()``, which may change it)."""
    if norm is None or not (use_fp16(cfg) and cfg.train.zero_stage == 0 and loss_scale):
        return norm
    return float(norm) / float(loss_scale)


def prepare_deepspeed_env(use_gpu: bool) -> None:
    """Call in the worker before ``import deepspeed``.

    On CPU: name the accelerator (silences the probe warning) and skip the shared-memory
    collective op, which DeepSpeed JIT-compiles at every start (45-90 s here); torch's gloo
    all-reduce does the same job for a 2-process CPU run.
    """
    if not use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import importlib

    # importlib, not `import deepspeed.comm.torch as m`: the package re-exports PyTorch under the
    # name `torch`, so attribute-style import would hand back PyTorch itself.
    ds_torch_comm = importlib.import_module("deepspeed.comm.torch")
    if not use_gpu:
        ds_torch_comm.build_shm_op = lambda: None
