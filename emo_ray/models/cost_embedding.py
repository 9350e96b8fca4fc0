"""The cost embedding E of EMO (paper Sec. 3.3, 4.2.1): rows of the output head.

``fixed``: a frozen copy of the pre-trained head taken once before training.
``adaptive``: the live head at every step (detached by the loss).
"""
from __future__ import annotations

import contextlib

import torch

COST_EMBEDDINGS = ("fixed", "adaptive")


def head_weight(model) -> torch.nn.Parameter:
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embeddings to take a cost embedding from")
    return head.weight


@contextlib.contextmanager
def gathered(param: torch.nn.Parameter):
    """Under ZeRO-3 a parameter reads as shape (0,) outside its module's forward: gather it."""
    if hasattr(param, "ds_id"):
        import deepspeed

        with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
            yield param
    else:
        yield param


def fixed_cost_embedding(model) -> torch.Tensor:
    """A detached copy of the head weight, gathered if ZeRO-3 partitioned it."""
    weight = head_weight(model)
    with gathered(weight):
        return weight.detach().clone()
