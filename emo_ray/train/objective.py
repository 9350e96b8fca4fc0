"""Bind the configured objective to a model: which loss, which cost embedding, which path."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch

from emo_ray.config import Config
from emo_ray.losses import LossOutput, get_loss, get_spec, has_chunked_form
from emo_ray.losses.emo import normalize_cost_embedding
from emo_ray.models.cost_embedding import fixed_cost_embedding, gathered, head_weight


def chunked_is_exact(cfg: Config, model) -> bool:
    """The chunked path multiplies hidden states by the head weight itself, so it is exact only
    when logits are exactly ``h @ W.T (+ b)``: a plain linear head, no logit soft-capping, and a
    loss with a chunked form. Any ZeRO stage: under ZeRO-3 the loop runs as the head's forward
    (``_as_forward``), so DeepSpeed gathers the partitioned head for it and takes its gradient.

    Not under fp16: the chunked kernel computes the logit gradient in the forward pass and would
    store it in fp16 *before* DeepSpeed's loss scale reaches it in backward, so entries below
    fp16's subnormal range (p < ~1e-4 at a scale of 1) become 0 and the rest lose precision. The
    materialised loss backpropagates the scaled loss through an fp32 softmax instead."""
    head = model.get_output_embeddings()
    return (
        cfg.train.precision != "fp16"
        and isinstance(head, torch.nn.Linear)
        and getattr(model.config, "final_logit_softcapping", None) is None
        and has_chunked_form(cfg.train.loss)
    )


@contextlib.contextmanager
def _as_forward(module: torch.nn.Module, fn: Callable):
    """Make ``module(...)`` run ``fn`` instead of ``module.forward`` (an instance attribute
    shadows the class's method; removed on exit). Calling the module, not ``fn``, is the point:
    ``nn.Module.__call__`` runs the hooks DeepSpeed's ZeRO-3 installs on every submodule, which
    gather the module's partitioned parameters before the call and release them after, gather
    them again before the call's backward, and hand their gradients to ZeRO's reduce-scatter
    (DeepSpeed 0.19 ``parameter_offload.py``). Without ZeRO-3 there are no such hooks and the call
    is ``fn(...)``."""
    if "forward" in vars(module):
        raise RuntimeError(f"{type(module).__name__}.forward is already replaced")
    module.forward = fn
    try:
        yield module
    finally:
        del module.forward


@dataclass
class Objective:
    name: str
    chunked: bool
    compute: Callable[..., LossOutput]
    """``compute(engine, input_ids, labels=None)``: ``engine`` is the DeepSpeed engine (or a plain
    module); ``labels`` ``(B, T)`` are the targets with ``IGNORE_INDEX`` where none is trained (the
    prompt of instruction data), default ``input_ids`` (every token a target). The next-token shift
    happens inside the losses, as for the ids."""
    cost_embedding_shape: tuple = ()
    """``(V, d)`` of the fixed cost embedding, ``()`` when there is none (adaptive, non-EMO)."""


def build_objective(cfg: Config, model, *, cost_model_path: str | None = None) -> Objective:
    """Return ``compute(engine, input_ids, labels=None) -> LossOutput`` for the configured loss.

    ``fixed`` cost embedding: copied once here, before any update (paper 4.2.1), or with
    ``train.cost_embedding_model`` read once from that model's head (``cost_model_path``: its
    materialised folder, which the driver passes; default: materialised here). ``adaptive``:
    the live head weight, read at every step (and gathered under ZeRO-3).
    """
    t = cfg.train
    chunked = _use_chunked(cfg, model)
    fixed = _fixed_cost_embedding(cfg, model, cost_model_path)
    compute = _chunked_compute(t, fixed) if chunked else _reference_compute(t, fixed)
    return Objective(t.loss, chunked, compute, tuple(fixed.shape) if fixed is not None else ())


def _use_chunked(cfg: Config, model) -> bool:
    """``train.loss_impl``: ``chunked`` (refused where it is not exact), ``reference``, or
    ``auto``: chunked exactly where it is exact."""
    t = cfg.train
    exact = chunked_is_exact(cfg, model)
    if t.loss_impl == "chunked" and not exact:
        raise ValueError(
            f"train.loss_impl=chunked is not exact for this setup (loss {t.loss!r}, head "
            f"{type(model.get_output_embeddings()).__name__}, logit soft-capping "
            f"{getattr(model.config, 'final_logit_softcapping', None)}, precision {t.precision}); "
            "use 'reference' or 'auto'"
        )
    return t.loss_impl == "chunked" or (t.loss_impl == "auto" and exact)


def _fixed_cost_embedding(cfg: Config, model, cost_model_path: str | None):
    """The fixed cost embedding ``(V, d)``: the model's own pre-trained head, copied before any
    update, or ``train.cost_embedding_model``'s head; None for an adaptive one or none at all."""
    t = cfg.train
    if not get_spec(t.loss).needs_cost_embedding or t.cost_embedding != "fixed":
        return None
    if not t.cost_embedding_model:
        return fixed_cost_embedding(model)
    from emo_ray.models.cost_embedding import load_other_head

    if cost_model_path is None:
        from emo_ray.models.loading import materialize

        cost_model_path = materialize(t.cost_embedding_model)
    own = head_weight(model)
    return load_other_head(cost_model_path, vocab_size=getattr(own, "ds_shape", own.shape)[0],
                           dtype=own.dtype, device=own.device)


