"""Bind the configured objective to a model: which loss, which cost embedding, which path."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from emo_ray.config import Config
from emo_ray.losses import LossOutput, get_loss, get_spec
from emo_ray.models.cost_embedding import fixed_cost_embedding, gathered, head_weight


def _chunked_available(name: str) -> bool:
    try:
        from emo_ray.losses.chunked import CHUNKED_SUPPORTED
    except ImportError:
        return False
    return name in CHUNKED_SUPPORTED


def chunked_is_exact(cfg: Config, model) -> bool:
    """The chunked path multiplies hidden states by the head weight itself, so it is exact only
    when logits are exactly ``h @ W.T (+ b)`` and the weight is not partitioned (ZeRO-3)."""
    head = model.get_output_embeddings()
    return (
        isinstance(head, torch.nn.Linear)
        and getattr(model.config, "final_logit_softcapping", None) is None
        and cfg.train.zero_stage < 3
        and _chunked_available(cfg.train.loss)
    )


@dataclass
class Objective:
    name: str
    chunked: bool
    compute: Callable[[torch.nn.Module, torch.Tensor], LossOutput]
    """``compute(engine, input_ids)``: ``engine`` is the DeepSpeed engine (or a plain module)."""


def build_objective(cfg: Config, model) -> Objective:
    """Return ``compute(engine, input_ids) -> LossOutput`` for the configured loss.

    ``fixed`` cost embedding: copied once here, before any update (paper 4.2.1). ``adaptive``:
    the live head weight, read at every step (and gathered under ZeRO-3).
    """
    t = cfg.train
    spec = get_spec(t.loss)
    impl = t.loss_impl
    exact = chunked_is_exact(cfg, model)
    if impl == "chunked" and not exact:
        raise ValueError(
            f"train.loss_impl=chunked is not exact for this setup (loss {t.loss!r}, ZeRO stage "
            f"{t.zero_stage}, head {type(model.get_output_embeddings()).__name__}); use 'reference' or 'auto'"
        )
    chunked = impl == "chunked" or (impl == "auto" and exact)
    fixed = None
    if spec.needs_cost_embedding and t.cost_embedding == "fixed":
        fixed = fixed_cost_embedding(model)

    def cost_embedding(module):
        if not spec.needs_cost_embedding:
            return None
        if fixed is not None:
            return fixed
        weight = head_weight(module)
        with gathered(weight):
            return weight.detach().clone() if hasattr(weight, "ds_id") else weight.detach()

    if chunked:
        from emo_ray.losses.chunked import chunked_loss

        def compute(engine, input_ids):
            module = getattr(engine, "module", engine)
            hidden = module.base_model(input_ids=input_ids).last_hidden_state
            head = module.get_output_embeddings()
            return chunked_loss(
                t.loss, hidden, head.weight, input_ids, head_bias=head.bias,
                cost_embedding=cost_embedding(module), chunk_size=t.loss_chunk_size, **t.loss_kwargs,
            )
    else:

        def compute(engine, input_ids):
            logits = engine(input_ids=input_ids).logits
            fn = get_loss(t.loss, cost_embedding=cost_embedding(getattr(engine, "module", engine)), **t.loss_kwargs)
            return fn(logits, input_ids)

    return Objective(t.loss, chunked, compute)
