r"""Every registered objective without ever materialising the ``(tokens x V)`` logits.

    from emo_ray.losses.chunked import chunked_loss
    hidden = model.model(input_ids).last_hidden_state              # (B, T, d)
    out = chunked_loss("emo", hidden, model.lm_head.weight, labels,
                       cost_embedding=frozen_head)                  # LossOutput
    out.loss.backward()

equals ``get_loss(name, cost_embedding=...)(hidden @ W.T + b, labels)`` in value, gradients (hidden
states, head weight, bias) and metrics, while holding only ``chunk_size x V`` buffers.

How. Each objective is its registry entry's mix (``LOSSES[name].mix``, the same function the
materialised loss calls) of two per-token terms: ``mle_t = -log p_t(y_t)`` and, for EMO, the DEMD
bound ``emo_t = 1 - sum_v p_v <Ê_y, Ê_v>`` (Eq. 14); only how the terms are computed differs.
Their logit gradients are closed-form, ``p - 1_y`` and ``-p (c - s)``, so each chunk's gradient
w.r.t. hidden states and head weight is computed right after its forward, from the per-token
weights ``g = dL/d(term)`` (``_chunked_combine``, ``_chunked_kernel``). Nothing chunk-sized survives the chunk;
autograd only keeps the finished ``(N, d)``/``(V, d)`` gradients and backward scales them.

* Per-token weightings (mle, Eq. 16 tailr, tvd, Eq. 17 mixce, Eq. 18 emo per token): ``g`` of a
  token depends on that token only, so one pass: 2 logits-sized matmuls forward (3 for EMO, the
  extra one is ``Ê_y Ê^T``), 2 for the gradients.
* Batch-level weighting (``emo_batch``, Eq. 18 as printed): ``g`` depends on batch means of the
  terms, which exist only after all chunks. Exactly: a first pass computes the per-token terms
  only, autograd of the reference weighting on the ``(N,)`` vectors gives every token's ``g``,
  a second pass recomputes each chunk and produces its gradient (2 extra matmuls).

Numerics follow the reference: logits in the input dtype, softmax and EMO in fp32 (fp64 stays
fp64), gradients returned in the input dtype, head-weight gradient accumulated across chunks in
the accumulation dtype. The cost embedding is always detached. Under ``torch.autocast`` (bf16
training with fp32 weights) the logits-sized matmuls (logits, cost rows ``Ê_y E^T``, both
gradient matmuls) run in the autocast dtype as the materialised loss's would, while softmax, the
EMO transport sums ``sum_v p_v c_v``, the mix and the accumulated head gradient stay fp32; the
gradients come back in the dtype of the fp32 inputs (``common.matmul_dtype``).
"""
from __future__ import annotations

from typing import Any

import torch

from emo_ray.losses import LOSSES, check_hparams, get_spec, has_chunked_form, hyperparameters
from emo_ray.losses._chunked_combine import token_weights
from emo_ray.losses._chunked_kernel import Workspace, chunk_terms, logit_grad
from emo_ray.losses.common import IGNORE_INDEX, LossOutput, matmul_dtype

# The objectives registered at import with a per-token mix (all built-in ones); read from the
# registry, never listed here. For entries registered later (plugins) ask has_chunked_form(name).
CHUNKED_SUPPORTED: frozenset[str] = frozenset(name for name in LOSSES if has_chunked_form(name))


def _prepare_cost(cost_embedding: torch.Tensor, device, acc: torch.dtype, mm: torch.dtype) -> tuple:
    """What the chunk loop reads of a cost embedding: ``(E, r)`` with E on ``device`` in ``acc``
    and r = 1/||E_v|| (V,), so cos(e_i, e_j) = <e_i, e_j> r_i r_j (as normalize_cost_embedding);
    plus, when the matmuls run in a lower dtype (autocast), Ê = diag(r) E in that dtype: as large
    as the bf16 head copy, and it saves a pass over the (chunk x V) cost rows (no per-column
    1/||E_v|| scaling after the matmul). E is used in place when its dtype and device already fit."""
    e = cost_embedding.detach().to(device=device, dtype=acc)
    inv_norm = 1.0 / torch.linalg.vector_norm(e, ord=2, dim=1).clamp_min(1e-12)
    return (e, inv_norm) if mm == acc else (e, inv_norm, (e * inv_norm.unsqueeze(1)).to(mm))


