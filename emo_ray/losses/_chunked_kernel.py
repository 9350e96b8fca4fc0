r"""One chunk of tokens through the output head: per-token terms, then the logit gradient.

For a chunk of ``n`` target tokens with hidden states ``h`` (n, d), logits ``z = h W^T + b``,
``p = softmax(z)`` (computed in fp32, or fp64 for fp64 inputs) and cost rows
``c_v = <Ê_y, Ê_v>`` (row-normalised cost embedding ``Ê``, so ``C(y, v) = 1 - c_v``):

.. math::
    \mathrm{mle}_t = \log\textstyle\sum_v e^{z_v} - z_y, \qquad
    \mathrm{emo}_t = 1 - s_t,\ \ s_t = \textstyle\sum_v p_v c_v \qquad (\text{Eq. 14})

    \frac{\partial \mathcal L}{\partial z_k} = g^{mle}_t (p_k - 1[k = y])
        - g^{emo}_t\, p_k (c_k - s_t)

where ``g`` are the per-token weights of the objective's mix (``_chunked_combine``); what the
objective does with the terms (``exclude_target`` included) is the mix's business, not this
file's. Everything of size ``n x V`` lives in a :class:`Workspace` that is allocated once per call
and reused by every chunk: peak memory is ``O(chunk * V)`` whatever the number of tokens, and the
(on CPU, page-faulting) allocation is paid once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


class Workspace:
    """The chunk-sized buffers. ``z`` holds logits in the input dtype (and the cast ``dz`` for
    the matmuls); ``p`` log-probs then probs in the accumulation dtype; ``c`` the cost rows then
    ``dz``. With fp32 inputs ``z`` is dead once ``p`` is computed, so ``c`` reuses it: EMO needs
    two ``chunk x V`` fp32 buffers, MLE-type objectives one or two."""

    def __init__(self, rows: int, vocab: int, dtype: torch.dtype, acc: torch.dtype, device, need_c: bool):
        self.z = torch.empty(rows, vocab, dtype=dtype, device=device)
        self.p = torch.empty(rows, vocab, dtype=acc, device=device)
        self.c = None
        if dtype == acc:
            self.c = self.z if need_c else None
        else:  # low-precision logits are up-cast through c, so it is always needed
            self.c = torch.empty(rows, vocab, dtype=acc, device=device)


@dataclass
class ChunkTerms:
    """Per-token terms of a chunk; ``p``/``c``/``s`` stay live for :func:`logit_grad`."""

    mle: torch.Tensor  # (n,)
    emo: torch.Tensor | None  # (n,) the raw DEMD bound 1 - s
    p: torch.Tensor  # (n, V) probabilities, view into the workspace
    c: torch.Tensor | None  # (n, V) p * c (not c: the product is what the gradient needs)
    s: torch.Tensor | None  # (n,)


def chunk_terms(
    h: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    cost: tuple[torch.Tensor, torch.Tensor] | None,
    ws: Workspace,
) -> ChunkTerms:
    """Forward of one chunk.

    ``cost = (E, 1/||E_v||)`` or ``(E, 1/||E_v||, E in the matmul dtype)``: the raw cost embedding and its inverse row norms, so that
    ``Ê = diag(r) E`` is never materialised (a ``V x d`` copy, as large as the head itself).

    Shape: h ``(n, d)``, y ``(n,)``, weight ``(V, d)``, E ``(V, d_e)``, inverse norms ``(V,)``.
    """
    n = h.shape[0]
    z = ws.z[:n]
    if bias is None:
        torch.mm(h, weight.t(), out=z)
    else:
        torch.addmm(bias, h, weight.t(), out=z)
    p = ws.p[:n]
    if z.dtype != p.dtype:
        z = ws.c[:n].copy_(z)  # the up-cast the reference does with logits.float()
    torch._log_softmax(z, -1, False, out=p)  # fused row kernel, no temporaries
    logp_y = p.gather(1, y.unsqueeze(1)).squeeze(1)
    p.exp_()
    mle = -logp_y
    if cost is None:
        return ChunkTerms(mle, None, p, None, None)
    e, inv_norm = cost[:2]
    pc = ws.c[:n]
    e_y = e.index_select(0, y).mul_(inv_norm.index_select(0, y).unsqueeze(1))  # Ê_y, (n, d_e)
    if len(cost) > 2:  # low-precision matmul (autocast): c = <Ê_y, Ê_v> in bf16 (Ê pre-normalised)
        e_hat = cost[2]
        torch.mm(e_y.to(e_hat.dtype), e_hat.t(), out=ws.z[:n])  # z (the logits) is dead by now
        torch.mul(ws.z[:n], p, out=pc)  # p_v c_v, up-cast to fp32 in the same pass
    else:
        torch.mm(e_y, e.t(), out=pc)  # <Ê_y, E_v>
        # p_v c_v with c_v = <Ê_y, E_v> / ||E_v||: s is its row sum and the gradient needs only it
        pc.mul_(p).mul_(inv_norm)
    s = pc.sum(1)
    return ChunkTerms(mle, 1.0 - s, p, pc, s)


def logit_grad(t: ChunkTerms, y: torch.Tensor, g_mle: torch.Tensor, g_emo: torch.Tensor | None) -> torch.Tensor:
    """``dL/dz`` of a chunk, in place in the workspace (``p`` or ``c`` is overwritten).

    ``g_mle (p - 1_y) - g_emo p (c - s) = (g_mle + g_emo s) p - g_emo (p c) - g_mle 1_y``.
    """
    if t.c is None or g_emo is None:
        dz = t.p.mul_(g_mle.unsqueeze(1))
    else:
        alpha = g_mle + g_emo * t.s
        dz = t.c.mul_(-g_emo.unsqueeze(1)).addcmul_(t.p, alpha.unsqueeze(1))
    dz.scatter_add_(1, y.unsqueeze(1), -g_mle.unsqueeze(1).to(dz.dtype))
    return dz
