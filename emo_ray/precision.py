"""Which floating-point format a run computes in: ``auto | fp32 | bf16 | fp16``.

``auto`` picks bf16 where the hardware multiplies it natively and fp32 otherwise:

* CUDA: ``torch.cuda.is_bf16_supported()`` (Ampere and newer).
* CPU: the ``avx512_bf16`` or ``amx_bf16`` instruction sets (``/proc/cpuinfo`` flags, else
  ``torch.backends.cpu.get_cpu_capability()`` naming AMX). Without them oneDNN emulates bf16
  and is *slower* than fp32, so auto stays fp32 there.

The choice is said once per process and device (a log line), not per batch. What bf16 means for
each caller: training keeps fp32 master weights and optimizer state and runs forward + loss under
``torch.autocast`` (CPU) or DeepSpeed's bf16 mode (CUDA); evaluation loads the weights in bf16
(inference only, nothing accumulates in them) and keeps log-softmax/NLL sums in fp32.
"""
from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_said: set[tuple[str, str, str]] = set()


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of this machine (empty when ``/proc/cpuinfo`` is unreadable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16() -> bool:
    """Native bf16 matrix multiply on this CPU: AVX512-BF16 or AMX."""
    flags = cpu_flags()
    if flags:
        return bool({"avx512_bf16", "amx_bf16"} & flags)
    try:  # no /proc/cpuinfo (macOS, containers hiding it): only AMX is visible from torch
        return "AMX" in torch.backends.cpu.get_cpu_capability().upper()
    except Exception:  # noqa: BLE001
        return False


def cuda_has_bf16() -> bool:
    try:
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    except Exception:  # noqa: BLE001 - no usable CUDA runtime (or a test double of one)
        return False


def device_type(device) -> str:
    return torch.device(device).type


def resolve(precision: str, device="cpu", *, what: str = "") -> str:
    """``auto`` -> ``bf16`` or ``fp32`` for ``device`` (``cpu``/``cuda``); other values pass
    through (``fp16`` is refused on CPU: no fast kernels there). Says the choice once."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    dev = device_type(device)
    if precision == "fp16" and dev == "cpu":
        raise ValueError("fp16 has no fast CPU kernels; use bf16 or fp32 on CPU")
    if precision != "auto":
        return precision
    has = cuda_has_bf16() if dev == "cuda" else cpu_has_bf16()
    chosen = "bf16" if has else "fp32"
    key = (what, dev, chosen)
    if key not in _said:
        _said.add(key)
        why = ("CUDA bf16 support" if dev == "cuda" else "avx512_bf16/amx_bf16 in the CPU flags") if has else \
              ("no CUDA bf16" if dev == "cuda" else "no avx512_bf16/amx_bf16 on this CPU")
        log.info("%sprecision auto -> %s on %s (%s)", f"{what}: " if what else "", chosen, dev, why)
    return chosen


def torch_dtype(precision: str, device="cpu", *, what: str = "") -> torch.dtype:
    """The torch dtype for ``precision`` (``auto`` resolved for ``device``)."""
    return _DTYPES[resolve(precision, device, what=what)]


def autocast(precision: str, device="cpu"):
    """``torch.autocast`` for a resolved low precision, a no-op context for fp32."""
    p = resolve(precision, device)
    if p == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type(device), dtype=_DTYPES[p])


__all__ = ["PRECISIONS", "autocast", "cpu_has_bf16", "cuda_has_bf16", "resolve", "torch_dtype"]
