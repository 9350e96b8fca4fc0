"""EMO: Earth Mover distance Optimization (Ren, Wu, Zhu, ICLR 2024, arXiv 2310.04691).

The differentiable upper bound of the earth mover distance between the model distribution ``q``
and the one-hot target (paper Sec. 3.2, Eq. 11-14), with transport cost
``C(i, j) = 1 - cos(e_i, e_j)`` over rows of a cost embedding ``E`` (Sec. 3.3). With ``E``
L2-normalised row-wise the bound collapses to one inner product per token:

    DEMD_t = sum_i q_i C(i, y_t) = 1 - < E_{y_t}, q^T E >                      (Eq. 14)

It is combined with MLE by the dynamic weighting of Eq. 18. The official code ran several drifted
variants; each is a named entry of the registry (``emo_ray.losses.LOSSES``):

==============================  ==========================================================================
``emo``                         per-token mode 1: ``0.5 (mle + sg(mle/emo) emo)`` (continual_finetuning/
                                emo_llama.py ``EMOLlamaForCausalLM``; language_modeling/gpt2.py ``emo``)
``emo_capped``                  mode 1 with the ratio capped at 3.0 (emo_patch.py @54a7880, PyPI
                                ``EMOLoss`` 0.0.3 ``mode=1``)
``emo_mode2``                   per-token mode 2: ``sg(emo/mle) mle + emo`` (``EMOLlama2ForCausalLM``,
                                PyPI ``EMOLoss`` ``mode=2``)
``emo_exclude_target``          mode 1 with the target's own probability removed from ``q`` by a
                                stopped subtraction (the repo README's ``gt_q`` snippet); gradients are
                                those of ``emo``, the value is higher by ``q_y``
``emo_batch``                   Eq. 18 as the paper writes it: the ratio is taken between the
                                *batch* means of the MLE and EMO terms, not per token
``emo_mode2_exclude_target``    mode 2 with the target excluded as in ``emo_exclude_target``
                                (continual_finetuning/emo_llama.py ``EMOLlama2ForCausalLM`` @394a8e1, the
                                last commit to touch it; ``finetune_lora.sh``/``finetune_fsdp.sh`` train
                                it as ``mode=emo2``)
``emo_custom``                  no preset: ``mode``, ``level``, ``ratio_cap``, ``exclude_target`` are all
                                hyperparameters with the defaults of ``emo``, so any combination can be
                                trained (``ratio_cap`` only with ``mode=1``, see :func:`emo_option_error`)
==============================  ==========================================================================

``fixed`` (frozen copy of the pre-trained head, Sec. 4.2.1) versus ``adaptive`` (the live head) is
which tensor the caller passes as ``cost_embedding``; the loss always detaches it.
"""
from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F

from emo_ray.losses.common import (
    IGNORE_INDEX,
    Flag,
    LossOutput,
    OneOf,
    OptionalPositive,
    compute_dtype,
    masked_mean,
    mixed_output,
    shift_and_flatten,
    token_logprobs,
)

# The official code adds 1e-10 to the denominator of the dynamic weight.
RATIO_EPS = 1e-10


def normalize_cost_embedding(cost_embedding: torch.Tensor) -> torch.Tensor:
    """Row-wise L2 normalisation in at least fp32, detached: cosine similarity becomes an inner
    product. A table this function already returned is returned as it is: a fixed cost embedding
    is normalised once per run, not at every micro-step (a V x d pass, 0.6 GB for LLaMA-13B)."""
    if getattr(cost_embedding, "_emo_ray_normalized", False):
        return cost_embedding
    e = cost_embedding.detach()
    e = e.to(compute_dtype(e.dtype))
    e = e / torch.linalg.vector_norm(e, ord=2, dim=1, keepdim=True).clamp_min(1e-12)
    e._emo_ray_normalized = True
    return e


def emo_option_error(*, mode: int, ratio_cap: float | None, **_) -> str | None:
    """Why a combination of EMO options is invalid (``None`` if it is valid): each option's own
    range is declared in :func:`emo_loss`'s signature; this is the one constraint between them.
    ``ratio_cap`` caps mode 1's weight ``sg(mle/emo)``; mode 2 has no cap, so it would be ignored."""
    if mode != 1 and ratio_cap is not None:
        return f"ratio_cap caps mode 1's weight sg(mle/emo) only; got ratio_cap={ratio_cap!r} with mode={mode!r}"
    return None