class CostEmbedding:
    """A *fixed* cost embedding (paper 4.2.1: frozen for the whole run), prepared for the chunk
    loop once per device and dtypes and reused by every later call (issue 27.8: at ZeRO 0-2 the
    table stays on the host, and the host-to-device copy, its row norms and its normalised
    low-precision copy were redone at every micro-step: a V x d copy and two V x d passes each).
    The adaptive variant (the live head weight) changes every step and is passed as a tensor."""

    def __init__(self, weight: torch.Tensor):
        self.weight = weight.detach()
        self._prepared: dict = {}

    @property
    def shape(self) -> torch.Size:
        return self.weight.shape

    def dim(self) -> int:
        return self.weight.dim()

    def prepared(self, device, acc: torch.dtype, mm: torch.dtype) -> tuple:
        key = (torch.device(device), acc, mm)
        if key not in self._prepared:
            self._prepared[key] = _prepare_cost(self.weight, key[0], acc, mm)
        return self._prepared[key]


class _Plan:
    """Everything about the call except the differentiable tensors (passed to ``apply`` as one
    opaque object, so autograd does not look into it)."""

    def __init__(self, mix, targets, positions, cost, chunk_size, kwargs, metrics, mm_dtype=None):
        self.mix = mix  # LOSSES[name].mix
        self.mm_dtype = mm_dtype  # dtype of the logits-sized matmuls (bf16 under autocast)
        self.targets = targets  # (M,) label of each real target token
        self.positions = positions  # (M,) its row in the flattened hidden states
        self.cost = cost  # (E (V, d_e) detached, 1/||E_v|| (V,)) or None
        self.chunk_size = chunk_size
        self.kwargs = kwargs
        self.metrics = metrics  # filled in by forward


def _sweep(h_flat, weight, bias, plan: _Plan, acc, weights=None, grads=None):
    """One pass over the chunks. Returns the per-token ``(mle, emo)``. With ``weights``
    (``chunk slice, mle, emo -> g_mle, g_emo``) it also accumulates the gradients into ``grads``
    (``[grad_h or None, grad_W or None, grad_b or None]``)."""
    M = plan.targets.numel()
    V = weight.shape[0]
    need_c = plan.cost is not None
    mm = plan.mm_dtype or h_flat.dtype
    # Under autocast the matmuls run in its low dtype: the head (and bias, cost embedding) is cast
    # once per pass, as autocast's linear would; softmax, EMO transport sums, loss stay in ``acc``.
    w_mm = weight if weight.dtype == mm else weight.to(mm)
    b_mm = bias if bias is None or bias.dtype == mm else bias.to(mm)
    cost = plan.cost
    ws = Workspace(min(plan.chunk_size, M), V, mm, acc, h_flat.device, need_c)
    mles, emos = [], []
    for start in range(0, M, plan.chunk_size):
        sl = slice(start, min(start + plan.chunk_size, M))
        y, pos = plan.targets[sl], plan.positions[sl]
        h = h_flat.index_select(0, pos)
        if h.dtype != mm:
            h = h.to(mm)
        t = chunk_terms(h, y, w_mm, b_mm, cost, ws)
        mles.append(t.mle)
        if t.emo is not None:
            emos.append(t.emo)
        if weights is None:
            continue
        g_mle, g_emo = weights(sl, t.mle, t.emo)
        dz = logit_grad(t, y, g_mle, g_emo)
        if dz.dtype != h.dtype:
            dz_in = ws.z[: dz.shape[0]].copy_(dz)  # what autograd would do at logits.float()
        else:
            dz_in = dz
        grad_h, grad_w, grad_b = grads
        if grad_h is not None:
            grad_h.index_copy_(0, pos, (dz_in @ w_mm).to(grad_h.dtype))
        if grad_w is not None:
            if grad_w.dtype == dz_in.dtype:
                grad_w.addmm_(dz_in.t(), h)
            else:  # bf16 partials, summed in fp32 across chunks
                grad_w.add_(dz_in.t() @ h)
        if grad_b is not None:
            grad_b.add_(dz.sum(0))
    mle = torch.cat(mles) if mles else h_flat.new_zeros(0, dtype=acc)
    emo = torch.cat(emos) if emos else (h_flat.new_zeros(0, dtype=acc) if need_c else None)
    return mle, emo


