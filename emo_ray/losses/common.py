"""Shared pieces of every objective: the HF label shift, the token mask, the return type."""
from __future__ import annotations

from dataclasses import dataclass, field

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