def dynamic_weighting(
    mle: torch.Tensor,
    emo: torch.Tensor,
    mask: torch.Tensor,
    *,
    mode: int,
    level: str,
    ratio_cap: float | None,
) -> torch.Tensor:
    """Eq. 18: mix MLE and EMO so both contribute at the same scale.

    mode 1: ``0.5 (mle + min(sg(mle / emo), cap) emo)``
    mode 2: ``sg(emo / mle) mle + emo``
    ``level='token'`` takes the ratio per token (official code), ``'batch'`` between batch means
    (the paper's notation).
    """
    if level == "batch":
        mle, emo = masked_mean(mle, mask), masked_mean(emo, mask)
    elif level != "token":
        raise ValueError(f"level must be 'token' or 'batch', got {level!r}")
    if mode == 1:
        ratio = (mle / (emo + RATIO_EPS)).detach()
        if ratio_cap is not None:
            ratio = ratio.clamp_max(ratio_cap)
        combined = 0.5 * (mle + ratio * emo)
    elif mode == 2:
        combined = (emo / (mle + RATIO_EPS)).detach() * mle + emo
    else:
        raise ValueError(f"mode must be 1 or 2, got {mode!r}")
    return combined if level == "batch" else masked_mean(combined, mask)


def emo_mix(
    mle: torch.Tensor,
    demd: torch.Tensor,
    mask: torch.Tensor,
    *,
    mode: int,
    level: str,
    ratio_cap: float | None,
    exclude_target: bool,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    r"""Every EMO variant from its per-token terms: the DEMD bound (Eq. 14) mixed with MLE (Eq. 18).

    .. math:: \mathrm{emo}_t = \mathrm{DEMD}_t + [\text{exclude\_target}]\ \mathrm{sg}(p_t),
              \quad \mathcal L = \text{Eq. 18}(\mathrm{mle}, \mathrm{emo})
              \ \ (\text{see } \mathrm{dynamic\_weighting})

    ``exclude_target``: transporting ``q - sg(q_y 1_y)`` instead of ``q`` removes the target's own
    similarity ``q_y <Ê_y, Ê_y> = q_y`` from the inner product, so the term rises by ``sg(q_y)``
    (``q_y = p_t = exp(-mle_t)``) and its gradient is unchanged.

    Shape: mle, demd, mask ``(N,)`` (see :data:`emo_ray.losses.common.Mix`).
    """
    emo = demd + (-mle.detach()).exp() if exclude_target else demd
    loss = dynamic_weighting(mle, emo, mask, mode=mode, level=level, ratio_cap=ratio_cap)
    return loss, {"mle": masked_mean(mle.detach(), mask), "emo": masked_mean(emo.detach(), mask)}


def demd_terms(logp: torch.Tensor, safe_labels: torch.Tensor, cost_embedding: torch.Tensor) -> torch.Tensor:
    r"""Materialised Eq. 14 per token, ``(N,)``, from ``(N, V)`` log-probs:
    ``DEMD_t = 1 - <Ê_{y_t}, q_t^T Ê>`` (one inner product per token, no ``V x V`` cost matrix)."""
    e = normalize_cost_embedding(cost_embedding).to(device=logp.device, dtype=logp.dtype)
    e_y = F.embedding(safe_labels, e)  # (N, d)
    expected = logp.exp() @ e  # (N, d): q^T E
    return 1.0 - (e_y * expected).sum(-1)  # 1 - sum_v q_v cos(e_y, e_v)


def emo_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    cost_embedding: torch.Tensor,
    mode: Annotated[int, OneOf((1, 2))] = 1,
    level: Annotated[str, OneOf(("token", "batch"))] = "token",
    ratio_cap: OptionalPositive = None,
    exclude_target: Flag = False,
    ignore_index: int = IGNORE_INDEX,
) -> LossOutput:
    r"""EMO objective: DEMD upper bound (Eq. 14) mixed with MLE (Eq. 18); formula in :func:`emo_mix`.

    .. math:: \mathrm{DEMD}_t = 1 - \langle \hat E_{y_t}, \textstyle\sum_v q_v \hat E_v \rangle,
              \quad \hat E = E / \lVert E \rVert_{\text{row}}

    Args:
        cost_embedding: ``(V, d)`` rows that define the transport cost; detached here.
        mode, level, ratio_cap: see :func:`dynamic_weighting`.
        exclude_target: subtract ``sg(q_y)`` from ``q`` before the transport (repo ``gt_q``).

    Shape:
        logits ``(B, T, V)``, labels ``(B, T)``, cost_embedding ``(V, d)``.
    """
    vocab = logits.shape[-1]
    if cost_embedding.dim() != 2 or cost_embedding.shape[0] != vocab:
        raise ValueError(
            f"cost_embedding must be (V={vocab}, d); got {tuple(cost_embedding.shape)}"
            " (under ZeRO-3 gather the head weight first)"
        )
    flat_logits, safe_labels, mask = shift_and_flatten(logits, labels, ignore_index)
    logp, logp_y = token_logprobs(flat_logits, safe_labels)
    demd = demd_terms(logp, safe_labels, cost_embedding)
    mixed = emo_mix(-logp_y, demd, mask, mode=mode, level=level, ratio_cap=ratio_cap, exclude_target=exclude_target)
    return mixed_output(mixed, mask)
