"""Shared pieces of every objective: the HF label shift, the token mask, the return type, the
per-token terms a mixing formula is written in, and the value ranges of hyperparameters."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable

import torch

IGNORE_INDEX = -100


@dataclass
class LossOutput:
    """What every objective returns.

    ``loss`` is the scalar to back-propagate, ``n_tokens`` the number of target tokens it averages
    over, and ``metrics`` detached scalars for logging (for EMO: its MLE and EMO parts).
    """

    loss: torch.Tensor
    n_tokens: int
    metrics: dict[str, float] = field(default_factory=dict)


def shift_and_flatten(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hugging Face convention: position t predicts label t+1.

    Args:
        logits: ``(B, T, V)``.
        labels: ``(B, T)``, same positions as ``input_ids``; ``ignore_index`` marks no target.

    Returns:
        ``(N, V)`` logits, ``(N,)`` labels with ignored positions replaced by 0 (safe to gather),
        and the ``(N,)`` float mask of real targets, with ``N = B * (T - 1)``.
    """
    if logits.dim() != 3 or labels.dim() != 2 or logits.shape[:2] != labels.shape:
        raise ValueError(
            f"expected logits (B, T, V) and labels (B, T); got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    vocab = logits.shape[-1]
    flat_logits = logits[:, :-1, :].reshape(-1, vocab)
    flat_labels = labels[:, 1:].reshape(-1)
    mask = flat_labels != ignore_index
    safe_labels = torch.where(mask, flat_labels, torch.zeros_like(flat_labels))
    return flat_logits, safe_labels, mask


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """At least fp32 (bf16/fp16 lose too much in log-softmax); fp64 stays fp64."""
    return torch.promote_types(dtype, torch.float32)


def matmul_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the matmuls on ``x`` run in: the active ``torch.autocast`` dtype of ``x``'s
    device when it is narrower than ``x`` (bf16 training with fp32 master weights), else
    ``x.dtype``. Softmax, EMO transport sums and the loss stay in :func:`compute_dtype`."""
    dev = x.device.type
    if x.dtype == torch.float32 and torch.is_autocast_enabled(dev):  # autocast leaves fp64 alone
        low = torch.get_autocast_dtype(dev)
        if low.itemsize < x.dtype.itemsize:
            return low
    return x.dtype


def token_logprobs(flat_logits: torch.Tensor, safe_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-softmax in at least fp32 and the target's log p, ``(N,)``."""
    logp = torch.log_softmax(flat_logits.to(compute_dtype(flat_logits.dtype)), dim=-1)
    return logp, logp.gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real targets. With no target at all it is an exact 0 that still carries a graph,
    so that backward runs and every parameter gets a (zero) gradient: a rank that skipped backward
    would hang the distributed gradient all-reduce."""
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp_min(1.0)


# --- the per-token form every objective is written in -----------------------------------------

Mix = Callable[..., "tuple[torch.Tensor, dict[str, torch.Tensor]]"]
"""An objective's formula: ``mix(mle, demd, mask, **hparams) -> (loss, metrics)``.

``mle = -log p_t(y_t)`` and ``demd`` (EMO's Eq. 14 term, ``None`` for the other objectives) are
``(N,)`` per-token tensors, ``mask`` the ``(N,)`` bool of real targets; ``loss`` is the scalar
mean over them, ``metrics`` detached scalars. Both executions call the same function: the
materialised loss on terms from full ``(N, V)`` logits, ``emo_ray.losses.chunked`` on terms it
computes chunk by chunk (and differentiates the mix on the ``(N,)`` vectors only). So a mix must be
a function of those vectors alone, with every stop-gradient written in it. A mix whose per-token
gradient depends on other tokens (batch means inside the formula) takes ``level='batch'``: the
chunked path then computes all terms before any gradient (two passes) instead of one.
"""


def target_nll(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor]:
    """Materialised ``mle_t = -log p_t(y_t)`` ``(N,)`` and the ``(N,)`` target mask, from
    ``(B, T, V)`` logits and ``(B, T)`` labels (HF shift applied)."""
    flat_logits, safe_labels, mask = shift_and_flatten(logits, labels, ignore_index)
    _, logp_y = token_logprobs(flat_logits, safe_labels)
    return -logp_y, mask


def mixed_output(mixed: tuple[torch.Tensor, dict[str, torch.Tensor]], mask: torch.Tensor) -> LossOutput:
    """A mix's ``(loss, metrics)`` as the :class:`LossOutput` every objective returns."""
    loss, metrics = mixed
    return LossOutput(loss, int(mask.sum()), {k: float(v) for k, v in metrics.items()})


# --- hyperparameter ranges, declared in the loss signatures -------------------------------------


@dataclass(frozen=True)
class Interval:
    """A numeric range for a hyperparameter, put in its annotation
    (``gamma: Annotated[float, Interval(0, 1)] = 0.8``) and checked when a config is loaded."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False
    optional: bool = False  # None is also valid

    def contains(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below  # NaN fails both

    def __str__(self) -> str:
        def num(x):
            return "inf" if x == math.inf else "-inf" if x == -math.inf else f"{x:g}"

        left = "(" if self.lo_open or self.lo == -math.inf else "["
        right = ")" if self.hi_open or self.hi == math.inf else "]"
        text = f"{left}{num(self.lo)}, {num(self.hi)}{right}"
        return text + " or None" if self.optional else text


@dataclass(frozen=True)
class OneOf:
    """A finite set of valid values (EMO's ``mode``, ``level``)."""

    values: tuple

    def contains(self, value: Any) -> bool:
        return any(value == v and type(value) is type(v) for v in self.values)

    def __str__(self) -> str:
        return "{" + ", ".join(repr(v) for v in self.values) + "}"


Unit = Annotated[float, Interval(0.0, 1.0)]
OptionalUnit = Annotated[float | None, Interval(0.0, 1.0, optional=True)]
OptionalPositive = Annotated[float | None, Interval(0.0, lo_open=True, optional=True)]
Flag = Annotated[bool, OneOf((False, True))]
