"""A worker's micro-batches: endless epochs over its Ray Dataset shard, resumable mid-epoch, and
the loss mask of instruction data turned into labels."""
from __future__ import annotations

from dataclasses import dataclass

import torch

MASK_COLUMN = "loss_mask"
"""The Ray Dataset column (and validation key) of instruction data: 1 = trained target, 0 = prompt."""


def masked_labels(ids: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Labels for the losses: the ids, with ``IGNORE_INDEX`` where ``loss_mask`` is 0 (the prompt
    tokens of instruction data). The losses shift them (position t predicts label t+1)."""
    from emo_ray.losses.common import IGNORE_INDEX

    return ids.masked_fill(loss_mask.to(ids.device) == 0, IGNORE_INDEX)


@dataclass
class MaskedBatch:
    """An instruction micro-batch: ``input_ids`` and their ``labels``; ``.to`` moves both (the
    step loop moves a batch as it moves a text batch's ids tensor)."""

    input_ids: torch.Tensor
    labels: torch.Tensor

    def to(self, device) -> "MaskedBatch":
        return MaskedBatch(self.input_ids.to(device), self.labels.to(device))


def compute_args(batch) -> tuple:
    """The positional arguments after ``engine`` of ``objective.compute``: ``(ids,)`` for text
    (every token a target), ``(ids, labels)`` for instruction data."""
    return (batch.input_ids, batch.labels) if isinstance(batch, MaskedBatch) else (batch,)


def micro_batches(shard, micro_batch: int, skip: int):
    """Endless ``(epoch, micro-batch)`` over the worker's shard, epoch after epoch; the first
    ``skip`` are dropped (resume in the middle of an epoch). A shard with a ``loss_mask`` column
    (instruction data) yields :class:`MaskedBatch` es, a text shard the ids tensor."""
    epoch = 0
    while True:
        n = 0
        for batch in shard.iter_torch_batches(batch_size=micro_batch, drop_last=True, dtypes=torch.long):
            if skip:
                skip -= 1
                continue
            n += 1
            if MASK_COLUMN in batch:
                yield epoch, MaskedBatch(batch["data"], masked_labels(batch["data"], batch[MASK_COLUMN]))
                continue
            yield epoch, batch["data"]
        if n == 0 and epoch > 0 and not skip:
            raise RuntimeError("the training shard is smaller than one micro-batch")
        epoch += 1
