"""DeepSpeed config from the typed config, and the CPU start-up fixes."""
from __future__ import annotations

import os
from dataclasses import dataclass

from emo_ray.config import Config


# How bf16 is run, per device (measured on this project's 2-core AMX/avx512_bf16 EPYC box):
# * GPU: DeepSpeed's bf16 mode (bf16 module weights, fp32 master weights and Adam state in the
#   ZeRO optimizer): the standard, and ZeRO-3 then partitions and gathers bf16 weights.
# * CPU: torch.autocast("cpu", bfloat16) around forward + loss, fp32 weights/grads/AdamW, DeepSpeed
#   bf16 off. DeepSpeed's bf16 mode does start on the CPU accelerator (ZeRO-2, gloo, torch_adam),
#   but it runs the *whole* network in bf16 (residual stream, norms, attention softmax, the hidden
#   states the loss sees) and reduces bf16 gradients; autocast puts only the matmuls in bf16 and
#   keeps softmax, EMO transport and the loss fp32 (tests/losses/test_bf16.py), for the same speed.
@dataclass(frozen=True)
class TrainPrecision:
    """``train.precision`` resolved once for the workers' device, and what each part of training
    does with it (DeepSpeed's modes, the weights' dtype, autocast)."""

    name: str
    """``fp32 | bf16 | fp16``: never ``auto``."""
    gpu: bool

    @property
    def deepspeed_bf16(self) -> bool:
        """DeepSpeed's bf16 mode (GPU only; CPUs use autocast, ``autocast_dtype``)."""
        return self.gpu and self.name == "bf16"

    @property
    def deepspeed_fp16(self) -> bool:
        return self.gpu and self.name == "fp16"

    @property
    def autocast_dtype(self):
        """``torch.bfloat16`` when a CPU run trains in bf16 (under autocast), else None."""
        import torch

        return torch.bfloat16 if not self.gpu and self.name == "bf16" else None

    @property
    def weights_dtype(self):
        """The dtype the model is loaded in: DeepSpeed's bf16/fp16 modes train 16-bit module
        weights; fp32 otherwise (CPU autocast keeps fp32 weights)."""
        import torch

        return torch.bfloat16 if self.deepspeed_bf16 else torch.float16 if self.deepspeed_fp16 else torch.float32

    @property
    def compute_dtype(self):
        """The dtype the matmuls run in (the MFU denominator's)."""
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name, torch.float32)

    def autocast(self):
        """The context forward + loss run in: CPU bf16 autocast, or nothing."""
        import contextlib

        import torch

        amp = self.autocast_dtype
        return torch.autocast("cpu", dtype=amp) if amp is not None else contextlib.nullcontext()

    def how(self) -> str:
        """How the low precision is run, for the one log line."""
        if self.autocast_dtype is not None:
            return "autocast, fp32 master weights"
        return "DeepSpeed bf16/fp16 mode" if self.name != "fp32" else ""


def train_precision(cfg: Config) -> TrainPrecision:
    """``train.precision`` resolved for the workers' device (``auto``: bf16 where the hardware
    has it, see ``emo_ray.precision``). Call once per worker and pass the result: ``auto`` is
    resolved where the workers compute, not on the driver (a CPU head node would say fp32)."""
    from emo_ray.precision import resolve

    gpu = cfg.ray.use_gpu
    return TrainPrecision(resolve(cfg.train.precision, "cuda" if gpu else "cpu", what="train.precision"), gpu)


def deepspeed_config(cfg: Config, precision: TrainPrecision | None = None) -> dict:
    """DeepSpeed's config; ``precision`` as the worker resolved it (default: resolved here)."""
    t = cfg.train
    precision = precision or train_precision(cfg)
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
        "bf16": {"enabled": precision.deepspeed_bf16},
        "fp16": {"enabled": precision.deepspeed_fp16},
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


def unscaled_grad_norm(norm: float | None, loss_scale: float | None, precision: TrainPrecision,
                       zero_stage: int) -> float | None:
    """The gradient norm of the loss, not of the loss-scaled gradients. Under fp16 at ZeRO stage 0
    DeepSpeed wraps torch's AdamW in ``FP16_UnfusedOptimizer``, whose recorded norm (like the norm
    of the module's gradients) is taken before unscaling; ZeRO 1-3 and the bf16 / fp32 paths
    already report it unscaled. ``loss_scale``: the scale the step's backward used (read before
    ``engine.step()``, which may change it)."""
    if norm is None or not (precision.deepspeed_fp16 and zero_stage == 0 and loss_scale):
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
