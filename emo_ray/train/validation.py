"""Validation loss of the model being trained, split across the ranks."""
from __future__ import annotations

import math

import torch

from emo_ray.train.batches import MASK_COLUMN, masked_labels


@torch.no_grad()
def validate(engine, val_blocks, rank: int, world: int, micro_batch: int) -> dict:
    """Token-level NLL on the validation blocks, split across ranks. Every rank runs the same
    number of forwards (ZeRO-3 gathers parameters collectively); padding rows weigh zero.

    ``val_blocks``: the ``(n, T)`` ids, or for instruction data ``{"data": ids, "loss_mask":
    mask}``, whose prompt tokens are then no targets (the training loss's mask)."""
    import torch.distributed as dist

    from emo_ray.losses.common import shift_and_flatten, token_logprobs

    val_mask = None
    if isinstance(val_blocks, dict):
        val_blocks, val_mask = val_blocks["data"], val_blocks[MASK_COLUMN]
    engine.eval()
    n = len(val_blocks)
    per_rank = -(-n // world) if n else 0
    idx = list(range(rank, n, world))
    nll_sum = torch.zeros((), dtype=torch.float64)
    tok_sum = torch.zeros((), dtype=torch.float64)
    for i in range(0, per_rank, micro_batch):
        rows = idx[i : i + micro_batch]
        real = len(rows)
        rows = rows + [0] * (min(micro_batch, per_rank - i) - real)  # pad with a dummy block
        if not rows:
            rows, real = [0], 0
        ids = torch.as_tensor(val_blocks[rows], dtype=torch.long, device=engine.device)
        logits = engine(input_ids=ids).logits
        targets = ids if val_mask is None else masked_labels(ids, torch.as_tensor(val_mask[rows]))
        flat, labels, mask = shift_and_flatten(logits[:real], targets[:real]) if real else (None, None, None)
        if real:
            _, logp_y = token_logprobs(flat, labels)
            nll_sum += (-logp_y[mask]).double().sum().cpu()
            tok_sum += mask.sum().double().cpu()
    stats = torch.stack([nll_sum, tok_sum]).to(engine.device)  # NCCL on GPU reduces device tensors only
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(stats)
    stats = stats.cpu()
    engine.train()
    nll = (stats[0] / stats[1].clamp_min(1)).item()
    return {"val_loss": nll, "val_ppl": math.exp(min(nll, 50.0)), "val_tokens": stats[1].item()}
