"""TaiLr (Ji et al., ICLR 2023) as written in the EMO paper, and the EMO repo's `tvd` baseline.

EMO paper (arXiv 2310.04691) Eq. 16: the MLE gradient re-weighted per token by the (stopped)
weight ``p / (gamma + (1 - gamma) p)``. ``gamma = 0`` gives weight 1, i.e. MLE.
"""
from __future__ import annotations

import torch

from emo_ray.losses.common import (
    IGNORE_INDEX,
    LossOutput,
    OptionalUnit,
    Unit,
    masked_mean,
    mixed_output,
    target_nll,
)


def tailr_mix(mle: torch.Tensor, demd: torch.Tensor | None, mask: torch.Tensor, *, gamma: float,
              min_weight: float | None):
    r"""EMO paper Eq. 16, per token: ``sg(w_t) mle_t``, ``w_t = p_t / (gamma + (1 - gamma) p_t)``
    (``p_t = exp(-mle_t)``), clamped from below at ``min_weight`` when given.

    .. math:: \mathcal{L} = -\frac{1}{N}\sum_t \mathrm{sg}\Big(\frac{p_t}{\gamma + (1-\gamma)\,p_t}\Big)\log p_t

    Shape: mle, mask ``(N,)`` (see :data:`emo_ray.losses.common.Mix`)."""
    with torch.no_grad():
        p = (-mle).exp()
        weight = p / (gamma + (1.0 - gamma) * p)
        if min_weight is not None:
            weight = weight.clamp_min(min_weight)
    metrics = {"mle": masked_mean(mle.detach(), mask), "tailr_weight": masked_mean(weight, mask)}
    return masked_mean(weight * mle, mask), metrics


def tvd_mix(mle: torch.Tensor, demd: torch.Tensor | None, mask: torch.Tensor, *, gamma: float):
    r"""The DRSY/EMO ``tvd`` weighting, per token (``p_t = exp(-mle_t)``):

    .. math:: \Big[\gamma + (1-\gamma)\,\mathrm{clamp}\Big(\mathrm{sg}\frac{p_t}{(1-\gamma) + \gamma p_t},
              0.2, 1\Big)\Big]\,\mathrm{mle}_t

    Shape: mle, mask ``(N,)`` (see :data:`emo_ray.losses.common.Mix`)."""
    with torch.no_grad():
        p = (-mle).exp()
        weight = gamma + (1.0 - gamma) * (p / ((1.0 - gamma) + gamma * p)).clamp(0.2, 1.0)
    return masked_mean(weight * mle, mask), {"mle": masked_mean(mle.detach(), mask)}


def tailr_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    gamma: Unit = 0.8,
    min_weight: OptionalUnit = None,
    ignore_index: int = IGNORE_INDEX,
) -> LossOutput:
    r"""TaiLr, EMO paper Eq. 16 (formula in :func:`tailr_mix`).

    .. math:: \mathcal{L} = -\frac{1}{N}\sum_t \mathrm{sg}\Big(\frac{p_t}{\gamma + (1-\gamma)\,p_t}\Big)\log p_t

    ``min_weight`` clamps the weight from below, as thu-coai/TaiLr's threshold does, so that
    very unlikely targets still receive some gradient.

    Shape:
        logits ``(B, T, V)``, labels ``(B, T)``.
    """
    mle, mask = target_nll(logits, labels, ignore_index)
    return mixed_output(tailr_mix(mle, None, mask, gamma=gamma, min_weight=min_weight), mask)


def tvd_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    gamma: Unit = 0.8,
    ignore_index: int = IGNORE_INDEX,
) -> LossOutput:
    r"""The ``tvd`` baseline exactly as DRSY/EMO ``language_modeling/gpt2.py`` ran it (formula in
    :func:`tvd_mix`).

    It differs from Eq. 16: ``gamma`` and ``1 - gamma`` swap places in the weight, the weight is
    clamped to [0.2, 1], and the result is mixed with MLE:

    .. math:: \mathcal{L} = \frac{1}{N}\sum_t \Big[\gamma + (1-\gamma)\,
              \mathrm{clamp}\Big(\mathrm{sg}\frac{p_t}{(1-\gamma) + \gamma p_t}, 0.2, 1\Big)\Big](-\log p_t)

    ``gamma = 1`` gives MLE. Use it to reproduce the paper's TaiLr baseline numbers.
    """
    mle, mask = target_nll(logits, labels, ignore_index)
    return mixed_output(tvd_mix(mle, None, mask, gamma=gamma), mask)