class _ChunkedObjective(torch.autograd.Function):
    """Loss and all its gradients in forward; backward only scales them by ``grad_output``."""

    @staticmethod
    def forward(ctx, h_flat, weight, bias, plan: _Plan):
        # Every dtype in here is explicit (plan.mm_dtype); autocast must not re-cast the fp32 math.
        with torch.autocast(h_flat.device.type, enabled=False):
            return _ChunkedObjective._forward(ctx, h_flat, weight, bias, plan)

    @staticmethod
    def _forward(ctx, h_flat, weight, bias, plan: _Plan):
        acc = torch.promote_types(h_flat.dtype, torch.float32)
        mix, kwargs = plan.mix, plan.kwargs
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grads = [
            torch.zeros_like(h_flat) if need_h else None,
            torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None,
            torch.zeros(bias.shape, dtype=acc, device=bias.device) if need_b else None,
        ]
        M = plan.targets.numel()
        if not (need_h or need_w or need_b):
            mle, emo = _sweep(h_flat, weight, bias, plan, acc)
        elif kwargs.get("level", "token") == "token":
            def weights(sl, mle_c, emo_c):
                return token_weights(mix, kwargs, mle_c, emo_c, (sl.stop - sl.start) / M)

            mle, emo = _sweep(h_flat, weight, bias, plan, acc, weights, grads)
        else:  # batch-level weighting: terms first, weights from the whole batch, then gradients
            mle, emo = _sweep(h_flat, weight, bias, plan, acc)
            g_mle, g_emo = token_weights(mix, kwargs, mle, emo, 1.0)
            _sweep(h_flat, weight, bias, plan, acc, lambda sl, *_: (g_mle[sl], g_emo[sl]), grads)
        mask = torch.ones_like(mle, dtype=torch.bool)
        loss, metrics = mix(mle, emo, mask, **kwargs)
        plan.metrics.update({k: float(v) for k, v in metrics.items()})
        ctx.save_for_backward(*(g if g is not None else torch.empty(0) for g in grads))
        ctx.has = (need_h, need_w, need_b)
        ctx.dtypes = (h_flat.dtype, weight.dtype, None if bias is None else bias.dtype)
        return loss.detach().to(acc)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        # Scaled in place when no cast is needed: a (V, d) copy of the head gradient is the
        # largest thing left at this point. A second backward (retain_graph=True) is refused by
        # autograd's saved-tensor version check rather than silently scaled twice.
        out = []
        for has, g, dtype in zip(ctx.has, ctx.saved_tensors, ctx.dtypes):
            if not has:
                out.append(None)
            elif g.dtype == dtype:
                out.append(g.mul_(grad_out.to(g.dtype)))
            else:
                out.append((g * grad_out.to(g.dtype)).to(dtype))
        return (*out, None)


