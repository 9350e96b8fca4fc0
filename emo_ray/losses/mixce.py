"""MixCE (Zhang et al., ACL 2023), EMO paper Eq. 17."""
from __future__ import annotations

import torch

from emo_ray.losses.common import IGNORE_INDEX, LossOutput, Unit, masked_mean, mixed_output, target_nll


def mixce_mix(mle: torch.Tensor, demd: torch.Tensor | None, mask: torch.Tensor, *, gamma: float):
    r"""EMO paper Eq. 17, per token: ``(gamma + (1 - gamma) sg(p_t)) mle_t`` with ``p_t = exp(-mle_t)``.

    .. math:: \mathcal{L} = -\frac{1}{N}\sum_t \big(\gamma + (1-\gamma)\,\mathrm{sg}(p_t)\big)\log p_t

    Shape: mle, mask ``(N,)`` (see :data:`emo_ray.losses.common.Mix`)."""
    weight = gamma + (1.0 - gamma) * (-mle.detach()).exp()
    return masked_mean(weight * mle, mask), {"mle": masked_mean(mle.detach(), mask)}


def mixce_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    gamma: Unit = 0.8,
    ignore_index: int = IGNORE_INDEX,
) -> LossOutput:
    r"""MixCE, EMO paper Eq. 17 (``gamma`` is bloomberg/MixCE-acl2023's ``eta``; formula in
    :func:`mixce_mix`). ``gamma = 1`` gives MLE.

    .. math:: \mathcal{L} = -\frac{1}{N}\sum_t \big(\gamma + (1-\gamma)\,\mathrm{sg}(p_t)\big)\log p_t

    Shape:
        logits ``(B, T, V)``, labels ``(B, T)``.
    """
    mle, mask = target_nll(logits, labels, ignore_index)
    return mixed_output(mixce_mix(mle, None, mask, gamma=gamma), mask)