def _reference_compute(t, fixed) -> Callable[..., LossOutput]:
    """The materialised path: the model's logits, then the loss."""
    spec = get_spec(t.loss)
    on_device: dict = {}  # the fixed table on the compute device, copied once

    def cost_embedding(module, device):
        if not spec.needs_cost_embedding:
            return None
        if fixed is not None:
            # At ZeRO 0-2 ``fixed`` was copied from the model before DeepSpeed moved it to the
            # device: move it once, not at every micro-step (issue 27.8), and row-normalise it once
            # for the materialised loss (the chunked path prepares its own copy once).
            if device not in on_device:
                on_device[device] = normalize_cost_embedding(fixed.to(device))
            return on_device[device]
        weight = head_weight(module)
        with gathered(weight):
            return weight.detach().clone() if hasattr(weight, "ds_id") else weight.detach()

    def compute(engine, input_ids, labels=None):
        logits = engine(input_ids=input_ids).logits
        cost = cost_embedding(getattr(engine, "module", engine), logits.device)
        fn = get_loss(t.loss, cost_embedding=cost, **t.loss_kwargs)
        return fn(logits, input_ids if labels is None else labels)

    return compute


def _chunked_compute(t, fixed) -> Callable[..., LossOutput]:
    """The chunked path (``emo_ray.losses.chunked``): the logits are never materialised."""
    from emo_ray.losses.chunked import CostEmbedding, chunked_loss

    spec = get_spec(t.loss)
    fixed_table = CostEmbedding(fixed) if fixed is not None else None  # prepared at first use, then reused

    def compute(engine, input_ids, labels=None):
        """``engine(input_ids)`` with the model's forward replaced by body + chunked loss, and
        the chunk loop run as the output head's forward: the same module calls, hooks and
        engine bookkeeping as the materialised path (``engine(...).logits``). Under ZeRO-3
        the head's hooks gather its weight for the loop (and release it after), and its
        gradient, computed inside the loop, reaches the partitioned parameter through
        autograd like any module's; the model's hooks close the step's parameter trace."""
        module = getattr(engine, "module", engine)
        head = module.get_output_embeddings()
        out: dict = {}
        targets = input_ids if labels is None else labels  # IGNORE_INDEX positions: skipped

        def head_forward(hidden):
            # Inside the head's call its weight is whole even under ZeRO-3, so the adaptive
            # cost embedding is that weight, detached: no copy, no second gather.
            cost = None
            if spec.needs_cost_embedding:
                cost = fixed_table if fixed_table is not None else head.weight.detach()
            res = chunked_loss(
                t.loss, hidden, head.weight, targets, head_bias=head.bias,
                cost_embedding=cost, chunk_size=t.loss_chunk_size, **t.loss_kwargs,
            )
            out["res"] = res
            return res.loss

        def model_forward(input_ids):
            hidden = module.base_model(input_ids=input_ids).last_hidden_state
            return head(hidden)

        with _as_forward(module, model_forward), _as_forward(head, head_forward):
            # ZeRO-3's hooks wrap the loss in autograd functions: keep what the call returns.
            loss = engine(input_ids=input_ids)
        res = out["res"]
        return LossOutput(loss, res.n_tokens, res.metrics)

    return compute