def chunked_loss(
    name: str,
    hidden_states: torch.Tensor,
    head_weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    head_bias: torch.Tensor | None = None,
    cost_embedding: torch.Tensor | CostEmbedding | None = None,
    chunk_size: int = 1024,
    ignore_index: int = IGNORE_INDEX,
    **hparams: Any,
) -> LossOutput:
    r"""``get_loss(name, cost_embedding=..., **hparams)(hidden_states @ head_weight.T + head_bias,
    labels)`` computed ``chunk_size`` target tokens at a time.

    .. math:: \mathcal L = \frac{1}{N}\sum_t f\big(-\log p_t(y_t),\ 1 - \textstyle\sum_v p_t(v)
              \langle \hat E_{y_t}, \hat E_v\rangle\big), \quad p_t = \mathrm{softmax}(W h_t + b)

    with ``f = LOSSES[name].mix`` (Eq. 16, 17, 18), the materialised loss's own formula. Labels
    follow the HF convention (position t predicts label t+1); ignored targets are skipped
    entirely, not computed and masked.

    Shape:
        hidden_states ``(B, T, d)``, head_weight ``(V, d)``, head_bias ``(V,)``, labels ``(B, T)``,
        cost_embedding ``(V, d_e)`` (detached; ``head_weight`` itself for the adaptive variant),
        or a :class:`CostEmbedding` wrapping a fixed one (prepared once, reused every call).
        Peak extra memory ``O(chunk_size * V)`` plus the ``(B*T, d)``/``(V, d)`` gradients.
    """
    spec = get_spec(name)
    if spec.mix is None:
        raise ValueError(f"loss {name!r} has no chunked form (its LossSpec gives no mix); use the materialised loss")
    check_hparams(name, hparams)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if hidden_states.dim() != 3 or labels.shape != hidden_states.shape[:2]:
        raise ValueError(
            f"expected hidden_states (B, T, d) and labels (B, T); got {tuple(hidden_states.shape)}"
            f" and {tuple(labels.shape)}"
        )
    if head_weight.dim() != 2 or head_weight.shape[1] != hidden_states.shape[2]:
        raise ValueError(f"head_weight must be (V, d={hidden_states.shape[2]}); got {tuple(head_weight.shape)}")
    vocab = head_weight.shape[0]
    if head_bias is not None and head_bias.shape != (vocab,):
        raise ValueError(f"head_bias must be (V={vocab},); got {tuple(head_bias.shape)}")
    acc = torch.promote_types(hidden_states.dtype, torch.float32)
    cost = None
    if spec.needs_cost_embedding:
        if cost_embedding is None:
            raise ValueError(f"loss {name!r} needs a cost_embedding (V, d)")
        if cost_embedding.dim() != 2 or cost_embedding.shape[0] != vocab:
            raise ValueError(
                f"cost_embedding must be (V={vocab}, d); got {tuple(cost_embedding.shape)}"
                " (under ZeRO-3 gather the head weight first)"
            )
        mm = matmul_dtype(hidden_states) or hidden_states.dtype
        if isinstance(cost_embedding, CostEmbedding):
            cost = cost_embedding.prepared(hidden_states.device, acc, mm)
        else:
            cost = _prepare_cost(cost_embedding, hidden_states.device, acc, mm)

    B, T, d = hidden_states.shape
    shifted = torch.full_like(labels, ignore_index)
    shifted[:, :-1] = labels[:, 1:]  # HF shift: hidden state t predicts label t+1
    shifted = shifted.reshape(-1).to(hidden_states.device)
    positions = (shifted != ignore_index).nonzero().squeeze(1)
    metrics: dict[str, float] = {}
    plan = _Plan(
        spec.mix,
        shifted.index_select(0, positions),
        positions,
        cost,
        chunk_size,
        {**hyperparameters(name), **spec.pinned, **hparams},
        metrics,
        matmul_dtype(hidden_states),
    )
    loss = _ChunkedObjective.apply(hidden_states.reshape(B * T, d), head_weight, head_bias, plan)
    return LossOutput(loss, int(positions.numel()), metrics)


__all__ = ["CHUNKED_SUPPORTED", "CostEmbedding", "chunked_loss", "has_chunked_form"]
