"""TaiLr (Ji et al., ICLR 2023) as written in the EMO paper, and the EMO repo's `tvd` baseline.

EMO paper (arXiv 2310.04691) Eq. 16: the MLE gradient re-weighted per token by the (stopped)
weight ``p / (gamma + (1 - gamma) p)``. ``gamma = 0`` gives weight 1, i.e. MLE.
"""
from __future__ import annotations

import torch

from emo_ray.losses.common import IGNORE_INDEX, LossOutput, masked_mean, shift_and_flatten, token_logprobs


def _check_gamma(gamma: float) -> None:
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")


def tailr_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    gamma: float = 0.8,
    min_weight: float | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> LossOutput:
    r"""TaiLr, EMO paper Eq. 16.

    .. math:: \mathcal{L} = -\frac{1}{N}\sum_t \mathrm{sg}\Big(\frac{p_t}{\gamma + (1-\gamma)\,p_t}\Big)\log p_t

    ``min_weight`` clamps the weight from below, as thu-coai/TaiLr's threshold does, so that
    very unlikely targets still receive some gradient.

    Shape:
        logits ``(B, T, V)``, labels ``(B, T)``.
    """
    _check_gamma(gamma)
    flat_logits, safe_labels, mask = shift_and_flatten(logits, labels, ignore_index)
    _, logp_y = token_logprobs(flat_logits, safe_labels)
    with torch.no_grad():
        p = logp_y.exp()
        weight = p / (gamma + (1.0 - gamma) * p)
        if min_weight is not None:
            weight = weight.clamp_min(min_weight)
    nll = -logp_y
    loss = masked_mean(weight * nll, mask)
    return LossOutput(
        loss,
        int(mask.sum()),
        {"mle": float(masked_mean(nll.detach(), mask)), "tailr_weight": float(masked_mean(weight, mask))},
    )


def tvd_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    gamma: float = 0.8,
    ignore_index: int = IGNORE_INDEX,
) -> LossOutput:
    r"""The ``tvd`` baseline exactly as DRSY/EMO ``language_modeling/gpt2.py`` ran it.

    It differs from Eq. 16: ``gamma`` and ``1 - gamma`` swap places in the weight, the weight is
    clamped to [0.2, 1], and the result is mixed with MLE:

    .. math:: \mathcal{L} = \frac{1}{N}\sum_t \Big[\gamma + (1-\gamma)\,
              \mathrm{clamp}\Big(\mathrm{sg}\frac{p_t}{(1-\gamma) + \gamma p_t}, 0.2, 1\Big)\Big](-\log p_t)

    ``gamma = 1`` gives MLE. Use it to reproduce the paper's TaiLr baseline numbers.
    """
    _check_gamma(gamma)
    flat_logits, safe_labels, mask = shift_and_flatten(logits, labels, ignore_index)
    _, logp_y = token_logprobs(flat_logits, safe_labels)
    with torch.no_grad():
        p = logp_y.exp()
        weight = gamma + (1.0 - gamma) * (p / ((1.0 - gamma) + gamma * p)).clamp(0.2, 1.0)
    nll = -logp_y
    loss = masked_mean(weight * nll, mask)
    return LossOutput(loss, int(mask.sum()), {"mle": float(masked_mean(nll.detach(), mask))})
